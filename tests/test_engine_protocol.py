"""Every engine keeps the contract `Pipeline` calls it through (engines/protocol.py)."""

from __future__ import annotations

import inspect

import pyarrow.parquet as pq
import pytest
from daft import DataType

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node
from hypernodes_daft.engines import Engine
from hypernodes_daft.results import ERROR_FIELD, RECORD_FIELDS, error_arrow_type

METHODS = ("run", "map", "iter_map", "aiter_map", "arun", "amap", "write_parquet")
ENGINES = {
    "local": lambda: HypernodesEngine(),
    "threaded": lambda: HypernodesEngine(node_executor="threaded", map_executor="threaded"),
    "async": lambda: HypernodesEngine(node_executor="async", map_executor="async"),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(),
}


def _parameters(function) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter but `self`."""
    parameters = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default) for p in parameters if p.name != "self"]


@pytest.mark.parametrize("name", ENGINES)
def test_each_engine_is_an_engine_with_the_protocols_parameters(name):
    engine = ENGINES[name]()
    try:
        assert isinstance(engine, Engine)
        assert isinstance(engine.reads_datasets, bool)
        for method in METHODS:
            ours = getattr(engine, method)
            assert _parameters(ours) == _parameters(getattr(Engine, method)), method
            wanted = inspect.iscoroutinefunction(getattr(Engine, method))
            assert inspect.iscoroutinefunction(ours) == wanted, method
    finally:
        getattr(engine, "shutdown", lambda: None)()


def test_an_object_without_the_contract_is_not_an_engine():
    class RunsOnly:
        reads_datasets = False

        def run(self, plan, inputs, cache=None, callbacks=None, on_error="raise"):
            return {}

    assert not isinstance(RunsOnly(), Engine)


def test_the_error_column_type_is_the_records_fields():
    assert [field.name for field in error_arrow_type()] == list(RECORD_FIELDS)
    from hypernodes_daft.engines.daft.types import ERROR_TYPE

    assert DataType.from_arrow_type(error_arrow_type()) == ERROR_TYPE


@node(output_name="half")
def half(x: int) -> float:
    if x == 2:
        raise ValueError("two")
    return x / 2


@pytest.mark.parametrize("name", ["local", "daft"])
@pytest.mark.parametrize("on_error", ["raise", "collect", "skip"])
def test_pipeline_write_parquet_writes_the_same_rows_on_each_engine(tmp_path, name, on_error):
    engine = ENGINES[name]()
    inputs = {"x": [1, 3, 2, 4]} if on_error != "raise" else {"x": [1, 3, 4]}
    files = Pipeline(nodes=[half]).write_parquet(
        inputs, str(tmp_path), map_over="x", engine=engine, on_error=on_error
    )
    table = pq.read_table(files)
    rows = sorted(table.to_pylist(), key=lambda row: row["x"])
    if on_error == "raise":
        assert table.column_names == ["x", "half"]
        assert rows == [{"x": 1, "half": 0.5}, {"x": 3, "half": 1.5}, {"x": 4, "half": 2.0}]
        return
    assert table.column_names == ["x", "half", ERROR_FIELD]
    written = DataType.from_arrow_type(table.schema.field(ERROR_FIELD).type)
    assert written == DataType.from_arrow_type(error_arrow_type())  # Daft writes large strings
    failed = [row for row in rows if row[ERROR_FIELD] is not None]
    assert [row["x"] for row in rows] == ([1, 2, 3, 4] if on_error == "collect" else [1, 3, 4])
    if on_error == "collect":
        (row,) = failed
        assert row["half"] is None and row[ERROR_FIELD]["error_type"] == "ValueError"
    else:
        assert failed == []
