"""The threaded executors: independent nodes of one item run together (by topological
generations), and map items run on a thread pool."""

from __future__ import annotations

import contextvars
from concurrent.futures import Executor, wait
from typing import Any

from ...plan import RunPlan
from ...runtime.context import current_item, run_in_branch
from ...runtime.item_order import Priority
from ...runtime.items import RunItem, item_runner, map_items, node_calls
from ...runtime.node_call import NO_SERVICES, Services, Values
from .streaming import stream_threaded


def compile_threaded(plan: RunPlan, pool: Executor, services: Services = NO_SERVICES) -> RunItem:
    """Like `compile_run`, but the nodes of one generation run concurrently on `pool`."""
    calls = node_calls(plan, lambda p, s: compile_threaded(p, pool, s), map_items, services)
    levels = [[calls[i] for i in level] for level in plan.generations]
    outputs = plan.outputs

    def run(values: Values) -> Values:
        for level in levels:
            if len(level) == 1:
                level[0](values)
                continue
            # each in a copy of this context, told the item: nodes see their item
            item = current_item()
            futures = [
                pool.submit(contextvars.copy_context().run, run_in_branch, item, call, values)
                for call in level
            ]
            wait(futures)
            for future in futures:  # in plan order, so the reported error is deterministic
                future.result()
        return {name: values[name] for name in outputs}

    return item_runner(run, services.events, services.top)


def map_threaded(
    pool: Executor,
    run_item: RunItem,
    inputs: Values,
    map_over: tuple[str, ...],
    map_mode: str,
    window: int,
    n_items: int,
    priority: Priority = None,
) -> list[Values]:
    """Run the items on `pool`, at most `window` in flight (a future per item in flight,
    not per item: a million items would hold a million futures); results in input order,
    an error names its item."""
    results: list[Any] = [None] * n_items
    streamed = stream_threaded(pool, run_item, inputs, map_over, map_mode, window, priority)
    for index, outputs in streamed:
        results[index] = outputs
    return results
