"""The node runtime: calling one plan step once. Every engine and executor goes through it,
so inputs, outputs and errors behave the same everywhere (design.md, layer 3).

    calls = node_calls(plan, compile_inner=..., map_inner=..., services=Services(cache))
    calls[0](values)      # reads the step's args from `values`, writes its outputs into it
    await calls[0].acall(values)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._batch import one_row
from ._limits import limit_calls, rate_limited
from ._loop import run_coroutine
from ._retries import with_breaker, with_retries, with_timeout
from .cache import key_or_none, lineages, lookup
from .exceptions import ExecutionError, summarize_inputs, wrap_error
from .plan import NestedPlan, RunPlan, Step, check_map_inputs

Values = dict[str, Any]
RunItem = Callable[[Values], Values]
MapItems = Callable[..., Any]  # (run_item, inputs, map_over, map_mode, n_items) -> results


@dataclass(frozen=True)
class Services:
    """What node calls may use besides their inputs: the engine's cache (None: no cache)."""

    cache: Any = None


NO_SERVICES = Services()


class NodeCall:
    """Calls a plain node: build its keyword arguments, call it, store its outputs.

    With a cache, a call whose key (lineage + argument values) is stored is skipped and its
    stored result used; a new result is stored after it passed every check.
    """

    __slots__ = ("label", "func", "args", "outputs", "single", "is_async", "cache", "lineage")

    def __init__(self, step: Step, lineage: str = "", services: Services = NO_SERVICES):
        self.label = step.label
        cached = services.cache is not None and getattr(step.node, "cache", True)
        self.cache = services.cache if cached else None
        self.lineage = lineage
        self.func = step.node.func
        if getattr(step.node, "batch", False):
            self.func = one_row(self.func, step.label, len(step.outputs))
        self.func = resilient(self.func, step.node, step.is_async, bounded=True)
        self.args = step.args
        self.outputs = step.outputs
        self.single = step.outputs[0] if len(step.outputs) == 1 else None
        self.is_async = step.is_async

    def __call__(self, values: Values) -> None:
        key = self._key(values) if self.cache is not None else None
        if key is not None and self._restore(key, values):
            return
        try:
            result = self.func(**{a: values[a] for a in self.args})
            if self.is_async:
                result = run_coroutine(result)
            self._store(values, result)
        except Exception as error:
            raise self._failed(error, values) from error
        if key is not None:
            self.cache.put(key, result)

    async def acall(self, values: Values) -> None:
        """Call from a coroutine, awaiting an async node natively. (The async executor runs
        sync nodes off the loop itself, in worker threads.)"""
        key = self._key(values) if self.cache is not None else None
        if key is not None and self._restore(key, values):
            return
        try:
            result = self.func(**{a: values[a] for a in self.args})
            if self.is_async:
                result = await result
            self._store(values, result)
        except Exception as error:
            raise self._failed(error, values) from error
        if key is not None:
            self.cache.put(key, result)

    def _key(self, values: Values) -> str | None:
        return key_or_none(self.label, self.lineage, {a: values[a] for a in self.args})

    def _restore(self, key: str, values: Values) -> bool:
        found, result = lookup(self.cache, key)
        if found:
            self._store(values, result)
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
        kwargs = {a: values[a] for a in self.args if a in values}
        return wrap_error(error, self.label, summarize_inputs(kwargs))


class NestedCall:
    """Calls a nested pipeline: rename inputs in, run (or map) the inner plan, rename out."""

    __slots__ = ("label", "nested", "run_inner", "map_inner")

    def __init__(self, step: Step, run_inner: RunItem, map_inner: MapItems):
        assert step.nested is not None
        self.label = step.label
        self.nested: NestedPlan = step.nested
        self.run_inner = run_inner
        self.map_inner = map_inner

    def __call__(self, values: Values) -> None:
        inner = self._inner_inputs(values)
        try:
            if self.nested.map_over:
                self._store_mapped(values, self.map_inner(self.run_inner, inner, *self._map(inner)))
            else:
                self._store(values, self.run_inner(inner))
        except ExecutionError as error:
            raise error.located(self.label) from error.original

    async def acall(self, values: Values) -> None:
        """As `__call__`, with `run_inner` and `map_inner` compiled as coroutine functions."""
        inner = self._inner_inputs(values)
        try:
            if self.nested.map_over:
                mapped = await self.map_inner(self.run_inner, inner, *self._map(inner))
                self._store_mapped(values, mapped)
            else:
                self._store(values, await self.run_inner(inner))
        except ExecutionError as error:
            raise error.located(self.label) from error.original

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


def resilient(func: Callable[..., Any], node: Any, is_async: bool, bounded: bool) -> Any:
    """`func` with the node's timeout per attempt, its concurrency bound (when `bounded`)
    and circuit breaker around an attempt, and its retries around all (a backoff wait holds
    no slot)."""
    timeout = getattr(node, "timeout", None)
    if timeout is not None:
        func = with_timeout(func, is_async, timeout)
    limit = getattr(node, "max_concurrency", None)
    if bounded and limit is not None:
        func = limit_calls(func, is_async, limit)
    rate = getattr(node, "rate_limit", None)
    if rate is not None:
        func = rate_limited(func, is_async, rate)
    breaker = getattr(node, "breaker", None)
    if breaker is not None:
        func = with_breaker(func, is_async, breaker)
    retries = getattr(node, "retries", 0)
    if retries:
        func = with_retries(func, retries, node.backoff, node.retry_on)
    return func


def node_calls(
    plan: RunPlan,
    compile_inner: Callable[[RunPlan], RunItem],
    map_inner: MapItems,
    services: Services = NO_SERVICES,
) -> list[NodeCall | NestedCall]:
    """The runtime call of each step of `plan`; nested pipelines are compiled with
    `compile_inner` (their nodes are cached one by one, not the nested call as a whole)."""
    keys = lineages(plan.steps) if services.cache is not None else [""] * len(plan.steps)
    return [
        NodeCall(step, key, services)
        if step.nested is None
        else NestedCall(step, compile_inner(step.nested.item), map_inner)
        for step, key in zip(plan.steps, keys, strict=True)
    ]
