"""The node runtime: calling one plan step once. Every engine and executor goes through it,
so inputs, outputs and errors behave the same everywhere (design.md, layer 3).

    calls = node_calls(plan, compile_inner=..., map_inner=..., services=Services(cache))
    calls[0](values)      # reads the step's args from `values`, writes its outputs into it
    await calls[0].acall(values)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ._batch import one_row
from ._batching import batcher_for
from ._events import Events
from ._limits import limit_calls, rate_limited
from ._loop import run_coroutine
from ._retries import with_breaker, with_retries, with_timeout
from .cache import InFlight, key_or_none, lineages, lookup
from .context import NodeContext, item_frame, node_frame
from .exceptions import ExecutionError, summarize_inputs, wrap_error
from .plan import NestedPlan, RunPlan, Step, check_map_inputs
from .results import failed_outputs, policy

Values = dict[str, Any]
RunItem = Callable[..., Values]  # (values, index=None) -> outputs: see item_runner
MapItems = Callable[..., Any]  # (run_item, inputs, map_over, map_mode, n_items) -> results


@dataclass(frozen=True)
class Services:
    """What node calls use besides their inputs: the engine's cache (None: no cache), the
    callbacks of this execution (None: none), the path of the pipeline being run (empty:
    the pipeline called, not a nested one), the run's on_error, for the nodes that do
    not set their own, and whether items of a map run at once in this process
    (`concurrent_items`: then `batch_size` nodes wait up to `batch_delay` for calls to
    group; otherwise, items running one after another, each call goes at once)."""

    cache: Any = None
    events: Events | None = None
    path: tuple[str, ...] = ()
    on_error: str = "raise"
    concurrent_items: bool = False

    @property
    def top(self) -> bool:
        """The services of the pipeline called: its items settle failures (`settled`)."""
        return not self.path

    def nested(self, step: Step) -> Services:
        """The services of a nested step's inner pipeline."""
        assert step.nested is not None
        events = self.events.child(step.label) if self.events else None
        return replace(self, events=events, path=(*self.path, step.label))


NO_SERVICES = Services()


class NodeCall:
    """Calls a plain node: build its keyword arguments, call it, store its outputs.

    With a cache, a call whose key (lineage + argument values) is stored is skipped and its
    stored result used; a new result is stored after it passed every check. An identical
    call already running (same key, another item) is waited for, not made again.
    """

    __slots__ = (
        *("label", "func", "args", "outputs", "single", "is_async", "cache", "lineage"),
        *("events", "observed", "context", "on_error", "inflight"),
    )

    def __init__(self, step: Step, lineage: str = "", services: Services = NO_SERVICES):
        self.label = step.label
        self.events = services.events
        self.context = NodeContext(step.label, services.path)
        cached = services.cache is not None and getattr(step.node, "cache", True)
        self.cache = services.cache if cached else None
        self.inflight = InFlight()
        self.observed = self.cache is not None or self.events is not None  # else: just call
        self.on_error = policy(step.node, services.on_error)
        self.lineage = lineage
        self.func = step.node.func
        if getattr(step.node, "batch", False):
            self.func = one_row(self.func, step.label, len(step.outputs))
        limit = getattr(step.node, "max_concurrency", None)
        per_item = batcher_for(step.node, step.label, step.is_async, services.concurrent_items)
        events, label = self.events, step.label
        on_retry = None if events is None else (lambda: events.node_retry(label))
        self.func = resilient(self.func, step.node, step.is_async, limit, per_item, on_retry)
        self.args = step.args
        self.outputs = step.outputs
        self.single = step.outputs[0] if len(step.outputs) == 1 else None
        self.is_async = step.is_async

    def __call__(self, values: Values) -> None:
        # current_node() finds this frame on the stack (context.node_frame): nothing to set
        key = None  # set while this call computes `key` for the identical calls waiting
        try:
            started = 0.0
            if self.observed:
                found = self._key(values) if self.cache is not None else None
                if found is not None:
                    if self._restore(found, values):
                        return
                    running = self.inflight.join(found)
                    if running is not None:
                        return self._shared(values, found, running.result)
                    key = found
                started = self._started(values)
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = run_coroutine(result)
                self._store(values, result)
            except Exception as error:
                self._finish(key, error=error)
                raise self._failed(error, values) from error
            if self.observed:
                self._finished(result, started, key)
        finally:
            self._finish(key, error=_ABANDONED)  # interrupted: the waiting calls go on

    async def acall(self, values: Values) -> None:
        """Call from a coroutine, awaiting an async node natively. (The async executor runs
        sync nodes off the loop itself, in worker threads.)"""
        key = None
        try:
            started = 0.0
            if self.observed:
                found = self._key(values) if self.cache is not None else None
                if found is not None:
                    if self._restore(found, values):
                        return
                    running = self.inflight.join(found)
                    if running is not None:
                        shared = asyncio.wrap_future(running)
                        await asyncio.wait([shared])  # done or failed: `result()` tells
                        return self._shared(values, found, shared.result)
                    key = found
                started = self._started(values)
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = await result
                self._store(values, result)
            except Exception as error:
                self._finish(key, error=error)
                raise self._failed(error, values) from error
            if self.observed:
                self._finished(result, started, key)
        finally:
            self._finish(key, error=_ABANDONED)

    def _started(self, values: Values) -> float:
        return 0.0 if self.events is None else self.events.node_start(self.label, self.args, values)

    def _finished(self, result: Any, started: float, key: str | None) -> None:
        """After a call passed the output checks: node_end, store it in the cache, hand it
        to the identical calls waiting."""
        if self.events is not None:
            name = self.single if self.single is not None else self.outputs
            self.events.node_end(self.label, {name: result}, started)
        if key is not None:
            self.cache.put(key, result)
            self._finish(key, result)

    def _finish(self, key: str | None, result: Any = None, error: Any = None) -> None:
        if key is not None:
            self.inflight.finish(key, result, error)

    def _shared(self, values: Values, key: str, outcome: Callable[[], Any]) -> None:
        """This call's result from the identical call that ran meanwhile: a cache hit for
        the callbacks; its failure is this item's failure too."""
        try:
            self._store(values, outcome())
        except Exception as error:
            raise self._failed(error, values) from error
        if self.events is not None:
            self.events.node_cached(self.label, key)

    def _key(self, values: Values) -> str | None:
        return key_or_none(self.label, self.lineage, self._arguments(values))

    def _arguments(self, values: Values) -> Values:
        # a method, not a comprehension in the call: a comprehension would make `values` a
        # closure cell of the (async) call's frame, an object per call held while it waits
        return {a: values[a] for a in self.args}

    def _restore(self, key: str, values: Values) -> bool:
        found, result = lookup(self.cache, key)
        if found:
            self._store(values, result)
            if self.events is not None:
                self.events.node_cached(self.label, key)
        return found

    def _store(self, values: Values, result: Any) -> None:
        if self.single is not None:
            values[self.single] = result
            return
        outputs = self.outputs
        if not isinstance(result, (tuple, list)) or len(result) != len(outputs):
            got = f"{len(result)} values" if isinstance(result, (tuple, list)) else repr(result)
            raise ValueError(f"node declares {len(outputs)} outputs {outputs} but returned {got}")
        values.update(zip(outputs, result, strict=False))

    def _failed(self, error: Exception, values: Values) -> ExecutionError:
        # the arguments are rebuilt here, not kept during the call: a dict per call alive
        # across an await costs garbage-collector time on large async maps
        if self.events is not None:
            self.events.node_error(self.label, error)
        kwargs = {a: values[a] for a in self.args if a in values}
        return wrap_error(error, self.label, summarize_inputs(kwargs), None, self.on_error)


node_frame(NodeCall.__call__)
node_frame(NodeCall.acall)


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
        inner = self._inner_inputs(values)
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
        inner = self._inner_inputs(values)
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

    def _inner_inputs(self, values: Values) -> Values:
        inner = dict(self.nested.bound)
        for outer, inner_name in self.nested.rename_in:
            inner[inner_name] = values[outer]
        return inner

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


_ABANDONED = RuntimeError("an identical call of this node was interrupted before it finished")


def may_settle(plan: RunPlan, on_error: str) -> bool:
    """Whether a node of `plan` (nested ones included) may fail without raising, given
    the run's `on_error`."""
    for step in plan.steps:
        if step.nested is not None:
            if may_settle(step.nested.item, on_error):
                return True
        elif policy(step.node, on_error) != "raise":
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


def resilient(
    func: Callable[..., Any],
    node: Any,
    is_async: bool,
    limit: Any = None,
    per_item: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """`func` with, around each attempt, the node's timeout, circuit breaker (checked once
    the call holds its slot and its rate-limit turn, so calls queued before a circuit
    opened do not reach a dead service), concurrency bound (`limit`: a number, a shared
    LoopSlots, or None) and rate limit; and its retries around all (a backoff wait holds
    no slot). `per_item` (a `batch_size` node called per item: `_batching.batcher_for`)
    turns the list function, so wrapped, into a function of one item; `on_retry()` is
    called before each retry."""
    timeout = getattr(node, "timeout", None)
    if timeout is not None:
        func = with_timeout(func, is_async, timeout)
    breaker = getattr(node, "breaker", None)
    if breaker is not None:
        func = with_breaker(func, is_async, breaker)
    if limit is not None:
        func = limit_calls(func, is_async, limit)
    rate = getattr(node, "rate_limit", None)
    if rate is not None:
        func = rate_limited(func, is_async, rate)
    if per_item is not None:
        # one grouped request is one attempt: under the timeout, the breaker (one failure),
        # the concurrency bound (max_concurrency counts grouped calls in flight) and the
        # rate limit (requests a second). Retries stay per item, outside: a failed item
        # joins a later group rather than re-sending the whole group it failed with.
        func = per_item(func)
    retries = getattr(node, "retries", 0)
    if retries:
        func = with_retries(func, retries, node.backoff, node.retry_on, on_retry)
    return func


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
