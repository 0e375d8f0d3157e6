"""Datasets as map inputs: the columns of a lazy Daft DataFrame, mixed with constants.

    reviews = read_parquet("data/reviews/*.parquet")      # a Dataset (io.py)
    pipeline.map(inputs={**reviews, "lang": "en"}, map_over="text", engine=DaftEngine())

A `Dataset` is a mapping of column name -> `Column` (a lazy reference), so it mixes with
constants in one inputs dict. `DaftEngine` keeps the columns lazy and in Arrow; the local
engines read the columns they map over into Python lists first (`materialize`). A
`pyarrow.Table` or a `daft.DataFrame` passed as `inputs` is taken as a Dataset. Planning
reads only these plain references; nothing here imports Daft until data is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import PlanningError


class Dataset(Mapping[str, "Column"]):
    """The columns of a lazy Daft DataFrame, usable as map inputs."""

    def __init__(self, frame: Any):
        self.frame = frame

    def __getitem__(self, name: str) -> Column:
        if name not in self.frame.column_names:
            raise KeyError(name)
        return Column(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.frame.column_names)

    def __len__(self) -> int:
        return len(self.frame.column_names)

    def __repr__(self) -> str:
        return f"Dataset(columns={self.frame.column_names})"


@dataclass(frozen=True, eq=False)
class Column:
    """One column of a `Dataset`: a map input read only when an engine needs it."""

    dataset: Dataset
    name: str

    def __repr__(self) -> str:
        return f"Column({self.name!r})"


def as_inputs(inputs: Any) -> dict[str, Any] | None:
    """`inputs` as a dict when it is a table (`Dataset`, pyarrow Table, Daft DataFrame),
    else None."""
    if isinstance(inputs, Dataset):
        return dict(inputs)
    kind = f"{type(inputs).__module__}.{type(inputs).__name__}"
    if kind == "pyarrow.lib.Table":
        import daft

        return dict(Dataset(daft.from_arrow(inputs)))
    if kind == "daft.dataframe.dataframe.DataFrame":
        return dict(Dataset(inputs))
    return None


def dataset_of(values: Mapping[str, Any], names: tuple[str, ...], label: str) -> Dataset | None:
    """The one Dataset the `names` inputs come from; None when they are plain lists.

    Mixing columns of two datasets, or columns and lists, is an error: rows would be paired
    by position across sources with no guarantee of order.
    """
    sources = {id(v.dataset): v.dataset for n in names if isinstance(v := values[n], Column)}
    if not sources:
        return None
    if len(sources) > 1 or any(not isinstance(values[n], Column) for n in names):
        raise PlanningError(
            f"{label}: map_over {list(names)} mixes columns of different datasets or columns "
            "and lists; map over columns of one dataset (join the tables first) or over lists"
        )
    return next(iter(sources.values()))


def materialize(values: Mapping[str, Any], names: tuple[str, ...], label: str) -> dict[str, Any]:
    """`values` with the dataset columns among `names` read into Python lists."""
    dataset = dataset_of(values, names, label)
    if dataset is None:
        return dict(values)
    wanted = [values[n].name for n in names]
    columns = dataset.frame.select(*wanted).to_pydict()
    return {**values, **{n: columns[values[n].name] for n in names}}


def count_rows(files: list[str]) -> int:
    """The rows in these Parquet files, from their footers (no data is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
