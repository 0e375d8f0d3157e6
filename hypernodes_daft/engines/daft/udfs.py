"""What runs inside Daft: plan steps as batch functions over the rows of one batch.

Every function here receives one Daft Series per column argument and returns one column
(several as a struct that the compiler unnests). Constants (broadcast inputs, outputs of
nodes that read only constants) are bound into the function once, never copied into rows.

- `SyncGroup`: consecutive sync nodes, fused. Each node runs column-wise,
  `list(map(func, *columns))`: no per-row dict, no per-row Daft call.
- `AsyncStep`: one async node; the batch's rows are awaited together on the worker's event
  loop, at most `limit` at once.
- `BatchStep`: one `@node(batch=True)` node, called once per batch with Arrow arrays.
- `RowStep`: anything else (a nested pipeline mapped over a list), run row by row with the
  local node runtime.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from ..._batch import as_argument, as_values
from ...exceptions import ExecutionError, summarize_inputs, wrap_error
from ...plan import RunPlan, Step
from ..local.sequential import compile_run
from .types import PYTHON, to_column

Columns = dict[str, list[Any]]
Output = tuple[str, str, Any]  # (value name, column name, Daft type)


class _Call:
    """One plain node over the columns of a batch."""

    def __init__(self, step: Step):
        self.label = step.label
        self.args = step.args
        self.outputs = step.outputs
        func = step.node.func
        positional = step.args == tuple(step.node.root_args[: len(step.args)])
        self.func: Callable[..., Any] = func if positional else _by_name(func, step.args)

    def arguments(self, columns: Columns, constants: dict[str, Any], n_rows: int) -> list[Any]:
        return [
            columns[a] if a in columns else itertools.repeat(constants[a], n_rows)
            for a in self.args
        ]

    def failed(
        self, error: Exception, row: int, columns: Columns, constants: dict[str, Any]
    ) -> ExecutionError:
        values = {a: columns[a][row] if a in columns else constants[a] for a in self.args}
        return wrap_error(error, self.label, summarize_inputs(values))

    def store(self, columns: Columns, results: list[Any], constants: dict[str, Any]) -> None:
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
                raise self.failed(error, row, columns, constants) from error
        for name, values in zip(self.outputs, zip(*results, strict=True), strict=True):
            columns[name] = list(values)


class _Group:
    """Shared by every batch function: the column arguments, constants and outputs."""

    def __init__(self, inputs: tuple[str, ...], constants: dict[str, Any], outputs: list[Output]):
        self.inputs = inputs
        self.constants = constants
        self.outputs = outputs

    def columns(self, series: tuple[Any, ...]) -> Columns:
        return {name: s.to_pylist() for name, s in zip(self.inputs, series, strict=True)}

    def result(self, columns: Columns) -> Any:
        """The outputs as one column, or a struct of them named by their column names."""
        if len(self.outputs) == 1:
            name, _, dtype = self.outputs[0]
            return self._column(columns, name, dtype)
        if all(dtype != PYTHON for _, _, dtype in self.outputs):
            import pyarrow as pa

            arrays = [self._column(columns, name, dtype) for name, _, dtype in self.outputs]
            return pa.StructArray.from_arrays(arrays, names=[c for _, c, _ in self.outputs])
        import daft

        struct = daft.DataType.struct({column: dtype for _, column, dtype in self.outputs})
        names = [column for _, column, _ in self.outputs]
        rows = zip(*(columns[name] for name, _, _ in self.outputs), strict=True)
        return daft.Series.from_pylist(
            [dict(zip(names, row, strict=True)) for row in rows], dtype=struct
        )

    def _column(self, columns: Columns, name: str, dtype: Any) -> Any:
        try:
            return to_column(columns[name], dtype)
        except Exception as error:  # pyarrow says which value did not fit
            raise TypeError(
                f"output '{name}' does not match its return type hint ({dtype}): {error}"
            ) from error


class SyncGroup(_Group):
    """Consecutive sync nodes fused into one batch function."""

    def __init__(self, steps: list[Step], *group: Any):
        super().__init__(*group)
        self.calls = [_Call(step) for step in steps]

    def __call__(self, *series: Any) -> Any:
        columns = self.columns(series)
        n_rows = len(series[0])
        for call in self.calls:
            results: list[Any] = []
            try:  # extend keeps what was computed, so len(results) is the failing row
                results.extend(map(call.func, *call.arguments(columns, self.constants, n_rows)))
            except Exception as error:
                raise call.failed(error, len(results), columns, self.constants) from error
            call.store(columns, results, self.constants)
        return self.result(columns)


class AsyncStep(_Group):
    """One async node: the rows of a batch awaited together, at most `limit` at once."""

    def __init__(self, step: Step, limit: int, *group: Any):
        super().__init__(*group)
        self.call = _Call(step)
        self.limit = limit

    async def __call__(self, *series: Any) -> Any:
        columns = self.columns(series)
        n_rows = len(series[0])
        rows = list(zip(*self.call.arguments(columns, self.constants, n_rows), strict=True))
        func = self.call.func
        if n_rows <= self.limit:
            awaitables = [func(*row) for row in rows]
        else:
            gate = asyncio.Semaphore(self.limit)

            async def bounded(row: tuple[Any, ...]) -> Any:
                async with gate:
                    return await func(*row)

            awaitables = [bounded(row) for row in rows]
        results = await asyncio.gather(*awaitables, return_exceptions=True)
        for row, result in enumerate(results):
            if isinstance(result, Exception):
                raise self.call.failed(result, row, columns, self.constants) from result
            if isinstance(result, BaseException):
                raise result
        self.call.store(columns, results, self.constants)
        return self.result(columns)


class BatchStep(_Group):
    """One `@node(batch=True)` node: called once per batch with Arrow arrays."""

    def __init__(self, step: Step, *group: Any):
        super().__init__(*group)
        self.call = _Call(step)

    def __call__(self, *series: Any) -> Any:
        n_rows = len(series[0])
        arrays = {
            name: s.to_pylist() if s.datatype() == PYTHON else s.to_arrow()
            for name, s in zip(self.inputs, series, strict=True)
        }
        kwargs = {
            a: arrays[a] if a in arrays else as_argument(self.constants[a], n_rows)
            for a in self.call.args
        }
        outputs = self.call.outputs
        try:
            result = self.call.func(**kwargs)
            parts = [result] if len(outputs) == 1 else list(result)
            if len(parts) == 1 and self.outputs[0][2] != PYTHON and _is_arrow(result):
                return _checked_arrow(result, n_rows, self.outputs[0][2], self.call.label)
            columns = {
                name: as_values(part, n_rows, self.call.label)
                for name, part in zip(outputs, parts, strict=True)
            }
        except Exception as error:
            summary = summarize_inputs({a: f"<{n_rows} rows>" for a in arrays})
            raise wrap_error(error, self.call.label, summary) from error
        return self.result(columns)


class RowStep(_Group):
    """A step run row by row with the local runtime (a nested pipeline over a list)."""

    def __init__(self, step: Step, *group: Any):
        super().__init__(*group)
        plan = RunPlan(step.label, (step,), ((0,),), step.args, step.outputs)
        self.run_row = compile_run(plan)
        self.names = step.args

    def __call__(self, *series: Any) -> Any:
        columns = self.columns(series)
        n_rows = len(series[0])
        results: Columns = {name: [] for name, _, _ in self.outputs}
        for row in range(n_rows):
            values = {a: columns[a][row] if a in columns else self.constants[a] for a in self.names}
            outputs = self.run_row(values)
            for name in results:
                results[name].append(outputs[name])
        return self.result(results)


def _by_name(func: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`func` called with keyword arguments from positional ones (keyword-only parameters,
    or arguments that skip a defaulted parameter)."""

    def call(*values: Any) -> Any:
        return func(**dict(zip(names, values, strict=True)))

    return call


def _is_arrow(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "type")


def _checked_arrow(array: Any, n_rows: int, dtype: Any, label: str) -> Any:
    """A batch node's Arrow result as is (cast to its declared type): no Python detour."""
    if len(array) != n_rows:
        raise ValueError(
            f"batch node '{label}' returned {len(array)} values for {n_rows} rows; "
            "a batch node returns one value per row"
        )
    wanted = dtype.to_arrow_dtype()
    return array if array.type == wanted else array.cast(wanted)
