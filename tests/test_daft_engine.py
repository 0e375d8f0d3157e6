"""DaftEngine behaviours beyond the shared scenarios: lazy frames, dataset inputs, Parquet in
and out, column types, errors, batch / async / @stateful nodes, fusing, nested pipelines.

Wherever the local engine (`HypernodesEngine()`) can run the same thing, both must give the
same results. Every node is defined inside its test (or at module level when a type hint
has to resolve), so counters never leak between tests.
"""

import asyncio
import io
import re
import threading
import time
from dataclasses import dataclass
from typing import TypedDict

import daft
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from daft import DataType

from hypernodes_daft import (
    DaftEngine,
    ExecutionError,
    HypernodesEngine,
    Pipeline,
    node,
    read_parquet,
    stateful,
    write_parquet,
)
from hypernodes_daft.stateful import is_stateful


def local() -> HypernodesEngine:
    return HypernodesEngine()


def udf_names(frame: daft.DataFrame) -> list[str]:
    """The names of the UDFs in the physical plan of `frame`, last one first."""
    buffer = io.StringIO()
    frame.explain(show_all=True, file=buffer)
    physical = buffer.getvalue().split("== Physical Plan ==")[-1]
    return re.findall(r"UDF hypernodes\.(\S+):", physical)


# -- 1. collect=False: a lazy frame --------------------------------------------------------


def _counted_chain(calls: dict[str, int]) -> Pipeline:
    @node(output_name="a")
    def add_one(x: int) -> int:
        calls["add_one"] += 1
        return x + 1

    @node(output_name="b")
    def times_k(a: int, k: int) -> int:
        calls["times_k"] += 1
        return a * k

    @node(output_name="other")
    def unrelated(x: int, y: str) -> str:
        calls["unrelated"] += 1
        return f"{y}{x}"

    return Pipeline(nodes=[add_one, times_k, unrelated])


def test_lazy_frame_runs_nothing_until_collected():
    calls = {"add_one": 0, "times_k": 0, "unrelated": 0}
    pipeline = _counted_chain(calls)
    inputs = {"x": [1, 2, 3], "y": ["p", "q", "r"], "k": 10}
    frame = pipeline.map(inputs=inputs, map_over=["x", "y"], engine=DaftEngine(collect=False))

    assert isinstance(frame, daft.DataFrame)
    assert calls == {"add_one": 0, "times_k": 0, "unrelated": 0}
    assert frame.column_names == ["x", "y", "a", "b", "other"]  # no column for constant k
    assert calls == {"add_one": 0, "times_k": 0, "unrelated": 0}

    columns = frame.to_pydict()
    assert columns == {
        "x": [1, 2, 3],
        "y": ["p", "q", "r"],
        "a": [2, 3, 4],
        "b": [20, 30, 40],
        "other": ["p1", "q2", "r3"],
    }
    assert calls == {"add_one": 3, "times_k": 3, "unrelated": 3}

    expected = pipeline.map(inputs=inputs, map_over=["x", "y"], engine=local())
    rows = [{n: columns[n][i] for n in ("a", "b", "other")} for i in range(3)]
    assert rows == expected


def test_lazy_frame_with_output_name_has_only_those_outputs():
    calls = {"add_one": 0, "times_k": 0, "unrelated": 0}
    pipeline = _counted_chain(calls)
    inputs = {"x": [1, 2, 3], "k": 10}
    frame = pipeline.map(
        inputs=inputs, map_over="x", output_name="b", engine=DaftEngine(collect=False)
    )
    assert frame.column_names == ["x", "b"]
    assert calls == {"add_one": 0, "times_k": 0, "unrelated": 0}

    assert frame.collect().to_pydict() == {"x": [1, 2, 3], "b": [20, 30, 40]}
    assert calls == {"add_one": 3, "times_k": 3, "unrelated": 0}


def test_lazy_frame_output_name_list():
    calls = {"add_one": 0, "times_k": 0, "unrelated": 0}
    pipeline = _counted_chain(calls)
    frame = pipeline.map(
        inputs={"x": [5, 6], "y": ["a", "b"], "k": 2},
        map_over=["x", "y"],
        output_name=["a", "other"],
        engine=DaftEngine(collect=False),
    )
    assert frame.column_names[:2] == ["x", "y"]
    assert sorted(frame.column_names[2:]) == ["a", "other"]
    assert frame.to_pydict() == {"x": [5, 6], "y": ["a", "b"], "a": [6, 7], "other": ["a5", "b6"]}
    assert calls["times_k"] == 0


# -- 2. inputs: lists, tables, frames, datasets ---------------------------------------------


def _reader_pipeline() -> Pipeline:
    @node(output_name="scaled")
    def scale(x: int, k: int = 2) -> int:
        return x * k

    @node(output_name="label")
    def describe(text: str, scaled: int) -> str:
        return f"{text}:{scaled}"

    return Pipeline(nodes=[scale, describe])


DATA = {"x": [3, 1, 4, 1, 5, 9, 2, 6], "text": ["a", "bb", "c", "dd", "e", "ff", "g", "hh"]}


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "data.parquet"
    table = pa.table({**DATA, "unused": [0.5] * len(DATA["x"])})  # a column nobody reads
    pq.write_table(table, path)
    return str(path)


def test_inputs_of_every_kind_give_the_local_results(parquet_file):
    pipeline = _reader_pipeline()
    expected = pipeline.map(inputs=dict(DATA), map_over=["x", "text"], engine=local())
    expected_k3 = pipeline.map(inputs={**DATA, "k": 3}, map_over=["x", "text"], engine=local())
    assert expected[0] == {"scaled": 6, "label": "a:6"}
    assert expected_k3[0] == {"scaled": 9, "label": "a:9"}

    table = pa.table({**DATA, "unused": [0.5] * len(DATA["x"])})
    frame = daft.from_pydict({**DATA, "unused": [0.5] * len(DATA["x"])})
    mapped = ["x", "text"]
    engine = DaftEngine()
    assert pipeline.map(inputs=dict(DATA), map_over=mapped, engine=engine) == expected
    assert pipeline.map(inputs=table, map_over=mapped, engine=engine) == expected
    assert pipeline.map(inputs=frame, map_over=mapped, engine=engine) == expected
    dataset = read_parquet(parquet_file)
    assert pipeline.map(inputs=dataset, map_over=mapped, engine=engine) == expected
    mixed = {**read_parquet(parquet_file), "k": 3}
    assert pipeline.map(inputs=mixed, map_over=mapped, engine=engine) == expected_k3

    # the local engine reads the dataset's columns into lists
    assert pipeline.map(inputs=read_parquet(parquet_file), map_over=mapped, engine=local()) == (
        expected
    )
    assert pipeline.map(inputs=mixed, map_over=mapped, engine=local()) == expected_k3


def test_map_over_defaults_to_the_dataset_columns_the_pipeline_reads(parquet_file):
    pipeline = _reader_pipeline()
    expected = pipeline.map(inputs=dict(DATA), map_over=["x", "text"], engine=local())
    table = pa.table({**DATA, "unused": [0.5] * len(DATA["x"])})

    assert pipeline.map(inputs=table, engine=DaftEngine()) == expected
    assert pipeline.map(inputs=read_parquet(parquet_file), engine=DaftEngine()) == expected
    assert pipeline.map(inputs={**read_parquet(parquet_file), "k": 2}, engine=DaftEngine()) == (
        expected
    )
    assert pipeline.map(inputs=read_parquet(parquet_file), engine=local()) == expected

    # map_over was ["x", "text"]: "unused" in map_over would be a PlanningError (no node
    # reads it), and x and text not mapped would be an error too
    frame = pipeline.map(inputs=read_parquet(parquet_file), engine=DaftEngine(collect=False))
    assert {"x", "text"} <= set(frame.column_names)
    assert frame.column_names[-2:] == ["scaled", "label"]
    columns = frame.to_pydict()
    assert columns["label"] == [r["label"] for r in expected]


# -- 3. Parquet in, Parquet out --------------------------------------------------------------

N_FILES, ROWS_PER_FILE = 10, 300


@pytest.fixture
def parquet_dataset(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in range(N_FILES):
        ids = list(range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE))
        table = pa.table({"id": ids, "x": [i % 17 for i in ids], "text": [f"t{i}" for i in ids]})
        pq.write_table(table, folder / f"part-{f:02d}.parquet")
    return str(folder / "*.parquet")


def _parquet_pipeline() -> Pipeline:
    @node(output_name="doubled")
    def double(x: int) -> int:
        return 2 * x

    @node(output_name="key")
    def make_key(id: int, text: str, doubled: int) -> str:
        return f"{id}/{text}/{doubled}"

    return Pipeline(nodes=[double, make_key])


def _expected_rows() -> list[dict]:
    rows = []
    for i in range(N_FILES * ROWS_PER_FILE):
        x, text = i % 17, f"t{i}"
        rows.append({"id": i, "x": x, "text": text, "doubled": 2 * x, "key": f"{i}/{text}/{2 * x}"})
    return rows


def _read_back(files: list[str]) -> list[dict]:
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def test_write_parquet_from_a_ten_file_dataset(parquet_dataset, tmp_path):
    out = tmp_path / "out"
    files = write_parquet(
        _parquet_pipeline(), read_parquet(parquet_dataset), str(out), map_over=["id", "x", "text"]
    )
    assert files and all(isinstance(f, str) for f in files)
    assert all(f.endswith(".parquet") for f in files)
    rows = _read_back(files)
    assert len(rows) == N_FILES * ROWS_PER_FILE
    assert rows == _expected_rows()


def test_write_parquet_with_output_name_and_default_map_over(parquet_dataset, tmp_path):
    files = write_parquet(
        _parquet_pipeline(), read_parquet(parquet_dataset), str(tmp_path / "out"), output_name="key"
    )
    rows = _read_back(files)
    expected = [{k: r[k] for k in ("id", "x", "text", "key")} for r in _expected_rows()]
    assert rows == expected


def test_lazy_map_composes_with_daft_write_parquet(parquet_dataset, tmp_path):
    pipeline = _parquet_pipeline()
    frame = pipeline.map(read_parquet(parquet_dataset), engine=DaftEngine(collect=False))
    written = frame.write_parquet(str(tmp_path / "out2")).to_pydict()
    assert _read_back(list(written["path"])) == _expected_rows()

    # the local engine, which reads the dataset into lists, computes the same outputs
    local_rows = pipeline.map(read_parquet(parquet_dataset), engine=local())
    expected = [{"doubled": r["doubled"], "key": r["key"]} for r in _expected_rows()]
    assert sorted(local_rows, key=lambda r: r["key"]) == sorted(expected, key=lambda r: r["key"])


# -- 4. types -----------------------------------------------------------------------------


class Point(TypedDict):
    a: int
    b: str


@dataclass
class Box:
    n: int
    tags: list[str]


def _typed_pipeline() -> Pipeline:
    @node(output_name="i")
    def to_int(x: int) -> int:
        return x * 2

    @node(output_name="f")
    def to_float(x: int) -> float:
        return x / 4

    @node(output_name="s")
    def to_str(x: int) -> str:
        return "é" * x

    @node(output_name="b")
    def to_bool(x: int) -> bool:
        return x % 2 == 0

    @node(output_name="raw")
    def to_bytes(x: int) -> bytes:
        return bytes([x, 0, 255])

    @node(output_name="ints")
    def to_list(x: int) -> list[int]:
        return list(range(x))

    @node(output_name="point")
    def to_point(x: int) -> Point:
        return {"a": x, "b": str(x)}

    @node(output_name="maybe")
    def to_optional(x: int) -> int | None:
        return None if x % 2 else x

    @node(output_name="box")
    def to_box(x: int) -> Box:
        return Box(x, ["t"] * x)

    @node(output_name="mapping")
    def unhinted_dict(x):
        return {"x": x, "nested": {"y": [x]}, 3: "int key"}

    @node(output_name="group")
    def unhinted_set(x):
        return {x, x + 1}

    @node(output_name=("half", "word"))
    def split(x: int) -> tuple[int, str]:
        return x // 2, f"w{x}"

    @node(output_name="summary")
    def summarize(i: int, point: Point, box: Box, word: str, maybe: int | None) -> str:
        return f"{i}|{point['b']}|{box.n}|{word}|{maybe}"

    return Pipeline(
        nodes=[
            to_int,
            to_float,
            to_str,
            to_bool,
            to_bytes,
            to_list,
            to_point,
            to_optional,
            to_box,
            unhinted_dict,
            unhinted_set,
            split,
            summarize,
        ]
    )


def test_typed_outputs_equal_the_local_engine():
    pipeline = _typed_pipeline()
    inputs = {"x": [0, 1, 2, 3, 4]}
    expected = pipeline.map(inputs=inputs, map_over="x", engine=local())
    result = pipeline.map(inputs=inputs, map_over="x", engine=DaftEngine())
    assert result == expected
    assert [r["maybe"] for r in result] == [0, None, 2, None, 4]
    assert all(type(r["box"]) is Box for r in result)
    assert result[3]["box"] == Box(3, ["t", "t", "t"])
    assert result[2]["group"] == {2, 3} and isinstance(result[2]["group"], set)
    assert result[1]["mapping"] == {"x": 1, "nested": {"y": [1]}, 3: "int key"}
    assert all(type(r[k]) is t for r in result for k, t in (("i", int), ("f", float)))
    assert all(type(r["raw"]) is bytes and type(r["b"]) is bool for r in result)


def test_typed_outputs_column_types():
    frame = _typed_pipeline().map(
        inputs={"x": [0, 1, 2]}, map_over="x", engine=DaftEngine(collect=False)
    )
    schema = frame.schema()
    types = {name: schema[name].dtype for name in frame.column_names}
    assert types == {
        "x": DataType.int64(),
        "i": DataType.int64(),
        "f": DataType.float64(),
        "s": DataType.string(),
        "b": DataType.bool(),
        "raw": DataType.binary(),
        "ints": DataType.list(DataType.int64()),
        "point": DataType.struct({"a": DataType.int64(), "b": DataType.string()}),
        "maybe": DataType.int64(),
        "box": DataType.python(),
        "mapping": DataType.python(),
        "group": DataType.python(),
        "half": DataType.int64(),
        "word": DataType.string(),
        "summary": DataType.string(),
    }
    columns = frame.to_pydict()
    assert columns["maybe"] == [0, None, 2]
    assert columns["point"] == [{"a": 0, "b": "0"}, {"a": 1, "b": "1"}, {"a": 2, "b": "2"}]
    assert columns["box"] == [Box(0, []), Box(1, ["t"]), Box(2, ["t", "t"])]
    assert columns["half"] == [0, 0, 1] and columns["word"] == ["w0", "w1", "w2"]


def test_run_with_typed_outputs_equals_local():
    pipeline = _typed_pipeline()
    assert pipeline.run(inputs={"x": 3}, engine=DaftEngine()) == pipeline.run(
        inputs={"x": 3}, engine=local()
    )


def _bad_hint_pipeline() -> Pipeline:
    @node(output_name="count")
    def bad_hint(x: int) -> int:
        return "not a number" if x == 2 else x

    return Pipeline(nodes=[bad_hint])


def test_output_not_matching_its_hint_names_the_output():
    with pytest.raises((TypeError, ValueError)) as info:
        _bad_hint_pipeline().map(inputs={"x": [1, 2, 3]}, map_over="x", engine=DaftEngine())
    message = str(info.value)
    assert "'count'" in message
    assert "not a number" in message


def test_output_not_matching_its_hint_names_the_node():
    with pytest.raises((TypeError, ValueError)) as info:
        _bad_hint_pipeline().map(inputs={"x": [1, 2, 3]}, map_over="x", engine=DaftEngine())
    assert "bad_hint" in str(info.value)


# -- 5. errors ------------------------------------------------------------------------------


def _check_error(error: BaseException, node_name: str, shown: str) -> None:
    assert isinstance(error, ExecutionError)
    assert isinstance(error, ValueError)
    assert node_name in str(error)
    assert shown in str(error)
    assert type(error.__cause__) is ValueError
    assert str(error.__cause__) == "no sevens"


def test_sync_node_error_names_node_and_row_input():
    @node(output_name="y")
    def picky(x: int, k: int) -> int:
        if x == 7:
            raise ValueError("no sevens")
        return x + k

    @node(output_name="z")
    def after(y: int) -> int:
        return y

    pipeline = Pipeline(nodes=[picky, after])
    with pytest.raises(ValueError) as info:
        pipeline.map(inputs={"x": [1, 2, 7, 9], "k": 4}, map_over="x", engine=DaftEngine())
    _check_error(info.value, "picky", "x=7")
    assert info.value.node_name == "picky"


def test_sync_node_error_shows_string_input():
    @node(output_name="y")
    def parse(text: str) -> int:
        if text == "seven":
            raise ValueError("no sevens")
        return len(text)

    pipeline = Pipeline(nodes=[parse])
    with pytest.raises(ValueError) as info:
        pipeline.map(inputs={"text": ["a", "seven", "b"]}, map_over="text", engine=DaftEngine())
    _check_error(info.value, "parse", "'seven'")


def test_async_node_error_names_node_and_row_input():
    @node(output_name="y")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x == 7:
            raise ValueError("no sevens")
        return x

    pipeline = Pipeline(nodes=[fetch])
    with pytest.raises(ValueError) as info:
        pipeline.map(inputs={"x": [1, 7, 3]}, map_over="x", engine=DaftEngine())
    _check_error(info.value, "fetch", "x=7")


def test_batch_node_error_names_node():
    @node(output_name="y", batch=True)
    def vectorized(x):
        if 7 in x.to_pylist():
            raise ValueError("no sevens")
        return x

    pipeline = Pipeline(nodes=[vectorized])
    with pytest.raises(ValueError) as info:
        pipeline.map(inputs={"x": [1, 7, 3]}, map_over="x", engine=DaftEngine())
    _check_error(info.value, "vectorized", "x=")


def test_error_in_second_fused_node_names_it():
    @node(output_name="a")
    def first(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def second(a: int) -> int:
        if a == 7:
            raise ValueError("no sevens")
        return a

    pipeline = Pipeline(nodes=[first, second])
    with pytest.raises(ValueError) as info:
        pipeline.map(inputs={"x": [0, 6, 2]}, map_over="x", engine=DaftEngine())
    _check_error(info.value, "second", "a=7")
    assert "first" not in str(info.value)


# -- 6. batch nodes ---------------------------------------------------------------------------


@stateful
class Offset:
    def __init__(self, amount: int):
        self.amount = amount

    def apply(self, values: list[int]) -> list[int]:
        return [v + self.amount for v in values]


def _batch_pipeline(seen: list) -> Pipeline:
    @node(output_name="plus", batch=True)
    def add_k(x, k):
        seen.append(("add_k", type(x), type(k), len(x), k.to_pylist()))
        return pc.add(x, k)  # an Arrow array

    @node(output_name="squared", batch=True)
    def square(plus):
        seen.append(("square", type(plus), None, len(plus), None))
        return [v * v for v in plus.to_pylist()]  # a list

    @node(output_name="halved", batch=True)
    def halve(squared):
        seen.append(("halve", type(squared), None, len(squared), None))
        return np.asarray(squared.to_pylist(), dtype=np.float64) / 2  # a numpy array

    @node(output_name="shifted", batch=True)
    def shift(plus, offset):
        seen.append(("shift", type(plus), type(offset), len(plus), offset))
        return offset.apply(plus.to_pylist())

    @node(output_name="final")
    def combine(halved: float, shifted: int) -> float:
        return halved + shifted

    return Pipeline(nodes=[add_k, square, halve, shift, combine])


def test_batch_nodes_same_results_on_daft_and_local():
    inputs = {"x": list(range(12)), "k": 5, "offset": Offset(100)}
    seen_local: list = []
    expected = _batch_pipeline(seen_local).map(inputs=inputs, map_over="x", engine=local())
    seen_daft: list = []
    result = _batch_pipeline(seen_daft).map(inputs=inputs, map_over="x", engine=DaftEngine())

    assert result == expected
    assert [r["final"] for r in result] == [(x + 5) ** 2 / 2 + x + 5 + 100 for x in range(12)]
    # locally: one call per item with one-element arrays
    assert all(n == 1 for _, _, _, n, _ in seen_local)
    assert len([s for s in seen_local if s[0] == "add_k"]) == 12
    # on Daft: whole batches, every row once
    for name in ("add_k", "square", "halve", "shift"):
        assert sum(n for s, _, _, n, _ in seen_daft if s == name) == 12
    assert len([s for s in seen_daft if s[0] == "add_k"]) < 12
    for seen in (seen_local, seen_daft):
        for name, x_type, k_type, n, k_values in seen:
            assert issubclass(x_type, pa.Array), (name, x_type)
            if name == "add_k":  # a constant: an array of repeated values
                assert issubclass(k_type, pa.Array)
                assert k_values == [5] * n
            if name == "shift":  # a @stateful object: itself
                assert k_type is Offset
                assert is_stateful(k_values) and k_values.amount == 100


def test_batch_node_over_strings_and_a_run():
    @node(output_name="upper", batch=True)
    def shout(text):
        assert isinstance(text, pa.Array)
        return pc.utf8_upper(text)

    @node(output_name="n")
    def length(upper: str) -> int:
        return len(upper)

    pipeline = Pipeline(nodes=[shout, length])
    inputs = {"text": ["ab", "", "xyz"]}
    expected = pipeline.map(inputs=inputs, map_over="text", engine=local())
    assert expected == [{"upper": "AB", "n": 2}, {"upper": "", "n": 0}, {"upper": "XYZ", "n": 3}]
    assert pipeline.map(inputs=inputs, map_over="text", engine=DaftEngine()) == expected
    assert pipeline.run(inputs={"text": "hi"}, engine=DaftEngine()) == {"upper": "HI", "n": 2}


# -- 7. async concurrency -------------------------------------------------------------------


def _bounded_async(state: dict) -> Pipeline:
    @node(output_name="y", max_concurrency=5)
    async def slow(x: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return x * 10

    return Pipeline(nodes=[slow])


def test_async_node_max_concurrency_bounds_calls_in_flight():
    state = {"now": 0, "peak": 0}
    pipeline = _bounded_async(state)
    result = pipeline.map(inputs={"x": list(range(40))}, map_over="x", engine=DaftEngine())
    assert result == [{"y": x * 10} for x in range(40)]
    assert 1 < state["peak"] <= 5


def test_async_node_max_concurrency_holds_across_batches(parquet_dataset):
    """Ten files are ten batches that Daft may run at once: the bound is per node."""

    state = {"now": 0, "peak": 0}

    @node(output_name="y", max_concurrency=5)
    async def slow(id: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return id * 10

    pipeline = Pipeline(nodes=[slow])
    result = pipeline.map(inputs=read_parquet(parquet_dataset), engine=DaftEngine())
    assert sorted(r["y"] for r in result) == [i * 10 for i in range(N_FILES * ROWS_PER_FILE)]
    assert 1 < state["peak"] <= 5


# -- 8. @stateful ------------------------------------------------------------------------------

STATEFUL_INITS = {"n": 0}


@stateful
class Scorer:
    def __init__(self, weight: int):
        STATEFUL_INITS["n"] += 1
        self.weight = weight

    def score(self, x: int) -> int:
        return x * self.weight


def test_stateful_constant_is_built_once_per_map():
    @node(output_name="score")
    def score(x: int, scorer: Scorer) -> int:
        return scorer.score(x)

    @node(output_name="shifted")
    def shift(score: int, scorer: Scorer) -> int:
        return score + scorer.weight

    STATEFUL_INITS["n"] = 0
    pipeline = Pipeline(nodes=[score, shift])
    scorer = Scorer(3)
    assert STATEFUL_INITS["n"] == 0  # built on first use, not here
    result = pipeline.map(
        inputs={"x": list(range(200)), "scorer": scorer}, map_over="x", engine=DaftEngine()
    )
    assert result == [{"score": 3 * x, "shifted": 3 * x + 3} for x in range(200)]
    assert STATEFUL_INITS["n"] == 1


def test_stateful_bound_on_the_pipeline_is_built_once():
    @node(output_name="score")
    def score(x: int, scorer: Scorer) -> int:
        return scorer.score(x)

    STATEFUL_INITS["n"] = 0
    pipeline = Pipeline(nodes=[score]).bind(scorer=Scorer(7))
    result = pipeline.map(inputs={"x": list(range(200))}, map_over="x", engine=DaftEngine())
    assert result == [{"score": 7 * x} for x in range(200)]
    assert STATEFUL_INITS["n"] == 1


# -- 9. unpicklable closures ------------------------------------------------------------------


def test_node_closing_over_a_lock_runs_on_the_native_runner():
    lock = threading.Lock()
    totals = {"n": 0}

    @node(output_name="y")
    def guarded(x: int) -> int:
        with lock:
            totals["n"] += 1
            return x * 3

    @node(output_name="z")
    def plus_one(y: int) -> int:
        return y + 1

    pipeline = Pipeline(nodes=[guarded, plus_one])
    inputs = {"x": list(range(30))}
    expected = pipeline.map(inputs=inputs, map_over="x", engine=local())
    assert pipeline.map(inputs=inputs, map_over="x", engine=DaftEngine()) == expected
    assert expected == [{"y": 3 * x, "z": 3 * x + 1} for x in range(30)]
    assert totals["n"] == 60


def test_unpicklable_constant_input_runs_on_the_native_runner():
    @node(output_name="y")
    def guarded(x: int, lock) -> int:
        with lock:
            return x * 3

    @node(output_name="z")
    async def later(y: int, lock) -> int:
        with lock:
            return y + 1

    pipeline = Pipeline(nodes=[guarded, later])
    inputs = {"x": list(range(10)), "lock": threading.Lock()}
    assert pipeline.map(inputs=inputs, map_over="x", engine=DaftEngine()) == [
        {"y": 3 * x, "z": 3 * x + 1} for x in range(10)
    ]


# -- 10. fused groups in explain() -------------------------------------------------------------


def test_explain_shows_one_udf_per_fused_group():
    @node(output_name="a")
    def f(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def g(a: int) -> int:
        return a * 2

    @node(output_name="c")
    def h(b: int) -> int:
        return b - 3

    pipeline = Pipeline(nodes=[f, g, h])
    frame = pipeline.map(
        inputs={"x": [1, 2]}, map_over="x", engine=DaftEngine(collect=False, native=False)
    )
    assert udf_names(frame) == ["f+g+h"]
    assert frame.to_pydict()["c"] == [1, 3]


def test_explain_async_node_splits_the_groups():
    @node(output_name="a")
    def f(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def g(a: int) -> int:
        return a * 2

    @node(output_name="c")
    async def fetch(b: int) -> int:
        await asyncio.sleep(0)
        return b + 100

    @node(output_name="d")
    def h(c: int) -> int:
        return c - 1

    @node(output_name="e")
    def i(d: int) -> int:
        return -d

    pipeline = Pipeline(nodes=[f, g, fetch, h, i])
    frame = pipeline.map(
        inputs={"x": [1, 2]}, map_over="x", engine=DaftEngine(collect=False, native=False)
    )
    assert udf_names(frame)[::-1] == ["f+g", "fetch", "h+i"]
    expected = pipeline.map(inputs={"x": [1, 2]}, map_over="x", engine=local())
    columns = frame.to_pydict()
    assert [{k: columns[k][n] for k in "abcde"} for n in range(2)] == expected


def test_explain_capsys(capsys):
    @node(output_name="a")
    def first_step(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def second_step(a: int) -> int:
        return a + 1

    frame = Pipeline(nodes=[first_step, second_step]).map(
        inputs={"x": [1]}, map_over="x", engine=DaftEngine(collect=False, native=False)
    )
    frame.explain(show_all=True)
    printed = capsys.readouterr().out
    assert "first_step+second_step" in printed


# -- 11. nested pipelines ---------------------------------------------------------------------


def _nested_pipeline() -> Pipeline:
    @node(output_name="norm")
    def normalize(word: str) -> str:
        return word.strip().lower()

    @node(output_name="size")
    def measure(norm: str, bonus: int) -> int:
        return len(norm) + bonus

    # mapped over each row's list of words; `bonus` is bound inside
    per_word = Pipeline(nodes=[normalize, measure], name="per_word").bind(bonus=1)
    words_step = per_word.as_node(
        input_mapping={"words": "word"},
        output_mapping={"size": "sizes", "norm": "norms"},
        map_over="words",
        name="per_word",
    )

    @node(output_name="total")
    def add(sizes: list[int]) -> int:
        return sum(sizes)

    @node(output_name="tag")
    def tag_of(total: int, prefix: str) -> str:
        return f"{prefix}{total}"

    # not mapped: used once per row, with renamed inputs and outputs
    summary = Pipeline(nodes=[add, tag_of], name="summary")
    summary_step = summary.as_node(
        input_mapping={"word_sizes": "sizes", "title": "prefix"},
        output_mapping={"tag": "label"},
        name="summary",
    )

    @node(output_name="word_sizes")
    def rename(sizes: list[int]) -> list[int]:
        return list(sizes)

    @node(output_name="report")
    def report(label: str, norms: list[str]) -> str:
        return f"{label}:{','.join(norms)}"

    return Pipeline(nodes=[words_step, rename, summary_step, report], name="outer")


NESTED_INPUTS = {
    "words": [[" Ab", "C "], [], ["dEf"], ["x", "YY", " zzz ", ""], ["q"]],
    "title": ["t1", "t2", "t3", "t4", "t5"],
}


def test_nested_pipelines_equal_the_local_engine():
    pipeline = _nested_pipeline()
    expected = pipeline.map(inputs=NESTED_INPUTS, map_over=["words", "title"], engine=local())
    reports = ["t15:ab,c", "t20:", "t34:def", "t410:x,yy,zzz,", "t52:q"]
    assert [r["report"] for r in expected] == reports
    assert [r["sizes"] for r in expected] == [[3, 2], [], [4], [2, 3, 4, 1], [2]]
    result = pipeline.map(inputs=NESTED_INPUTS, map_over=["words", "title"], engine=DaftEngine())
    assert result == expected


def test_nested_pipelines_run_equals_local():
    pipeline = _nested_pipeline()
    inputs = {"words": ["Hello", " w "], "title": "T"}
    expected = pipeline.run(inputs=inputs, engine=local())
    assert expected["report"] == "T8:hello,w"
    assert pipeline.run(inputs=inputs, engine=DaftEngine()) == expected


def test_nested_unmapped_with_mappings_and_bound_inputs():
    @node(output_name="scaled")
    def scale(value: int, factor: int) -> int:
        return value * factor

    @node(output_name="described")
    def describe(scaled: int, unit: str) -> str:
        return f"{scaled}{unit}"

    inner = Pipeline(nodes=[scale, describe], name="inner").bind(factor=4, unit="kg")
    step = inner.as_node(
        input_mapping={"amount": "value"},
        output_mapping={"described": "text", "scaled": "big"},
        name="inner",
    )

    @node(output_name="both")
    def both(text: str, big: int, amount: int) -> str:
        return f"{amount}->{big}={text}"

    pipeline = Pipeline(nodes=[step, both])
    inputs = {"amount": [1, 5, -2]}
    expected = pipeline.map(inputs=inputs, map_over="amount", engine=local())
    assert [r["both"] for r in expected] == ["1->4=4kg", "5->20=20kg", "-2->-8=-8kg"]
    assert pipeline.map(inputs=inputs, map_over="amount", engine=DaftEngine()) == expected
    frame = pipeline.map(inputs=inputs, map_over="amount", engine=DaftEngine(collect=False))
    assert frame.column_names[0] == "amount"
    assert sorted(frame.column_names[1:]) == ["big", "both", "text"]


def test_nested_mapped_over_list_column_from_a_table():
    @node(output_name="sq")
    def square(v: int) -> int:
        return v * v

    inner = Pipeline(nodes=[square], name="sq").as_node(
        input_mapping={"values": "v"}, output_mapping={"sq": "squares"}, map_over="values"
    )
    pipeline = Pipeline(nodes=[inner])
    lists = [[1, 2, 3], [], [4], [5, 6]]
    table = pa.table({"values": lists})
    expected = pipeline.map(inputs={"values": lists}, map_over="values", engine=local())
    assert [r["squares"] for r in expected] == [[1, 4, 9], [], [16], [25, 36]]
    assert pipeline.map(inputs=table, engine=DaftEngine()) == expected
    assert pipeline.map(inputs={"values": lists}, map_over="values", engine=DaftEngine()) == (
        expected
    )


# -- 12. run ----------------------------------------------------------------------------------


def test_run_with_async_batch_and_tuple_outputs_equals_local():
    @node(output_name=("q", "r"))
    def divide(a: int, b: int) -> tuple[int, int]:
        return divmod(a, b)

    @node(output_name="fetched")
    async def fetch(q: int) -> str:
        await asyncio.sleep(0)
        return f"q={q}"

    @node(output_name="doubled", batch=True)
    def double(r):
        return pc.multiply(r, 2)

    @node(output_name="box")
    def boxed(fetched: str, doubled: int) -> Box:
        return Box(doubled, [fetched])

    pipeline = Pipeline(nodes=[divide, fetch, double, boxed])
    inputs = {"a": 17, "b": 5}
    expected = pipeline.run(inputs=inputs, engine=local())
    assert expected == {"q": 3, "r": 2, "fetched": "q=3", "doubled": 4, "box": Box(4, ["q=3"])}
    assert pipeline.run(inputs=inputs, engine=DaftEngine()) == expected
    assert pipeline.run(inputs=inputs, output_name="doubled", engine=DaftEngine()) == {"doubled": 4}


# -- 13. nodes reading only constants ---------------------------------------------------------


def _model_pipeline(loads: dict) -> Pipeline:
    @node(output_name="model")
    def load_model(model_name: str) -> dict:
        loads["n"] += 1
        return {"name": model_name, "scale": len(model_name)}

    @node(output_name="predictions")
    def predict(x: int, model: dict) -> int:
        return x * model["scale"]

    return Pipeline(nodes=[load_model, predict])


def test_node_reading_only_constants_runs_once_per_map():
    loads = {"n": 0}
    pipeline = _model_pipeline(loads)
    inputs = {"x": list(range(50)), "model_name": "tiny"}
    expected = [{"predictions": 4 * x} for x in range(50)]
    assert pipeline.map(inputs, map_over="x", output_name="predictions", engine=local()) == (
        expected
    )

    loads["n"] = 0
    result = pipeline.map(inputs, map_over="x", output_name="predictions", engine=DaftEngine())
    assert result == expected
    assert loads["n"] == 1

    loads["n"] = 0
    frame = pipeline.map(
        inputs, map_over="x", output_name="predictions", engine=DaftEngine(collect=False)
    )
    assert frame.to_pydict()["predictions"] == [4 * x for x in range(50)]
    assert loads["n"] == 1


def test_constant_only_outputs_in_map_results():
    """Outputs of driver-side nodes are returned with every item, like the local engine."""

    @node(output_name="size")
    def size_of(model_name: str) -> int:  # an Arrow literal
        return len(model_name)

    loads = {"n": 0}
    pipeline = Pipeline(nodes=[*_model_pipeline(loads).nodes, size_of])
    inputs = {"x": [1, 2, 3], "model_name": "tiny"}
    expected = pipeline.map(inputs, map_over="x", engine=local())
    assert expected[0] == {"model": {"name": "tiny", "scale": 4}, "predictions": 4, "size": 4}
    loads["n"] = 0
    assert pipeline.map(inputs, map_over="x", engine=DaftEngine()) == expected
    assert loads["n"] == 1


def test_numpy_array_hint_becomes_a_tensor_column_and_round_trips():
    import numpy.typing as npt

    @node(output_name="vector")
    def embed(x: int) -> npt.NDArray[np.float32]:
        return np.full((3,), x, dtype=np.float32)

    pipeline = Pipeline(nodes=[embed])
    inputs = {"x": [1, 2]}
    frame = pipeline.map(inputs=inputs, map_over="x", engine=DaftEngine(collect=False))
    assert frame.schema()["vector"].dtype == DataType.tensor(DataType.float32())
    daft_rows = pipeline.map(inputs=inputs, map_over="x", engine=DaftEngine())
    local_rows = pipeline.map(inputs=inputs, map_over="x", engine=HypernodesEngine())
    for got, want in zip(daft_rows, local_rows, strict=True):
        assert got["vector"].dtype == np.float32
        np.testing.assert_array_equal(got["vector"], want["vector"])


def test_identical_calls_of_concurrent_batches_are_made_once():
    """Two batches of one async node awaited together on one loop, as Daft runs a worker's
    async batches: a call one batch is making (same cache key) is waited for by the other,
    not made again; each batch gets every row's result."""
    from hypernodes_daft import MemoryCache
    from hypernodes_daft.engines.daft.column_call import Setup
    from hypernodes_daft.engines.daft.groups import plan_groups
    from hypernodes_daft.engines.daft.plan_runner import make_runner, step_lineages
    from hypernodes_daft.runtime.node_call import Services

    calls = []

    @node(output_name="y")
    async def slow_double(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.05)
        return 2 * x

    plan = Pipeline(nodes=[slow_double]).plan(inputs={"x": [1]}, map_over="x").item
    setup = Setup(services=Services(cache=MemoryCache()))
    (group,) = plan_groups(plan, {})
    runner = make_runner(group, {}, setup, step_lineages(plan, setup))
    first, second = {"x": [1, 2, 3]}, {"x": [3, 2, 4]}

    async def both() -> None:
        await asyncio.gather(runner.acompute(first, 3), runner.acompute(second, 3))

    asyncio.run(both())
    assert first["y"] == [2, 4, 6] and second["y"] == [6, 4, 8]
    assert sorted(calls) == [1, 2, 3, 4]


def test_identical_calls_of_sync_batches_on_two_threads_are_made_once():
    """Two batches of one sync node on two threads, as Daft's native runner runs them: a
    row whose call the other batch is making waits for it instead of calling again."""
    from hypernodes_daft import MemoryCache
    from hypernodes_daft.engines.daft.column_call import Setup
    from hypernodes_daft.engines.daft.groups import plan_groups
    from hypernodes_daft.engines.daft.plan_runner import make_runner, step_lineages
    from hypernodes_daft.runtime.node_call import Services

    calls, started = [], threading.Barrier(2)

    @node(output_name="y")
    def slow_double(x: int) -> int:
        calls.append(x)
        time.sleep(0.2)
        return 2 * x

    plan = Pipeline(nodes=[slow_double]).plan(inputs={"x": [1]}, map_over="x").item
    setup = Setup(services=Services(cache=MemoryCache()))
    (group,) = plan_groups(plan, {})
    runner = make_runner(group, {}, setup, step_lineages(plan, setup))
    first, second = {"x": [1, 2, 3]}, {"x": [4, 2, 1]}

    def compute(columns: dict) -> None:
        started.wait()
        runner.compute(columns, 3)

    threads = [threading.Thread(target=compute, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first["y"] == [2, 4, 6] and second["y"] == [8, 4, 2]
    assert sorted(calls) == [1, 2, 3, 4]


def test_a_call_failing_in_one_batch_fails_the_rows_waiting_for_it_in_another():
    from hypernodes_daft import MemoryCache
    from hypernodes_daft.engines.daft.column_call import ERROR, Setup
    from hypernodes_daft.engines.daft.groups import plan_groups
    from hypernodes_daft.engines.daft.plan_runner import make_runner, step_lineages
    from hypernodes_daft.runtime.node_call import Services

    calls = []

    @node(output_name="y")
    async def slow_inverse(x: int) -> float:
        calls.append(x)
        await asyncio.sleep(0.05)
        return 1 / x

    plan = Pipeline(nodes=[slow_inverse]).plan(inputs={"x": [1]}, map_over="x").item
    services = Services(cache=MemoryCache(), on_error="collect")
    setup = Setup(services=services, tolerant=True)
    (group,) = plan_groups(plan, {})
    runner = make_runner(group, {}, setup, step_lineages(plan, setup))
    first, second = {"x": [0, 1], ERROR: [None, None]}, {"x": [2, 0], ERROR: [None, None]}

    async def both() -> None:
        await asyncio.gather(runner.acompute(first, 2), runner.acompute(second, 2))

    asyncio.run(both())
    assert sorted(calls) == [0, 1, 2]  # x=0 once, though both batches have it
    assert first["y"][1] == 1.0 and second["y"][0] == 0.5
    for failed in (first[ERROR][0], second[ERROR][1]):
        assert isinstance(failed.original, ZeroDivisionError) and failed.inputs == "x=0"
