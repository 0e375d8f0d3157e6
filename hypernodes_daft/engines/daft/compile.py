"""A plan -> a lazy Daft DataFrame.

    frame = build(frame, plan, names, setup)        # names: value name -> column or Const

`build` asks `groups.plan_groups` how to split the plan's steps, then, per group: runs
"driver" steps now (their outputs become constants), inlines "nested" pipelines (their
steps become columns here, prefixed with the step's name, so they fuse and batch like
top-level ones), and adds one Daft function per other group: one column, or a struct that
is unnested into one column per output. Only outputs that a later step or the caller
needs become columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import daft
from daft import DataType, col

from ...plan import RunPlan, Step
from ...results import ErrorRecord
from .column_call import ERROR, Setup
from .groups import Group, plan_groups
from .native import SAMPLE_ROWS, Natives, plan_natives
from .plan_runner import make_runner, run_on_driver, step_lineages
from .runners import ArrowNode
from .types import ERROR_TYPE, PYTHON, arrow_type, output_types
from .udfs import daft_call


@dataclass(frozen=True)
class Const:
    """A value bound into the Daft functions rather than stored in a column."""

    value: Any


Names = dict[str, Any]  # value name -> column name (str) or Const


def build(
    frame: daft.DataFrame,
    plan: RunPlan,
    names: Names,
    setup: Setup,
    prefix: str = "",
    within: tuple[str, ...] = (),
    sample: daft.DataFrame | None = None,
) -> daft.DataFrame:
    """Add the columns of `plan`'s outputs to `frame`; `names` gains where each output is.
    `within`: the labels of the nested steps `plan` is inlined for (errors name them);
    `sample`: where to read the first rows that native nodes are checked on (default
    `frame`)."""
    constants = {name: ref.value for name, ref in names.items() if isinstance(ref, Const)}
    top = not within  # nested pipelines' nodes stay in Python (their columns are prefixed)
    natives = None
    if setup.native and top:
        natives = _natives(frame if sample is None else sample, plan, names, constants, setup)
    groups = plan_groups(plan, constants, natives.expressions if natives else ())
    keys = step_lineages(plan, setup)
    for index, group in enumerate(groups):
        needed = set(plan.outputs).union(*(s.args for g in groups[index + 1 :] for s in g.steps))
        if natives is not None and group.kind == "sync":
            group.why_python = natives.why_python(group.steps)
        if group.kind == "native":
            assert natives is not None
            frame = _add_native(frame, group, names, natives, setup)
        elif group.kind == "driver":
            frame = _run_on_driver(frame, group.steps[0], names, setup, within)
        elif group.kind == "nested":
            step = group.steps[0]
            inner_prefix = f"{prefix}{step.label}#{index}."
            frame = _inline_nested(frame, step, names, setup, inner_prefix, within)
        else:
            frame = _add_function(frame, group, names, needed, setup, prefix, keys)
    return frame


def _run_on_driver(
    frame: daft.DataFrame, step: Step, names: Names, setup: Setup, within: tuple[str, ...]
) -> daft.DataFrame:
    """Run a step that reads only constants, now; its outputs become constants. If it fails
    under on_error "skip"/"collect", every row fails with it (as on the local engines)."""
    known = {a: names[a].value for a in step.args}
    outputs, failure = run_on_driver(step, known, setup, within)
    if failure is not None:
        record = daft.lit(ErrorRecord.of(failure).as_row()).cast(ERROR_TYPE)
        frame = frame.with_column(ERROR, daft.functions.coalesce(col(ERROR), record))
    names.update({k: Const(v) for k, v in outputs.items()})
    return frame


def value_types(step: Step) -> dict[str, DataType]:
    """The Daft type of each output of `step`, from the return hints of its node(s)."""
    if step.nested is None:
        listed = step.options.batch_size is not None
        hinted = output_types(step.node.func, len(step.outputs), listed)
        return dict(zip(step.outputs, hinted, strict=True))
    inner = {name: t for s in step.nested.item.steps for name, t in value_types(s).items()}
    types = {}
    for inner_name, outer in step.nested.rename_out:
        dtype = inner.get(inner_name, PYTHON)
        mapped = step.nested.map_over and dtype != PYTHON
        types[outer] = (
            DataType.list(dtype) if mapped else (PYTHON if step.nested.map_over else dtype)
        )
    return types


def constant_column(value: Any, rows: daft.Expression) -> daft.Expression:
    """A constant as a column as long as `rows`: a literal when Arrow can hold it."""
    dtype = arrow_type(type(value))
    if dtype != PYTHON:
        return daft.lit(value)

    @daft.func.batch(return_dtype=PYTHON, use_process=False)
    def repeat(rows: daft.Series) -> daft.Series:
        return daft.Series.from_pylist([value] * len(rows), dtype=PYTHON)

    return repeat(rows)


def _natives(
    frame: daft.DataFrame, plan: RunPlan, names: Names, constants: dict[str, Any], setup: Setup
) -> Natives:
    """Which of the plan's nodes run as Daft expressions, checked on the frame's first rows."""
    schema = frame.schema()
    sources = {
        name: (column, schema[column].dtype)
        for name, column in names.items()
        if isinstance(column, str) and column in frame.column_names
    }

    def sample() -> dict[str, list[Any]]:
        columns = list(dict.fromkeys(column for column, _ in sources.values()))
        return frame.select(*columns).limit(SAMPLE_ROWS).to_pydict()

    cached = setup.services.cache is not None
    return plan_natives(plan, sources, sample, constants, value_types, cached)


def _add_native(
    frame: daft.DataFrame, group: Group, names: Names, natives: Natives, setup: Setup
) -> daft.DataFrame:
    """The group's nodes as columns computed by their expressions: one projection. Rows
    that failed earlier (under on_error "skip"/"collect") get null, as in Python."""
    computed = {}
    for step in group.steps:
        (output,) = step.outputs
        expression = natives.expressions[step.label]  # over the frame's own columns
        if setup.tolerant:
            expression = daft.functions.when(col(ERROR).is_null(), expression).otherwise(None)
        computed[output] = expression
        names[output] = output
    frame = frame.with_columns(computed)
    if setup.report is not None:  # the callbacks hear of each batch, as from a function
        frame = _reported(frame, group, setup.report)
    return frame


def _reported(frame: daft.DataFrame, group: Group, report: Any) -> daft.DataFrame:
    """`frame` whose last native column passes through a function that reports, per
    batch, a call of each of the group's nodes per row."""
    labels = [s.label for s in group.steps]
    column = group.steps[-1].outputs[0]

    def count(values: daft.Series) -> daft.Series:
        for label in labels:
            report.record(label, len(values), 0.0, 0, 0, 0)
        return values

    dtype = frame.schema()[column].dtype
    counted = daft.func.batch(return_dtype=dtype, use_process=False)(count)
    return frame.with_column(column, counted(col(column)))


def _inline_nested(
    frame: daft.DataFrame,
    step: Step,
    names: Names,
    setup: Setup,
    prefix: str,
    within: tuple[str, ...],
) -> daft.DataFrame:
    nested = step.nested
    assert nested is not None
    inner: Names = nested.inner_values(names, bound_as=Const)
    frame = build(frame, nested.item, inner, setup, prefix, (*within, step.label))
    names.update({outer: inner[inner_name] for inner_name, outer in nested.rename_out})
    return frame


def _add_function(
    frame: daft.DataFrame,
    group: Group,
    names: Names,
    needed: set[str],
    setup: Setup,
    prefix: str,
    keys: dict[int, str],
) -> daft.DataFrame:
    produced = {o for s in group.steps for o in s.outputs}
    reads = list(dict.fromkeys(a for s in group.steps for a in s.args if a not in produced))
    columns = tuple(a for a in reads if not isinstance(names[a], Const))
    constants = {a: names[a].value for a in reads if isinstance(names[a], Const)}
    if group.placement is not None and setup.cluster is not None:
        setup.cluster.check(group.placement)  # before anything runs
        frame = setup.cluster.stage(frame)
    runner = make_runner(group, constants, setup, keys)
    types = {name: t for s in group.steps for name, t in value_types(s).items()}
    if isinstance(runner, ArrowNode) and PYTHON in types.values():
        schema = frame.schema()
        types = _probe_batch(runner, {a: schema[names[a]].dtype for a in columns}, types)
    outputs = [(o, f"{prefix}{o}", types[o]) for s in group.steps for o in s.outputs if o in needed]
    if not outputs:
        return frame
    for name, column, _ in outputs:
        names[name] = column
    arguments = [col(names[a]) for a in columns]
    if setup.tolerant:  # the failures so far in, this function's added out
        columns, arguments = (*columns, ERROR), [*arguments, col(ERROR)]
        outputs = [*outputs, (ERROR, ERROR, ERROR_TYPE)]
    expr = daft_call(runner, group, columns, outputs, setup, arguments)
    if len(outputs) == 1:
        return frame.with_column(outputs[0][1], expr)
    kept = [col(c) for c in frame.column_names if c != ERROR]  # the function returns it anew
    return frame.select(*kept, expr)


def _probe_batch(
    runner: ArrowNode, inputs: dict[str, DataType], types: dict[str, DataType]
) -> dict[str, DataType]:
    """The Arrow types of an unhinted batch node's outputs, from a call on zero rows."""
    import pyarrow as pa

    try:
        arrays = {a: pa.array([], type=t.to_arrow_dtype()) for a, t in inputs.items()}
        parts = runner(arrays, 0)
    except Exception:  # the node cannot run on zero rows (or takes Python objects)
        return types
    probed = dict(types)
    for name, part in zip(runner.call.outputs, parts, strict=True):
        arrow = getattr(part, "type", None)
        if probed[name] == PYTHON and isinstance(arrow, pa.DataType):
            probed[name] = DataType.from_arrow_type(arrow)
    return probed
