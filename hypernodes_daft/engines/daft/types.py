"""Python type hints -> Daft column types, only where the values round-trip unchanged.

    arrow_type(int)              # DataType.int64()
    arrow_type(list[str])        # DataType.list(DataType.string())
    arrow_type(MyTypedDict)      # DataType.struct({...})
    arrow_type(NDArray[np.float32])  # DataType.tensor(DataType.float32())
    arrow_type(MyDataclass)      # DataType.python(): it would come back as a dict

A column of `DataType.python()` holds the Python objects themselves: always correct, but it
stays in the Python heap and cannot be written to Parquet.
"""

from __future__ import annotations

import collections.abc
import sys
import types
import typing
from typing import Any

import daft
import pyarrow as pa
from daft import DataType

from ...results import error_arrow_type

_SCALARS: dict[Any, DataType] = {
    bool: DataType.bool(),
    int: DataType.int64(),
    float: DataType.float64(),
    str: DataType.string(),
    bytes: DataType.binary(),
}

PYTHON = DataType.python()
_LISTS = (list, collections.abc.Sequence)  # what a batch_size node's return hint may say


def arrow_type(hint: Any) -> DataType:
    """The Daft type for values of `hint`; `DataType.python()` when no exact one exists."""
    hint = _strip_optional(hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        inner = arrow_type(args[0])
        return PYTHON if inner == PYTHON else DataType.list(inner)
    if _is_ndarray(origin) and len(args) == 2 and typing.get_args(args[1]):
        import numpy as np

        element = np.dtype(typing.get_args(args[1])[0])
        return DataType.tensor(DataType.from_numpy_dtype(element))
    if typing.is_typeddict(hint):
        fields = {name: arrow_type(t) for name, t in typing.get_type_hints(hint).items()}
        if fields and PYTHON not in fields.values() and not hint.__optional_keys__:
            return DataType.struct(fields)
    return PYTHON


def output_types(func: Any, n_outputs: int, listed: bool = False) -> list[DataType]:
    """One type per output of a node, from its return hint (`tuple[...]` for several).
    `listed`: a `batch_size` node, whose hint is `list[<one item's result>]`."""
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable forward references: treat as unannotated
        hint = None
    if listed:
        args = typing.get_args(hint)
        hint = args[0] if typing.get_origin(hint) in _LISTS and len(args) == 1 else None
    if n_outputs == 1:
        return [arrow_type(hint)]
    args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
    if len(args) == n_outputs and Ellipsis not in args:
        return [arrow_type(a) for a in args]
    return [PYTHON] * n_outputs


def input_column(values: list[Any]) -> daft.Series:
    """A list of input values as a Series, typed only when every value has one exact
    scalar type (1 and 1.0 in one list stay Python objects, never become 1.0 and 1.0)."""
    kinds = set(map(type, values)) - {type(None)}
    if len(kinds) == 1 and (kind := kinds.pop()) in _SCALARS:
        return daft.Series.from_arrow(pa.array(values, type=_SCALARS[kind].to_arrow_dtype()))
    return daft.Series.from_pylist(values, dtype=PYTHON)


# an ErrorRecord as a struct (results.RECORD_FIELDS), in frames and Parquet files
ERROR_TYPE = DataType.from_arrow_type(error_arrow_type())


def to_column(values: list[Any], dtype: DataType) -> Any:
    """A node's output values as what a Daft batch function returns for `dtype`."""
    if dtype == PYTHON or dtype.is_tensor():  # Daft builds these from Python values itself
        return daft.Series.from_pylist(values, dtype=dtype)
    return pa.array(values, type=dtype.to_arrow_dtype())


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _is_ndarray(origin: Any) -> bool:
    numpy = sys.modules.get("numpy")  # a hint naming numpy arrays means numpy is imported
    return numpy is not None and origin is numpy.ndarray
