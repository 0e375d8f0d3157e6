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


def as_values(result: Any, n_rows: int, label: str) -> list[Any]:
    """A batch call's result as a list of `n_rows` Python values."""
    if hasattr(result, "to_pylist"):  # pyarrow Array/ChunkedArray, Daft Series
        values = result.to_pylist()
    elif hasattr(result, "tolist"):  # numpy
        values = result.tolist()
    else:
        values = list(result)
    if len(values) != n_rows:
        raise ValueError(
            f"batch node '{label}' returned {len(values)} values for {n_rows} rows; "
            "a batch node returns one value per row"
        )
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
