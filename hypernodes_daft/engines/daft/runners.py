"""Plan steps run column-wise over the rows of one batch, as Python lists.

A runner reads its arguments by name from `columns` (a dict of equal-length lists) or from
its constants, and writes its outputs into `columns`:

    runner = make_runner(group, constants, Setup(limit=100), keys={})
    runner.compute(columns, n_rows)            # or: await runner.acompute(columns, n_rows)

- `SyncNodes`: each node runs as `map(func, *columns)`: no per-row dict, no per-row Daft call.
- `AsyncNode`: the rows awaited together on the running event loop, at most `limit` at once.
- `BatchNode`: a `@node(batch=True)` node, called once with Arrow arrays.
- `NestedInline`: a nested pipeline once per row: its inner plan over the same rows.
- `NestedMap`: a nested pipeline mapped over lists: every row's items are flattened into one
  batch (row and position kept), the inner plan runs over it, results are regrouped per row
  in order. Inner async nodes therefore await the items of all rows together.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._batch import as_argument, as_values
from ..._limits import LoopSlots
from ...cache import key_or_none, lineages, lookup
from ...context import node_context
from ...exceptions import ExecutionError, summarize_inputs, wrap_error
from ...plan import RunPlan, Step, check_map_inputs
from ...runtime import NO_SERVICES, Services, node_calls, resilient
from ..local.sequential import compile_run, map_items
from .groups import Group, plan_groups

Columns = dict[str, Any]  # name -> list of values, one per row


class _Call:
    """One plain node over columns."""

    def __init__(
        self,
        step: Step,
        constants: dict[str, Any],
        setup: Setup,
        lineage: str,
        slots: LoopSlots | None = None,
    ):
        services = setup.services
        self.label = step.label
        self.report = setup.report
        self.args = step.args
        self.outputs = step.outputs
        self.constants = constants
        cached = services.cache is not None and getattr(step.node, "cache", True)
        self.cache = services.cache if cached else None
        self.lineage = lineage
        # the async bound is the AsyncNode's (per batch), unless `slots` bound each attempt
        func = resilient(step.node.func, step.node, step.is_async, slots)
        positional = step.args == tuple(step.node.root_args[: len(step.args)])
        self.func: Callable[..., Any] = func if positional else _by_name(func, step.args)

    def scope(self) -> Any:
        """Entered around the node's calls of a batch (async: the tasks copy it)."""
        return node_context(self.label)

    def reported(self, rows: int, cached: int, started: float) -> None:
        """Tell the driver's callbacks about a batch of this node's calls (if any listen)."""
        if self.report is not None:
            self.report.record(self.label, rows, time.perf_counter() - started, cached)

    def arguments(self, columns: Columns, n_rows: int) -> list[Any]:
        constants = self.constants
        return [
            columns[a] if a in columns else itertools.repeat(constants[a], n_rows)
            for a in self.args
        ]

    def row_arguments(self, columns: Columns, row: int) -> dict[str, Any]:
        """One row's arguments by name."""
        return {a: columns[a][row] if a in columns else self.constants[a] for a in self.args}

    def failed(self, error: Exception, row: int, columns: Columns) -> ExecutionError:
        inputs = summarize_inputs(self.row_arguments(columns, row))
        return wrap_error(error, self.label, inputs)

    def cached(self, columns: Columns, n_rows: int) -> tuple[list[Any], list[Any], list[int]]:
        """Per row: the stored result or None, the key, and the rows still to compute."""
        results: list[Any] = [None] * n_rows
        keys: list[Any] = [None] * n_rows
        missing = []
        for row in range(n_rows):
            arguments = {
                a: columns[a][row] if a in columns else self.constants[a] for a in self.args
            }
            keys[row] = key_or_none(self.label, self.lineage, arguments)
            found = False
            if keys[row] is not None:
                found, results[row] = lookup(self.cache, keys[row])
            if not found:
                missing.append(row)
        return results, keys, missing

    def subset(self, columns: Columns, rows: list[int]) -> Columns:
        return {a: [columns[a][row] for row in rows] for a in self.args if a in columns}

    def complete(
        self,
        columns: Columns,
        results: list[Any],
        keys: list[Any],
        missing: list[int],
        computed: list[Any],
    ) -> None:
        """Merge the computed rows into the cached ones, store the outputs, then cache the
        new results (only after they passed the output checks)."""
        for row, result in zip(missing, computed, strict=True):
            results[row] = result
        self.store(columns, results)
        for row, result in zip(missing, computed, strict=True):
            if keys[row] is not None:
                self.cache.put(keys[row], result)

    def store(self, columns: Columns, results: list[Any]) -> None:
        if len(self.outputs) == 1:
            columns[self.outputs[0]] = results
            return
        width = len(self.outputs)
        for row, result in enumerate(results):
            if not isinstance(result, (tuple, list)) or len(result) != width:
                got = f"{len(result)} values" if isinstance(result, (tuple, list)) else repr(result)
                error = ValueError(
                    f"node declares {width} outputs {self.outputs} but returned {got}"
                )
                raise self.failed(error, row, columns) from error
        for name, values in zip(self.outputs, zip(*results, strict=True), strict=True):
            columns[name] = list(values)


class SyncNodes:
    """Consecutive sync nodes, each over whole columns."""

    is_async = False

    def __init__(self, calls: list[_Call]):
        self.calls = calls

    def compute(self, columns: Columns, n_rows: int) -> None:
        for call in self.calls:
            started = time.perf_counter()
            if call.cache is None:
                call.store(columns, self._rows(call, columns, n_rows))
                call.reported(n_rows, 0, started)
                continue
            results, keys, missing = call.cached(columns, n_rows)
            computed = self._rows(call, call.subset(columns, missing), len(missing))
            call.complete(columns, results, keys, missing, computed)
            call.reported(len(missing), n_rows - len(missing), started)

    @staticmethod
    def _rows(call: _Call, columns: Columns, n_rows: int) -> list[Any]:
        results: list[Any] = []
        try:  # extend keeps what was computed, so len(results) is the failing row
            with call.scope():
                results.extend(map(call.func, *call.arguments(columns, n_rows)))
        except Exception as error:
            raise call.failed(error, len(results), columns) from error
        return results


class AsyncNode:
    """One async node: every row awaited together, at most `slots.limit` in flight at once
    in this process (Daft runs a worker's async batches on one event loop, concurrently).

    A batch that fits takes its slots at once. A node with retries takes a slot per
    attempt instead (`per_attempt`, inside its call), so a backoff wait holds none.
    """

    is_async = True

    def __init__(self, call: _Call, slots: LoopSlots, per_attempt: bool):
        self.call = call
        self.limit = slots.limit
        self._slots = slots
        self.per_attempt = per_attempt

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        started = time.perf_counter()
        if call.cache is None:
            call.store(columns, await self._rows(columns, n_rows))
            call.reported(n_rows, 0, started)
            return
        results, keys, missing = call.cached(columns, n_rows)
        computed = await self._rows(call.subset(columns, missing), len(missing))
        call.complete(columns, results, keys, missing, computed)
        call.reported(len(missing), n_rows - len(missing), started)

    async def _rows(self, columns: Columns, n_rows: int) -> list[Any]:
        with self.call.scope():  # entered before the tasks exist: each copies the context
            results = await self._gathered(columns, n_rows)
        for row, result in enumerate(results):
            if isinstance(result, Exception):
                raise self.call.failed(result, row, columns) from result
            if isinstance(result, BaseException):
                raise result
        return results

    async def _gathered(self, columns: Columns, n_rows: int) -> list[Any]:
        func = self.call.func
        slots = self._slots.here()
        rows = self.call.arguments(columns, n_rows)
        if self.per_attempt:
            return await asyncio.gather(*map(func, *rows), return_exceptions=True)
        if slots.take(n_rows):  # the whole batch fits: no per-row wrapper
            try:
                return await asyncio.gather(*map(func, *rows), return_exceptions=True)
            finally:
                slots.give(n_rows)

        async def bounded(*row: Any) -> Any:
            await slots.wait()
            try:
                return await func(*row)
            finally:
                slots.give(1)

        return await asyncio.gather(*map(bounded, *rows), return_exceptions=True)


class BatchNode:
    """One `@node(batch=True)` node, called once per batch with Arrow arrays."""

    is_async = False

    def __init__(self, call: _Call):
        self.call = call

    def __call__(self, arrays: dict[str, Any], n_rows: int) -> list[Any]:
        """The node's result per output, as returned (Arrow arrays, lists, numpy)."""
        kwargs = {
            a: arrays[a] if a in arrays else as_argument(self.call.constants[a], n_rows)
            for a in self.call.args
        }
        try:
            with self.call.scope():
                result = self.call.func(**kwargs)
            return [result] if len(self.call.outputs) == 1 else list(result)
        except Exception as error:
            summary = summarize_inputs({a: f"<{n_rows} rows>" for a in arrays})
            raise wrap_error(error, self.call.label, summary) from error

    def compute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        started = time.perf_counter()
        if call.cache is None:
            columns.update(self._rows(columns, n_rows))
            call.reported(n_rows, 0, started)
            return
        results, keys, missing = call.cached(columns, n_rows)
        computed = self._rows(call.subset(columns, missing), len(missing))
        rows = list(zip(*(computed[name] for name in call.outputs), strict=True))
        fresh = [row[0] for row in rows] if len(call.outputs) == 1 else rows
        call.complete(columns, results, keys, missing, fresh)
        call.reported(len(missing), n_rows - len(missing), started)

    def _rows(self, columns: Columns, n_rows: int) -> Columns:
        arrays = {a: _array(columns[a]) for a in self.call.args if a in columns}
        parts = self(arrays, n_rows)
        try:
            return {
                name: as_values(part, n_rows, self.call.label)
                for name, part in zip(self.call.outputs, parts, strict=True)
            }
        except Exception as error:
            raise wrap_error(error, self.call.label) from error


class PlanRunner:
    """A whole (inner) plan over columns."""

    def __init__(self, plan: RunPlan, constants: dict[str, Any], setup: Setup):
        self.constants = dict(constants)
        self.runners: list[Any] = []
        keys = setup.lineages(plan)
        for group in plan_groups(plan, set(self.constants)):
            if group.kind == "driver":
                outputs = run_on_driver(group.steps[0], self.constants, setup.services)
                self.constants.update(outputs)
            else:
                self.runners.append(make_runner(group, self.constants, setup, keys))
        self.is_async = any(r.is_async for r in self.runners)

    def compute(self, columns: Columns, n_rows: int) -> None:
        for runner in self.runners:
            runner.compute(columns, n_rows)

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        for runner in self.runners:
            if runner.is_async:
                await runner.acompute(columns, n_rows)
            else:
                runner.compute(columns, n_rows)

    def column(self, name: str, columns: Columns, n_rows: int) -> list[Any]:
        """An output's values, also when it is a constant."""
        return columns[name] if name in columns else [self.constants[name]] * n_rows


class _Nested:
    """A nested pipeline: outer columns renamed in, the inner plan, outputs renamed out."""

    def __init__(self, step: Step, constants: dict[str, Any], setup: Setup):
        nested = step.nested
        assert nested is not None
        self.label = step.label
        self.nested = nested
        self.renamed = [(o, i) for o, i in nested.rename_in if o not in constants]
        known = dict(nested.bound)  # inner values known now; columns override them per row
        known.update({i: constants[o] for o, i in nested.rename_in if o in constants})
        varying = {i for _, i in self.renamed} | set(nested.map_over)
        self.known = known
        fixed = {k: v for k, v in known.items() if k not in varying}
        self.inner = PlanRunner(nested.item, fixed, setup)
        self.is_async = self.inner.is_async

    def compute(self, columns: Columns, n_rows: int) -> None:
        inner, n_inner, counts = self.prepare(columns, n_rows)
        try:
            self.inner.compute(inner, n_inner)
        except ExecutionError as error:
            raise error.located(self.label) from error.original
        self.finish(columns, inner, n_inner, counts)

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        inner, n_inner, counts = self.prepare(columns, n_rows)
        try:
            await self.inner.acompute(inner, n_inner)
        except ExecutionError as error:
            raise error.located(self.label) from error.original
        self.finish(columns, inner, n_inner, counts)

    def prepare(self, columns: Columns, n_rows: int) -> tuple[Columns, int, list[int]]:
        """The inner plan's columns, their length, and how many inner rows each row has."""
        return {i: columns[o] for o, i in self.renamed}, n_rows, []

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        for inner_name, outer in self.nested.rename_out:
            columns[outer] = self.inner.column(inner_name, inner, n_inner)


class NestedInline(_Nested):
    """A nested pipeline run once per row: the inner plan over the same rows."""


class NestedMap(_Nested):
    """A nested pipeline mapped over lists: every row's items flattened into one batch."""

    def prepare(self, columns: Columns, n_rows: int) -> tuple[Columns, int, list[int]]:
        nested = self.nested
        given = {i: columns[o] for o, i in self.renamed}
        repeated = [name for name in given if name not in nested.map_over]
        flat: Columns = {name: [] for name in [*nested.map_over, *repeated]}
        counts = []
        label = f"nested pipeline '{self.label}'"
        for row in range(n_rows):
            values = {**self.known, **{name: column[row] for name, column in given.items()}}
            check_map_inputs(label, values, nested.map_over, nested.map_mode)
            lists = [values[name] for name in nested.map_over]
            items = list(
                zip(*lists, strict=True) if nested.map_mode == "zip" else itertools.product(*lists)
            )
            for name, column in zip(nested.map_over, zip(*items, strict=True), strict=False):
                flat[name].extend(column)
            for name in repeated:
                flat[name].extend(itertools.repeat(values[name], len(items)))
            counts.append(len(items))
        return flat, sum(counts), counts

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        for inner_name, outer in self.nested.rename_out:
            values = self.inner.column(inner_name, inner, n_inner)
            grouped, start = [], 0
            for count in counts:
                grouped.append(values[start : start + count])
                start += count
            columns[outer] = grouped


@dataclass(frozen=True)
class Setup:
    """What building runners needs from the engine."""

    limit: int = 100  # async calls in flight per node, unless the node sets its own
    services: Services = NO_SERVICES  # with the driver's events: driver steps fire hooks
    in_process: bool = True  # the native runner: Daft functions run in this process
    report: Any = None  # where batches are reported for the callbacks (reporting.py)

    def lineages(self, plan: RunPlan) -> dict[int, str]:
        """Each step's lineage (its cache key's first part), by step id; empty: no cache."""
        if self.services.cache is None:
            return {}
        return {id(s): key for s, key in zip(plan.steps, lineages(plan.steps), strict=True)}


def make_runner(group: Group, constants: dict[str, Any], setup: Setup, keys: dict[int, str]) -> Any:
    """The runner for a group of steps (not "driver": those run at planning time)."""
    step = group.steps[0]
    if group.kind in ("nested", "map"):
        kind = NestedInline if group.kind == "nested" else NestedMap
        return kind(step, constants, setup)
    if group.kind == "async":
        slots = LoopSlots(getattr(step.node, "max_concurrency", None) or setup.limit)
        per_attempt = bool(getattr(step.node, "retries", 0))
        call = _Call(step, constants, setup, keys.get(id(step), ""), slots if per_attempt else None)
        return AsyncNode(call, slots, per_attempt)
    calls = [_Call(s, constants, setup, keys.get(id(s), "")) for s in group.steps]
    if group.kind == "sync":
        return SyncNodes(calls)
    return BatchNode(calls[0])


def run_on_driver(step: Step, constants: dict[str, Any], services: Services) -> dict[str, Any]:
    """Run a step whose inputs are all constants, once, with the local node runtime (its
    node hooks fire; it is not an item of its own)."""
    plan = RunPlan(step.label, (step,), ((0,),), step.args, step.outputs)
    (call,) = node_calls(plan, compile_run, map_items, services)
    values = {a: constants[a] for a in step.args}
    call(values)
    return {name: values[name] for name in step.outputs}


def _array(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values  # Python objects Arrow cannot hold: the list itself


def _by_name(func: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`func` called with keyword arguments from positional ones (keyword-only parameters,
    or arguments that skip a defaulted parameter)."""

    def call(*values: Any) -> Any:
        return func(**dict(zip(names, values, strict=True)))

    return call
