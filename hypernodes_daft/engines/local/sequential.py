"""The sequential executor: one node after another, one item after another."""

from __future__ import annotations

from ...plan import MapPlan, RunPlan
from ...runtime import NO_SERVICES, RunItem, Services, Values, item_runner, node_calls
from .streaming import stream_items


def compile_run(plan: RunPlan, services: Services = NO_SERVICES) -> RunItem:
    """A function that runs `plan` on a dict of values (which it fills) and returns outputs.

    Everything that does not depend on the values is done here, once per plan.
    """
    calls = node_calls(plan, compile_run, map_items, services)
    outputs = plan.outputs

    def run(values: Values) -> Values:
        for call in calls:
            call(values)
        return {name: values[name] for name in outputs}

    return item_runner(run, services.events, services.top)


def map_items(
    run_item: RunItem, inputs: Values, map_over: tuple[str, ...], map_mode: str, n_items: int = 0
) -> list[Values]:
    """Run every item in order; an error names the item it happened on."""
    return [outputs for _, outputs in stream_items(run_item, inputs, map_over, map_mode)]


class SequentialExecutor:
    """Runs plans in the calling thread. Async nodes run on the process's one background
    event loop, never on a new loop per call."""

    def run(self, plan: RunPlan, inputs: Values) -> Values:
        return compile_run(plan)(dict(inputs))

    def map(self, plan: MapPlan, inputs: Values) -> list[Values]:
        return map_items(compile_run(plan.item), inputs, plan.map_over, plan.map_mode)

    def __repr__(self) -> str:
        return "SequentialExecutor()"
