"""A plan -> a lazy Daft DataFrame.

`plan_groups` is pure: it splits a plan's steps into the Daft functions that will run them
(`print(*plan_groups(plan, constants), sep="\\n")` shows the grouping). `build` adds one
column (or one unnested struct) per group to a DataFrame:

    frame = build(frame, plan, names, settings)     # names: value name -> Column or Const

- "driver": a step that reads only constants runs once here, on the driver, with the local
  node runtime; its outputs become constants. No work per row that can be done once.
- "sync": consecutive sync nodes, fused into one batch function (see udfs.SyncGroup).
- "async", "batch": one async / `batch=True` node per function.
- "nested": a nested pipeline run once per row is inlined: its steps become columns here
  (prefixed with the step's name), so its nodes fuse and batch like top-level ones.
- "rows": a nested pipeline mapped over a list, run row by row with the local runtime.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import daft
from daft import DataType, col

from ...exceptions import PlanningError
from ...plan import RunPlan, Step
from ..local.sequential import compile_run
from .types import PYTHON, arrow_type, output_types
from .udfs import AsyncStep, BatchStep, RowStep, SyncGroup


@dataclass(frozen=True)
class Const:
    """A value bound into the Daft functions rather than stored in a column."""

    value: Any


Names = dict[str, Any]  # value name -> column name (str) or Const


@dataclass(frozen=True)
class Settings:
    """What compiling needs from the engine."""

    max_concurrency: int = 100
    in_process: bool = True  # the native runner: Daft functions run in this process


@dataclass
class Group:
    """Steps that one Daft function (or the driver) runs."""

    kind: str  # "driver" | "sync" | "async" | "batch" | "nested" | "rows"
    steps: list[Step] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind}: {', '.join(s.label for s in self.steps)}"


def plan_groups(plan: RunPlan, constants: set[str]) -> list[Group]:
    """The steps of `plan` grouped by how they run, given which values are constants."""
    groups: list[Group] = []
    known = set(constants)
    for step in plan.steps:
        kind = _kind(step, known)
        if kind == "driver":
            known.update(step.outputs)
        if kind == "sync" and groups and groups[-1].kind == "sync":
            groups[-1].steps.append(step)
        else:
            groups.append(Group(kind, [step]))
    return groups


def _kind(step: Step, constants: set[str]) -> str:
    if all(a in constants for a in step.args):
        return "driver"
    if step.nested is not None:
        return "rows" if step.nested.map_over else "nested"
    if step.is_async:
        return "async"
    return "batch" if getattr(step.node, "batch", False) else "sync"


def build(
    frame: daft.DataFrame, plan: RunPlan, names: Names, settings: Settings, prefix: str = ""
) -> daft.DataFrame:
    """Add the columns of `plan`'s outputs to `frame`; `names` gains where each output is."""
    constants = {name for name, ref in names.items() if isinstance(ref, Const)}
    groups = plan_groups(plan, constants)
    for index, group in enumerate(groups):
        needed = set(plan.outputs).union(*(s.args for g in groups[index + 1 :] for s in g.steps))
        if group.kind == "driver":
            _run_on_driver(group.steps[0], names)
        elif group.kind == "nested":
            step = group.steps[0]
            inner_prefix = f"{prefix}{step.label}#{index}."
            frame = _inline_nested(frame, step, names, settings, inner_prefix)
        else:
            frame = _add_function(frame, group, names, needed, settings, prefix)
    return frame


def value_types(step: Step) -> dict[str, DataType]:
    """The Daft type of each output of `step`, from the return hints of its node(s)."""
    if step.nested is None:
        return dict(zip(step.outputs, output_types(step.node.func, len(step.outputs)), strict=True))
    inner = {name: t for s in step.nested.item.steps for name, t in value_types(s).items()}
    types = {}
    for inner_name, outer in step.nested.rename_out:
        dtype = inner.get(inner_name, PYTHON)
        mapped = step.nested.map_over and dtype != PYTHON
        types[outer] = (
            DataType.list(dtype) if mapped else (PYTHON if step.nested.map_over else dtype)
        )
    return types


def constant_column(value: Any) -> daft.Expression:
    """A constant as a column expression: a literal when Arrow can hold it."""
    dtype = arrow_type(type(value))
    if dtype != PYTHON:
        return daft.lit(value)

    @daft.func.batch(return_dtype=PYTHON, use_process=False)
    def repeat(rows: daft.Series) -> list[Any]:
        return [value] * len(rows)

    return repeat(col(_ROW))


_ROW = "__hypernodes_row"  # the one column of a `run`'s single-row frame


def _run_on_driver(step: Step, names: Names) -> None:
    plan = RunPlan(step.label, (step,), ((0,),), step.args, step.outputs)
    outputs = compile_run(plan)({a: names[a].value for a in step.args})
    names.update({name: Const(value) for name, value in outputs.items()})


def _inline_nested(
    frame: daft.DataFrame, step: Step, names: Names, settings: Settings, prefix: str
) -> daft.DataFrame:
    nested = step.nested
    assert nested is not None
    inner: Names = {name: Const(value) for name, value in nested.bound.items()}
    inner.update({inner_name: names[outer] for outer, inner_name in nested.rename_in})
    frame = build(frame, nested.item, inner, settings, prefix)
    names.update({outer: inner[inner_name] for inner_name, outer in nested.rename_out})
    return frame


def _add_function(
    frame: daft.DataFrame,
    group: Group,
    names: Names,
    needed: set[str],
    settings: Settings,
    prefix: str,
) -> daft.DataFrame:
    produced = {o for s in group.steps for o in s.outputs}
    reads = list(dict.fromkeys(a for s in group.steps for a in s.args if a not in produced))
    columns = tuple(a for a in reads if not isinstance(names[a], Const))
    constants = {a: names[a].value for a in reads if isinstance(names[a], Const)}
    types = {name: t for s in group.steps for name, t in value_types(s).items()}
    outputs = [(o, f"{prefix}{o}", types[o]) for s in group.steps for o in s.outputs if o in needed]
    if not outputs:
        return frame
    shared = (columns, constants, outputs)
    step = group.steps[0]
    runner: Any
    if group.kind == "sync":
        runner = SyncGroup(group.steps, *shared)
    elif group.kind == "async":
        limit = getattr(step.node, "max_concurrency", None) or settings.max_concurrency
        runner = AsyncStep(step, limit, *shared)
    elif group.kind == "batch":
        runner = BatchStep(step, *shared)
    else:
        runner = RowStep(step, *shared)
    label = "+".join(s.label for s in group.steps)
    function = _daft_function(_portable(runner, label, settings), label, group.kind == "async")
    expr = function(*(col(names[a]) for a in columns))
    for name, column, _ in outputs:
        names[name] = column
    if len(outputs) == 1:
        return frame.with_column(outputs[0][1], expr)
    return frame.select(*(col(c) for c in frame.column_names), expr)


def _daft_function(runner: Any, label: str, is_async: bool) -> Any:
    """`runner` as a Daft batch function named after its nodes (what `explain()` shows)."""
    outputs = runner.outputs
    if len(outputs) == 1:
        dtype, unnest = outputs[0][2], False
    else:
        dtype, unnest = DataType.struct({column: t for _, column, t in outputs}), True

    if is_async:

        async def function(*series: daft.Series) -> Any:
            return await runner(*series)
    else:

        def function(*series: daft.Series) -> Any:
            return runner(*series)

    function.__name__ = function.__qualname__ = label
    function.__module__ = "hypernodes"
    return daft.func.batch(return_dtype=dtype, unnest=unnest, use_process=False)(function)


_in_process: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


class _InProcess:
    """Stands in for a runner that cannot be pickled (it closes over a lock, a client...).

    On the native runner Daft functions run in this process, so the runner is found again
    by id; Daft only checks that what it holds can be pickled.
    """

    def __init__(self, runner: Any):
        self.runner = runner
        self.outputs = runner.outputs
        _in_process[id(runner)] = runner

    def __call__(self, *series: Any) -> Any:
        return self.runner(*series)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_find_in_process, (id(self.runner),))


def _find_in_process(key: int) -> Any:
    return _InProcess(_in_process[key])


def _portable(runner: Any, label: str, settings: Settings) -> Any:
    try:
        cloudpickle.dumps(runner)
        return runner
    except Exception as error:
        if settings.in_process:
            return _InProcess(runner)
        raise PlanningError(
            f"node(s) '{label}' cannot be sent to Daft workers: pickling the function or a "
            f"constant input failed ({type(error).__name__}: {error}). Create such objects "
            "inside the node, or wrap them in a @stateful class"
        ) from error
