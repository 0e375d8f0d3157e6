"""Calling `@node(batch=True)` functions, which take and return whole columns.

A batch node receives a pyarrow Array per argument (a `@stateful` object, or a value Arrow
cannot hold, stays a plain value) and returns an Array, a list, a numpy array or a Daft
Series with one value per row. On one item (`run`, the local engines) it is called with
one-element arrays, so it gives the same results everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..stateful import is_stateful


def as_argument(value: Any, n_rows: int) -> Any:
    """A constant for a batch call: `n_rows` copies in an Array, or the value itself when it
    is `@stateful` or Arrow cannot hold it."""
    import pyarrow as pa

    if is_stateful(value):
        return value
    try:
        return pa.array([value] * n_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return value


class BatchLengthError(ValueError, RuntimeError):
    """A batch function returned a number of values other than its number of rows (a
    ValueError; a RuntimeError too, as HyperNodes 0.4's DualNode raised)."""


def as_values(result: Any, n_rows: int, label: str) -> list[Any]:
    """A batch call's result as a list of `n_rows` Python values."""
    if hasattr(result, "to_pylist"):  # pyarrow Array/ChunkedArray, Daft Series
        values = result.to_pylist()
    elif hasattr(result, "tolist"):  # numpy
        values = result.tolist()
    elif isinstance(result, (list, tuple)):
        values = list(result)
    else:
        raise TypeError(
            f"batch node '{label}' returned {type(result).__name__}; expected a pyarrow "
            f"Array, a list or a numpy array of {n_rows} values, one per row"
        )
    check_length(len(values), n_rows, label)
    return values


def check_length(n_values: int, n_rows: int, label: str) -> None:
    """Raise BatchLengthError unless a batch call of `n_rows` rows gave `n_values`."""
    if n_values != n_rows:
        raise BatchLengthError(
            f"batch node '{label}' returned {n_values} values for {n_rows} rows; "
            "a batch node returns one value per row"
        )


def call_over_rows(
    func: Callable[..., Any], label: str, outputs: tuple[str, ...], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`func`, a batch function, called once over `rows` (each item's arguments): an Array
    per argument, `@stateful` objects as they are; one output dict per row."""
    if not rows:
        return []
    result = func(**{name: _column([row[name] for row in rows]) for name in rows[0]})
    parts = [result] if len(outputs) == 1 else list(result)
    columns = [as_values(part, len(rows), label) for part in parts]
    return [dict(zip(outputs, values, strict=True)) for values in zip(*columns, strict=True)]


def _column(values: list[Any]) -> Any:
    import pyarrow as pa

    if is_stateful(values[0]):  # one object shared by every item
        return values[0]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values


def one_row(func: Callable[..., Any], label: str, n_outputs: int) -> Callable[..., Any]:
    """`func`, a batch function, as a function of one item's values."""

    @functools.wraps(func)
    def call(**kwargs: Any) -> Any:
        result = func(**{name: as_argument(v, 1) for name, v in kwargs.items()})
        if n_outputs == 1:
            return as_values(result, 1, label)[0]
        return tuple(as_values(part, 1, label)[0] for part in result)

    return call
