"""A plan's groups of steps as runners over the columns of a batch, nested pipelines too.

    runner = make_runner(group, constants, setup, keys)   # one Daft function's work
    PlanRunner(plan, constants, setup).compute(columns, n_rows)   # a whole inner plan

- `make_runner`: the runner of one group (groups.py): a node runner of runners.py, or
- `NestedInline`: a nested pipeline once per row: its inner plan over the same rows.
- `NestedMap`: a nested pipeline mapped over lists: every row's items are flattened into one
  batch (row and position kept), the inner plan runs over it, results are regrouped per row
  in order. Inner async nodes therefore await the items of all rows together.
- `run_on_driver`: a step whose inputs are all constants, run once with the node runtime.
"""

from __future__ import annotations

from typing import Any

from ...cache import lineages
from ...exceptions import ExecutionError
from ...options import SharedLimit
from ...plan import RunPlan, Step, check_map_inputs, iter_rows
from ...runtime.items import compile_run, map_items, node_calls
from ...runtime.limits import LoopSlots
from .column_call import ERROR, ColumnCall, Columns, Setup
from .groups import Group, plan_groups
from .runners import ArrowNode, AsyncNode, GroupedNode, SyncNodes


class PlanRunner:
    """A whole (inner) plan over columns. Its steps that read only constants run now; if
    one fails under on_error "skip"/"collect", every row fails with it (`failure`)."""

    def __init__(self, plan: RunPlan, constants: dict[str, Any], setup: Setup):
        self.constants = dict(constants)
        self.runners: list[Any] = []
        self.failure: ExecutionError | None = None
        keys = step_lineages(plan, setup)
        for group in plan_groups(plan, self.constants):
            if group.kind == "driver":
                outputs, failure = run_on_driver(group.steps[0], self.constants, setup)
                self.failure = self.failure or failure
                self.constants.update(outputs)
            else:
                self.runners.append(make_runner(group, self.constants, setup, keys))
        self.is_async = any(r.is_async for r in self.runners)

    def compute(self, columns: Columns, n_rows: int) -> None:
        self._fail_rows(columns, n_rows)
        for runner in self.runners:
            runner.compute(columns, n_rows)

    def _fail_rows(self, columns: Columns, n_rows: int) -> None:
        if self.failure is not None:
            errors = columns[ERROR]
            for row in range(n_rows):
                errors[row] = errors[row] or self.failure

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        self._fail_rows(columns, n_rows)
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
        # inner values known now; columns override them per row
        self.known = nested.inner_values(constants)
        varying = {i for _, i in self.renamed} | set(nested.map_over)
        fixed = {k: v for k, v in self.known.items() if k not in varying}
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
        inner = {i: columns[o] for o, i in self.renamed}
        if ERROR in columns:  # a copy: the inner plan's failures are located in `finish`
            inner[ERROR] = list(columns[ERROR])
        return inner, n_rows, []

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        for inner_name, outer in self.nested.rename_out:
            columns[outer] = self.inner.column(inner_name, inner, n_inner)
        errors = columns.get(ERROR)
        if errors is not None:
            for row, error in enumerate(inner[ERROR]):
                if error is not None and errors[row] is None:
                    errors[row] = error.located(self.label)


class NestedInline(_Nested):
    """A nested pipeline run once per row: the inner plan over the same rows."""


class NestedMap(_Nested):
    """A nested pipeline mapped over lists: every row's items flattened into one batch.
    A row fails with the first of its items that fails (rows failed upstream add none)."""

    def prepare(self, columns: Columns, n_rows: int) -> tuple[Columns, int, list[int]]:
        nested = self.nested
        errors = columns.get(ERROR)
        given = {i: columns[o] for o, i in self.renamed}
        repeated = [name for name in given if name not in nested.map_over]
        flat: Columns = {name: [] for name in [*nested.map_over, *repeated]}
        counts = []
        label = f"nested pipeline '{self.label}'"
        for row in range(n_rows):
            if errors is not None and errors[row] is not None:
                counts.append(0)
                continue
            values = {**self.known, **{name: column[row] for name, column in given.items()}}
            check_map_inputs(label, values, nested.map_over, nested.map_mode)
            items = list(iter_rows(values, nested.map_over, nested.map_mode))
            for name, column in zip(nested.map_over, zip(*items, strict=True), strict=False):
                flat[name].extend(column)
            for name in repeated:
                flat[name].extend([values[name]] * len(items))
            counts.append(len(items))
        if errors is not None:
            flat[ERROR] = [None] * sum(counts)
        return flat, sum(counts), counts

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        errors = columns.get(ERROR)
        if errors is not None:
            start = 0
            for row, count in enumerate(counts):
                inner_errors = inner[ERROR][start : start + count]
                failed = [(p, e) for p, e in enumerate(inner_errors) if e is not None]
                if failed:
                    position, error = failed[0]
                    errors[row] = error.located(self.label, position)
                start += count
        for inner_name, outer in self.nested.rename_out:
            values = self.inner.column(inner_name, inner, n_inner)
            grouped, start = [], 0
            for row, count in enumerate(counts):
                failed = errors is not None and errors[row] is not None
                grouped.append(None if failed else values[start : start + count])
                start += count
            columns[outer] = grouped


def step_lineages(plan: RunPlan, setup: Setup) -> dict[int, str]:
    """Each step's lineage (its cache key's first part), by step id; empty: no cache."""
    if setup.services.cache is None:
        return {}
    return {id(s): key for s, key in zip(plan.steps, lineages(plan.steps), strict=True)}


def make_runner(group: Group, constants: dict[str, Any], setup: Setup, keys: dict[int, str]) -> Any:
    """The runner for a group of steps (not "driver": those run at planning time)."""
    step = group.steps[0]
    if group.kind in ("nested", "map"):
        kind = NestedInline if group.kind == "nested" else NestedMap
        return kind(step, constants, setup)
    bound, cluster = _bounds(step, setup)
    lineage = keys.get(id(step), "")
    if group.kind == "grouped":  # its async bound counts grouped calls, taken per attempt
        slots = LoopSlots(bound) if step.is_async else None
        call = ColumnCall(step, constants, setup, lineage, cluster or slots)
        assert step.options.batch_size is not None
        return GroupedNode(call, step.options.batch_size, step.is_async)
    if group.kind == "async":
        slots = LoopSlots(bound)
        per_attempt = bool(step.options.retries)
        limit = cluster or (slots if per_attempt else None)
        return AsyncNode(ColumnCall(step, constants, setup, lineage, limit), slots, per_attempt)
    calls = [
        ColumnCall(s, constants, setup, keys.get(id(s), ""), _bounds(s, setup)[1])
        for s in group.steps
    ]
    if group.kind == "sync":
        return SyncNodes(calls)
    return ArrowNode(calls[0])


def _bounds(step: Step, setup: Setup) -> tuple[int, SharedLimit | None]:
    """A node's calls in flight per process (its own bound, else the engine's), and its
    ClusterLimit if it has one (then the process bound is the engine's; the cluster's
    slots are taken per call)."""
    bound = step.options.max_concurrency
    if isinstance(bound, SharedLimit):
        return setup.limit, bound
    return bound or setup.limit, None


def run_on_driver(
    step: Step, constants: dict[str, Any], setup: Setup, within: tuple[str, ...] = ()
) -> tuple[dict[str, Any], ExecutionError | None]:
    """Run a step whose inputs are all constants, once, with the node runtime's sequential
    run (its node hooks fire; it is not an item of its own): its outputs, and None. If it
    fails under on_error "skip"/"collect", every row fails with it: its outputs are None
    and its error (located in the nested steps `within`) is returned; otherwise raised."""
    plan = RunPlan(step.label, (step,), ((0,),), step.args, step.outputs)
    (call,) = node_calls(plan, compile_run, map_items, setup.services)
    values = {a: constants[a] for a in step.args}
    try:
        call(values)
    except ExecutionError as failure:
        error = failure.located(*within) if within else failure
        if not setup.tolerant or error.on_error == "raise":
            raise error from failure.original
        return dict.fromkeys(step.outputs), error
    return {name: values[name] for name in step.outputs}, None
