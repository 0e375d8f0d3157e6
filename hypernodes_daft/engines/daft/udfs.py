"""Runners (runners.py, plan_runner.py) as Daft batch functions: Series in, one column (or a
struct) out.

    outputs = [("tokens", "tokens", DataType.list(DataType.string()))]
    expr = daft_call(runner, group, ("text",), outputs, setup, [col("text")])
    # group.label: "clean+tokenize"
    frame = frame.with_column("tokens", expr)

The Daft function is named after its nodes and what they ask for (`embed[gpus=1]`), so
`explain()` shows one UDF per group. A group that asks for resources gets them from Daft
(placement.py); one whose `@stateful` model wants `replicas=R` runs as a Daft class UDF of
R instances on Ray (R actors, each with its own model), and on the native runner as R
concurrent batches, each with its own instance (`ReplicaSlots`).
"""

from __future__ import annotations

import time
import weakref
from contextlib import nullcontext
from typing import Any

import daft
from daft import DataType

from ...exceptions import ExecutionError, PlanningError, wrap_error
from ...results import ErrorRecord
from ...runtime.arrow_calls import BatchLengthError, as_values, check_length
from ...stateful import ReplicaSlots
from .column_call import ERROR, Columns, Setup
from .groups import Group
from .placement import udf_options
from .runners import ArrowNode
from .types import PYTHON, to_column

Output = tuple[str, str, DataType]  # (value name, column name, Daft type)

# Rows per call of a replicated group on the native runner: small enough that every
# replica gets batches of a partition, large enough that a call's overhead is nothing.
REPLICA_BATCH = 128


class SeriesFunction:
    """Calls a runner on one batch: Series -> Python lists -> runner -> output column(s)."""

    def __init__(
        self,
        runner: Any,
        inputs: tuple[str, ...],
        outputs: list[Output],
        producers: dict[str, str],
        slots: ReplicaSlots | None = None,
    ):
        self.runner = runner
        self.slots = slots  # each batch on its own replica of the group's models
        self.inputs = inputs
        self.outputs = outputs
        self.producers = producers  # output name -> label of the node that returns it
        self.is_async = runner.is_async
        # a single typed batch node keeps its Arrow result: no detour through Python
        self.arrow_only = (
            isinstance(runner, ArrowNode)
            and ERROR not in inputs  # failures are kept per row
            and runner.call.node.cache is None  # a cache works row by row
            and len(runner.call.outputs) == 1
            and outputs[0][2] != PYTHON
        )

    def __call__(self, *series: daft.Series) -> Any:
        with self.slots.held() if self.slots else nullcontext():
            if self.arrow_only:
                return self._arrow(series)
            columns, n_rows = self._columns(series)
            self.runner.compute(columns, n_rows)
            return self._result(columns)

    async def acall(self, *series: daft.Series) -> Any:
        async with self.slots.aheld() if self.slots else nullcontext():
            columns, n_rows = self._columns(series)
            await self.runner.acompute(columns, n_rows)
            return self._result(columns)

    @staticmethod
    def _records(errors: list[Any]) -> list[Any]:
        """The failures of this batch as record values (earlier ones already are)."""
        return [ErrorRecord.of(e).as_row() if isinstance(e, ExecutionError) else e for e in errors]

    def _columns(self, series: tuple[daft.Series, ...]) -> tuple[Columns, int]:
        columns = {name: s.to_pylist() for name, s in zip(self.inputs, series, strict=True)}
        return columns, len(series[0])

    def _arrow(self, series: tuple[daft.Series, ...]) -> Any:
        arrays = {
            name: s.to_pylist() if s.datatype() == PYTHON else s.to_arrow()
            for name, s in zip(self.inputs, series, strict=True)
        }
        n_rows = len(series[0])
        started = time.perf_counter()
        (result,) = self.runner(arrays, n_rows)
        self.runner.call.reported_rows(n_rows, 0, started)
        label = self.runner.call.label
        if not _is_arrow(result):
            return self._result({self.outputs[0][0]: _values(result, n_rows, label)})
        try:
            check_length(len(result), n_rows, label)
        except BatchLengthError as error:
            raise wrap_error(error, label) from error
        wanted = self.outputs[0][2].to_arrow_dtype()
        return result if result.type == wanted else result.cast(wanted)

    def _result(self, columns: Columns) -> Any:
        """The outputs as one column, or as a struct named by their column names."""
        if ERROR in columns:
            columns[ERROR] = self._records(columns[ERROR])
        if len(self.outputs) == 1:
            name, _, dtype = self.outputs[0]
            return self._column(columns, name, dtype)
        struct = DataType.struct({column: dtype for _, column, dtype in self.outputs})
        if PYTHON not in (dtype for _, _, dtype in self.outputs):
            import pyarrow as pa

            arrays = [self._column(columns, name, dtype) for name, _, dtype in self.outputs]
            return pa.StructArray.from_arrays(arrays, names=[c for _, c, _ in self.outputs])
        names = [column for _, column, _ in self.outputs]
        rows = zip(*(columns[name] for name, _, _ in self.outputs), strict=True)
        return daft.Series.from_pylist(
            [dict(zip(names, r, strict=True)) for r in rows], dtype=struct
        )

    def _column(self, columns: Columns, name: str, dtype: DataType) -> Any:
        try:
            return to_column(columns[name], dtype)
        except Exception as error:  # pyarrow names the value that did not fit
            mismatch = TypeError(
                f"output '{name}' does not match its return type hint ({dtype}): {error}"
            )
            raise wrap_error(mismatch, self.producers.get(name, name)) from error


def daft_call(
    runner: Any,
    group: Group,
    inputs: tuple[str, ...],
    outputs: list[Output],
    setup: Setup,
    arguments: list[daft.Expression],
) -> daft.Expression:
    """`runner` applied to `arguments` as a Daft batch function (several outputs come back
    as a struct). Daft pickles every function it is given, to check it can travel; one that
    cannot runs through `_InProcess` on the native runner, and is refused on Ray."""
    producers = {o: s.label for s in group.steps for o in s.outputs}
    in_process = setup.in_process
    # on Ray each replica is an actor of its own, with one slot; here, `replicas` slots
    slots = ReplicaSlots(group.replicas if in_process else 1) if group.replicas else None
    call = SeriesFunction(runner, inputs, outputs, producers, slots)
    options = udf_options(group, setup.cluster)
    try:
        return _daft_function(call, group, outputs, options)(*arguments)
    except ValueError as error:
        if "serializable" not in str(error):
            raise
        if in_process:
            return _daft_function(_InProcess(call), group, outputs, options)(*arguments)
        reason = error.__cause__ or error
        raise PlanningError(
            f"node(s) '{group.label}' cannot be sent to Daft workers: pickling the function or "
            f"a constant input failed ({type(reason).__name__}: {reason}). Create such objects "
            "inside the node, or wrap them in a @stateful class"
        ) from reason


def _daft_function(call: Any, group: Group, outputs: list[Output], options: dict[str, Any]) -> Any:
    """`call` as a Daft batch function (or, given `max_concurrency`, a class UDF) named
    after its nodes and their requests (what `explain()` shows), asking for `options`."""
    if len(outputs) == 1:
        dtype, unnest = outputs[0][2], False
    else:
        dtype, unnest = DataType.struct({column: t for _, column, t in outputs}), True
    label = group.label + group.needs + group.why_python
    if "max_concurrency" in options:
        replica = _replica_class(call, label, dtype, unnest)
        return daft.cls(name_override=label, **options)(replica)(call)
    # not for async functions: Daft 0.7.26 returns the batches of an async function with a
    # batch_size out of order (rows stay whole, the frame's order does not)
    batch_size = REPLICA_BATCH if group.replicas and not call.is_async else None
    function = _function(call, label)
    return daft.func.batch(
        return_dtype=dtype, unnest=unnest, use_process=False, batch_size=batch_size, **options
    )(function)


def _function(call: Any, label: str) -> Any:
    if call.is_async:

        async def function(*series: daft.Series) -> Any:
            return await call.acall(*series)
    else:

        def function(*series: daft.Series) -> Any:
            return call(*series)

    function.__name__ = function.__qualname__ = label
    function.__module__ = "hypernodes"
    return function


def _replica_class(call: Any, label: str, dtype: DataType, unnest: bool) -> type:
    """A class whose instances (Ray actors) each run the group's function; for a group with
    replicas, each holds one replica of its models."""
    method = daft.method.batch(return_dtype=dtype, unnest=unnest)
    if call.is_async:

        class Replica:
            def __init__(self, call: Any):
                self.call = call

            @method
            async def __call__(self, *series: daft.Series) -> Any:
                return await self.call.acall(*series)
    else:

        class Replica:  # type: ignore[no-redef]
            def __init__(self, call: Any):
                self.call = call

            @method
            def __call__(self, *series: daft.Series) -> Any:
                return self.call(*series)

    Replica.__name__ = Replica.__qualname__ = label
    return Replica


_in_process: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


class _InProcess:
    """Stands in for a function that cannot be pickled (it closes over a lock, a client...).

    On the native runner Daft functions run in this process, so the function is found again
    by id; Daft only checks that what it holds can be pickled.
    """

    def __init__(self, function: SeriesFunction):
        self.function = function
        self.is_async = function.is_async
        _in_process[id(function)] = function

    def __call__(self, *series: daft.Series) -> Any:
        return self.function(*series)

    async def acall(self, *series: daft.Series) -> Any:
        return await self.function.acall(*series)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_find_in_process, (id(self.function),))


def _find_in_process(key: int) -> _InProcess:
    return _InProcess(_in_process[key])


def _is_arrow(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "type")


def _values(result: Any, n_rows: int, label: str) -> list[Any]:
    try:
        return as_values(result, n_rows, label)
    except Exception as error:
        raise wrap_error(error, label) from error
