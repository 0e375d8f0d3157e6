"""Running the steps of a plan for one item: the calls of its steps (`node_calls`), nested
pipelines (`NestedCall`), item runners with their hooks and failure settling, and the
sequential run, which every engine uses for the steps it runs in this thread.

    run = compile_run(plan, services)   # (values, index=None) -> outputs
    results = map_items(run, inputs, map_over, map_mode)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

from ..cache import lineages
from ..exceptions import ExecutionError
from ..plan import NestedPlan, RunPlan, Step, check_map_inputs
from ..results import failed_outputs
from .context import item_frame
from .events import Events
from .item_order import Priority, start_order
from .node_call import NO_SERVICES, NodeCall, Services, Values

RunItem = Callable[..., Values]  # (values, index=None) -> outputs: see item_runner
MapItems = Callable[..., Any]  # (run_item, inputs, map_over, map_mode, n_items) -> results


class NestedCall:
    """Calls a nested pipeline: rename inputs in, run (or map) the inner plan, rename out.

    With callbacks, fires 0.4's sequence: node_start, nested_pipeline_start, the inner run
    or map (on the inner pipeline's own context), nested_pipeline_end, node_end.
    """

    __slots__ = ("label", "nested", "run_inner", "map_inner", "events", "inner_events")

    def __init__(self, step: Step, run_inner: RunItem, map_inner: MapItems, services: Services):
        assert step.nested is not None
        self.label = step.label
        self.nested: NestedPlan = step.nested
        self.run_inner = run_inner
        self.map_inner = map_inner
        self.events = services.events
        self.inner_events = services.nested(step).events

    def __call__(self, values: Values) -> None:
        inner = self.nested.inner_values(values)
        started = self._started(values)
        try:
            if self.nested.map_over:
                self._store_mapped(values, self._map_inner(inner))
            else:
                self._store(values, self.run_inner(inner))
        except ExecutionError as error:
            raise self._failed(error) from error.original
        self._finished(values, started)

    async def acall(self, values: Values) -> None:
        """As `__call__`, with `run_inner` and `map_inner` compiled as coroutine functions."""
        inner = self.nested.inner_values(values)
        started = self._started(values)
        try:
            if self.nested.map_over:
                self._store_mapped(values, await self._amap_inner(inner))
            else:
                self._store(values, await self.run_inner(inner))
        except ExecutionError as error:
            raise self._failed(error) from error.original
        self._finished(values, started)

    def _map_inner(self, inner: Values) -> list[Values]:
        spec = self._map(inner)
        if self.inner_events is None:
            return self.map_inner(self.run_inner, inner, *spec)
        started = self.inner_events.map_start(spec[-1])
        results = self.map_inner(self.run_inner, inner, *spec)
        self.inner_events.map_end(started)
        return results

    async def _amap_inner(self, inner: Values) -> list[Values]:
        spec = self._map(inner)
        if self.inner_events is None:
            return await self.map_inner(self.run_inner, inner, *spec)
        started = self.inner_events.map_start(spec[-1])
        results = await self.map_inner(self.run_inner, inner, *spec)
        self.inner_events.map_end(started)
        return results

    def _started(self, values: Values) -> float:
        events = self.events
        if events is None:
            return 0.0
        started = events.node_start(self.label, tuple(o for o, _ in self.nested.rename_in), values)
        events.nested("on_nested_pipeline_start", self.inner_events)
        return started

    def _finished(self, values: Values, started: float) -> None:
        events = self.events
        if events is not None:
            duration = time.perf_counter() - started
            events.nested("on_nested_pipeline_end", self.inner_events, duration)
            outputs = {outer: values[outer] for _, outer in self.nested.rename_out}
            events.node_end(self.label, outputs, started)

    def _failed(self, error: ExecutionError) -> ExecutionError:
        if self.events is not None:
            self.events.node_error(self.label, error.original)
        return error.located(self.label)

    def _map(self, inner: Values) -> tuple[tuple[str, ...], str, int]:
        """Check the inner map's inputs; the map arguments after `run_inner` and `inputs`."""
        nested = self.nested
        label = f"nested pipeline '{self.label}'"
        n_items = check_map_inputs(label, inner, nested.map_over, nested.map_mode)
        return nested.map_over, nested.map_mode, n_items

    def _store(self, values: Values, result: Values) -> None:
        for inner_name, outer in self.nested.rename_out:
            values[outer] = result[inner_name]

    def _store_mapped(self, values: Values, results: list[Values]) -> None:
        for inner_name, outer in self.nested.rename_out:
            values[outer] = [r[inner_name] for r in results]


def item_runner(
    run: Callable[[Values], Values], events: Events | None, settles: bool = False
) -> RunItem:
    """`run` as an item runner, `(values, index=None) -> outputs`: map executors pass the
    item's index, which nodes see in `current_node()`; with callbacks, the item's hooks
    fire around it (0.4: map_item_start, pipeline_start, nodes, pipeline_end,
    map_item_end; no end hook after an error). With `settles` (the pipeline called, not a
    nested one), a failure under on_error "skip"/"collect" becomes the item's result."""

    def indexed(values: Values, index: int | None = None) -> Values:
        started = 0.0 if events is None else events.item_start(index, values)
        try:
            outputs = run(values)
        except ExecutionError as error:
            outputs = settled(error, index, settles)
        if events is not None:
            events.item_end(index, outputs, started)
        return outputs

    item_frame(indexed)  # its `index` is what current_item() reads
    return indexed


def settled(error: ExecutionError, index: int | None, settles: bool) -> Values:
    """The result of an item that failed: its error record under on_error "skip" or
    "collect" (where failures settle); otherwise `error` is raised on."""
    if not settles or error.on_error == "raise":
        raise error
    return failed_outputs(error, index)


def may_settle(plan: RunPlan, on_error: str) -> bool:
    """Whether a node of `plan` (nested ones included) may fail without raising, given
    the run's `on_error`."""
    for step in plan.steps:
        if step.nested is not None:
            if may_settle(step.nested.item, on_error):
                return True
        elif (step.options.on_error or on_error) != "raise":
            return True
    return False


def aitem_runner(
    arun: Callable[..., Awaitable[Values]], events: Events
) -> Callable[..., Awaitable[Values]]:
    """`item_runner` for the async executor's item coroutine `arun(values, index)` (which
    settles failures itself), with callbacks."""

    async def indexed(values: Values, index: int | None = None) -> Values:
        started = events.item_start(index, values)
        outputs = await arun(values, index)
        events.item_end(index, outputs, started)
        return outputs

    item_frame(indexed)
    return indexed


def node_calls(
    plan: RunPlan,
    compile_inner: Callable[[RunPlan, Services], RunItem],
    map_inner: MapItems,
    services: Services = NO_SERVICES,
) -> list[NodeCall | NestedCall]:
    """The runtime call of each step of `plan`; nested pipelines are compiled with
    `compile_inner(inner plan, inner services)` (their nodes are cached one by one, not the
    nested call as a whole)."""
    if not services.path:
        services = replace(services, path=(plan.name,))
    keys = lineages(plan.steps) if services.cache is not None else [""] * len(plan.steps)
    return [
        NodeCall(step, key, services)
        if step.nested is None
        else NestedCall(
            step, compile_inner(step.nested.item, services.nested(step)), map_inner, services
        )
        for step, key in zip(plan.steps, keys, strict=True)
    ]


def compile_run(plan: RunPlan, services: Services = NO_SERVICES) -> RunItem:
    """A function that runs `plan` on a dict of values (which it fills) and returns outputs,
    one step after another in this thread. Everything that does not depend on the values
    is done here, once per plan."""
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
    """Run every item in order; an error names the item it happened on (the map of a
    nested pipeline: its items inherit the outer item's priority)."""
    return [outputs for _, outputs in stream_items(run_item, inputs, map_over, map_mode)]


def collected(stream: Iterator[tuple[int, Values]], n_items: int) -> list[Values]:
    """A map's results in item order from its `(index, outputs)` stream."""
    results: list[Any] = [None] * n_items
    for index, outputs in stream:
        results[index] = outputs
    return results


def stream_items(
    run_item: RunItem,
    inputs: Values,
    map_over: tuple[str, ...],
    map_mode: str,
    priority: Priority = None,
) -> Iterator[tuple[int, Values]]:
    """One item after another, in order (by `priority` when given), as `(index, outputs)`."""
    items, run_item = start_order(run_item, inputs, map_over, map_mode, priority)
    for index, item in items:
        try:  # inline: this loop is the sequential map's hot path
            outputs = run_item(item, index)
        except ExecutionError as error:
            raise error.located(index) from error.original
        yield index, outputs
