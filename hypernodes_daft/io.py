"""Parquet in and out: datasets as lazy map inputs, results written as Parquet.

    reviews = read_parquet("data/reviews/*.parquet")      # lazy: nothing read yet
    pipeline.map(inputs={**reviews, "lang": "en"}, map_over="text", engine=DaftEngine())
    write_parquet(pipeline, reviews, "out/", map_over="text")

A `Dataset` is a mapping of column name -> `Column` (a lazy reference), so it mixes with
constants in one inputs dict. `DaftEngine` keeps the columns lazy and in Arrow; the local
engines read the columns they map over into Python lists first. A `pyarrow.Table` or a
`daft.DataFrame` passed as `inputs` is taken as a Dataset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dataset import Dataset

if TYPE_CHECKING:
    from .engines.protocol import Engine
    from .pipeline import Pipeline


def read_parquet(path: str | list[str], **options: Any) -> Dataset:
    """A Parquet file, directory or glob as a lazy `Dataset` (`daft.read_parquet` options).

    It does not choose Daft's runner (daft.read_parquet would lock in the native one), so a
    `DaftEngine(runner="ray")` can still run the map on Ray afterwards.
    """
    import daft
    from daft.runners import get_or_infer_runner_type

    options.setdefault("_multithreaded_io", get_or_infer_runner_type() != "ray")
    return Dataset(daft.read_parquet(path, **options))


def write_parquet(
    pipeline: Pipeline,
    inputs: Any,
    path: str,
    map_over: str | list[str] | None = None,
    output_name: str | list[str] | None = None,
    engine: Engine | None = None,
    **options: Any,
) -> list[str]:
    """Map `pipeline` over `inputs` (on a DaftEngine unless `engine` says otherwise) and
    write inputs and outputs as Parquet under `path`; returns the files written. The same
    as `pipeline.write_parquet(...)`, whose `on_error` and writer options `options` takes.

        write_parquet(pipeline, read_parquet("in/*.parquet"), "out/", map_over="text")
    """
    if engine is None:
        from .engines.daft import DaftEngine

        engine = DaftEngine()
    return pipeline.write_parquet(inputs, path, map_over, output_name, engine, **options)
