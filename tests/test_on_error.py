"""on_error: a failing item stops the map ("raise"), is recorded ("collect") or left out
("skip"), per node or per call, with the same results on every engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hypernodes_daft import (
    DaftEngine,
    DiskCache,
    ErrorRecord,
    ExecutionError,
    HypernodesEngine,
    MetricsCallback,
    Pipeline,
    PipelineCallback,
    PlanningError,
    node,
)

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "threaded_nodes": lambda: HypernodesEngine(node_executor="threaded"),
    "threaded_map": lambda: HypernodesEngine(map_executor="threaded", max_workers=4),
    "async_map": lambda: HypernodesEngine(map_executor="async", max_concurrency=3),
    "async_all": lambda: HypernodesEngine(node_executor="async", map_executor="async"),
    "parallel_map": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(),
    "daft_partitions": lambda: DaftEngine(partitions=2, max_concurrency=2),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: Any) -> Any:
    made = ENGINES[request.param]()
    yield made
    if hasattr(made, "shutdown"):
        made.shutdown()


@node(output_name="inverse")
def invert(x: int) -> float:
    return 1 / x


@node(output_name="shifted")
async def shift(inverse: float) -> float:
    if inverse is None:  # would show that a node ran for an item that already failed
        raise AssertionError("downstream of a failed item")
    if inverse == 0.5:
        raise ValueError("no halves")
    return inverse + 1


@node(output_name="label")
def describe(shifted: float, x: int) -> str:
    return f"{x}:{shifted}"


PIPELINE = Pipeline(nodes=[invert, shift, describe])
XS = [1, 0, 2, 4, 0]


def record(index: int, node: str, error_type: str, message: str, inputs: str) -> ErrorRecord:
    return ErrorRecord(index, node, node, error_type, message, 1, inputs, "collect")


EXPECTED = [
    {"inverse": 1.0, "shifted": 2.0, "label": "1:2.0"},
    {"_error": record(1, "invert", "ZeroDivisionError", "division by zero", "x=0")},
    {"_error": record(2, "shift", "ValueError", "no halves", "inverse=0.5")},
    {"inverse": 0.25, "shifted": 1.25, "label": "4:1.25"},
    {"_error": record(4, "invert", "ZeroDivisionError", "division by zero", "x=0")},
]


def test_collect_keeps_every_item_and_records_each_failure(engine: Any) -> None:
    results = PIPELINE.map(inputs={"x": XS}, map_over="x", engine=engine, on_error="collect")
    assert results == EXPECTED
    assert results.errors == [e["_error"] for e in EXPECTED if "_error" in e]
    assert results.ok == [EXPECTED[0], EXPECTED[3]]
    assert results.failed_inputs() == {"x": [0, 2, 0]}


def test_skip_leaves_failed_items_out_but_lists_them(engine: Any) -> None:
    results = PIPELINE.map(inputs={"x": XS}, map_over="x", engine=engine, on_error="skip")
    assert results == [EXPECTED[0], EXPECTED[3]]
    assert [(r.index, r.node, r.on_error) for r in results.errors] == [
        (1, "invert", "skip"),
        (2, "shift", "skip"),
        (4, "invert", "skip"),
    ]
    streamed = PIPELINE.iter_map(inputs={"x": XS}, map_over="x", engine=engine, on_error="skip")
    assert sorted(streamed, key=lambda entry: entry[0]) == [(0, EXPECTED[0]), (3, EXPECTED[3])]


def test_raise_is_the_default_and_names_the_item(engine: Any) -> None:
    with pytest.raises(ZeroDivisionError) as caught:
        PIPELINE.map(inputs={"x": XS}, map_over="x", engine=engine)
    assert isinstance(caught.value, ExecutionError) and caught.value.node_name == "invert"
    assert caught.value.on_error == "raise"


@pytest.mark.parametrize("name", ["threaded_map", "parallel_map"])
def test_a_concurrent_map_raises_the_failure_a_sequential_run_meets_first(name: str) -> None:
    @node(output_name="y")
    def fails(x: int) -> int:
        time.sleep(0.3 if x == 0 else 0.0)  # item 0 fails last, item 5 first
        if x in (0, 5):
            raise KeyError(x)
        return x

    with ENGINES[name]() as engine:
        with pytest.raises(KeyError) as caught:
            Pipeline(nodes=[fails]).map(inputs={"x": list(range(8))}, map_over="x", engine=engine)
    assert caught.value.item_index == 0


def test_a_nodes_own_policy_wins_over_the_calls(engine: Any) -> None:
    tolerant = node(output_name="inverse", on_error="collect")(invert.func)
    strict = node(output_name="shifted", on_error="raise")(shift.func)
    results = Pipeline(nodes=[tolerant, shift]).map(
        inputs={"x": [1, 0]}, map_over="x", engine=engine
    )
    assert results[1]["_error"].node == "invert"
    with pytest.raises(ValueError, match="no halves"):
        Pipeline(nodes=[invert, strict]).map(
            inputs={"x": [1, 2]}, map_over="x", engine=engine, on_error="collect"
        )


def test_a_failure_inside_a_mapped_nested_pipeline_is_located(engine: Any) -> None:
    @node(output_name="length")
    def measure(word: str) -> int:
        if word == "bad":
            raise KeyError(word)
        return len(word)

    inner = Pipeline(nodes=[measure], name="words")
    lengths = inner.as_node(
        input_mapping={"words": "word"}, output_mapping={"length": "lengths"}, map_over="words"
    )

    @node(output_name="total")
    def add_up(lengths: list[int]) -> int:
        return sum(lengths)

    outer = Pipeline(nodes=[lengths, add_up])
    words = [["a", "bb"], ["c", "bad", "dd"]]
    results = outer.map(
        inputs={"words": words}, map_over="words", engine=engine, on_error="collect"
    )
    assert results[0] == {"lengths": [1, 2], "total": 3}
    failure = results[1]["_error"]
    assert (failure.index, failure.node, failure.path) == (1, "measure", "words[1].measure")
    assert (failure.error_type, failure.inputs) == ("KeyError", "word='bad'")


def test_a_failure_over_shared_inputs_fails_every_item(engine: Any) -> None:
    @node(output_name="rate")
    def rate_of(scale: int) -> float:
        return 1 / scale  # reads only a shared input: DaftEngine runs it once, up front

    @node(output_name="scaled")
    def apply(x: int, rate: float) -> float:
        return x * rate

    pipeline = Pipeline(nodes=[rate_of, apply])
    inputs = {"x": [1, 2, 3], "scale": 0}
    results = pipeline.map(inputs=inputs, map_over="x", engine=engine, on_error="collect")
    assert [r.node for r in results.errors] == ["rate_of"] * 3
    assert [r.index for r in results.errors] == [0, 1, 2]


def test_a_nested_failure_over_the_inner_pipelines_bound_inputs_fails_every_item(
    engine: Any,
) -> None:
    @node(output_name="rate")
    def rate_of(scale: int) -> float:
        return 1 / scale  # reads only the inner pipeline's bound input: runs once on Daft

    @node(output_name="scaled")
    def apply(x: int, rate: float) -> float:
        return x * rate

    inner = Pipeline(nodes=[rate_of, apply], name="scaling").bind(scale=0)
    once = Pipeline(nodes=[inner.as_node()])
    results = once.map(inputs={"x": [1, 2]}, map_over="x", engine=engine, on_error="collect")
    assert [(r.index, r.path) for r in results.errors] == [(0, "scaling.rate_of")] + [
        (1, "scaling.rate_of")
    ]
    per_x = inner.as_node(
        input_mapping={"xs": "x"}, output_mapping={"scaled": "all"}, map_over="xs"
    )
    mapped = Pipeline(nodes=[per_x])
    results = mapped.map(
        inputs={"xs": [[1, 2], [3]]}, map_over="xs", engine=engine, on_error="collect"
    )
    assert [(r.index, r.path) for r in results.errors] == [(0, "scaling[0].rate_of")] + [
        (1, "scaling[0].rate_of")
    ]


def test_attempts_count_the_retries() -> None:
    @node(output_name="y", retries=2, backoff=0.001)
    def always_fails(x: int) -> int:
        raise ConnectionError(f"down for {x}")

    for engine in (HypernodesEngine(), DaftEngine()):
        results = Pipeline(nodes=[always_fails]).map(
            inputs={"x": [7]}, map_over="x", engine=engine, on_error="collect"
        )
        assert results.errors[0].attempts == 3
        assert results.errors[0].message == "down for 7"


def fails_once(marks: Path) -> Any:
    """A node that fails the first time it sees an odd x, then succeeds (marks on disk, so
    worker processes share them)."""

    @node(output_name="y")
    def flaky(x: int) -> int:
        mark = marks / str(x)
        if x % 2 and not mark.exists():
            mark.touch()
            raise TimeoutError(f"slow for {x}")
        return 10 * x

    return flaky


def test_retry_reruns_only_the_failed_items(engine: Any, tmp_path: Path) -> None:
    pipeline = Pipeline(nodes=[fails_once(tmp_path)])
    results = pipeline.map(
        inputs={"x": [1, 2, 3, 4]}, map_over="x", engine=engine, on_error="collect"
    )
    assert [r.index for r in results.errors] == [0, 2]
    assert results.failed_inputs() == {"x": [1, 3]}
    again = results.retry()
    assert again == [{"y": 10}, {"y": 20}, {"y": 30}, {"y": 40}] and again.errors == []
    assert results.errors and again.retry() is again  # nothing left to retry


def test_failed_inputs_of_a_product_map_are_zip_lists(tmp_path: Path) -> None:
    @node(output_name="ratio")
    def divide(a: int, b: int) -> float:
        return a / b

    results = Pipeline(nodes=[divide]).map(
        inputs={"a": [1, 2], "b": [0, 1]},
        map_over=["a", "b"],
        map_mode="product",
        on_error="collect",
    )
    assert [r.index for r in results.errors] == [0, 2]
    assert results.failed_inputs() == {"a": [1, 2], "b": [0, 0]}


def test_failures_are_not_cached_and_successes_are(engine: Any, tmp_path: Path) -> None:
    pipeline = Pipeline(nodes=[fails_once(tmp_path / "marks")], cache=DiskCache(tmp_path / "c"))
    (tmp_path / "marks").mkdir()
    metrics = MetricsCallback()
    first = pipeline.map(inputs={"x": [1, 2, 3]}, map_over="x", engine=engine, on_error="collect")
    assert [r.index for r in first.errors] == [0, 2]
    pipeline.callbacks = [metrics]
    second = pipeline.map(inputs={"x": [1, 2, 3]}, map_over="x", engine=engine, on_error="collect")
    assert second == [{"y": 10}, {"y": 20}, {"y": 30}]
    summary = metrics.summary()["flaky"]
    assert (summary["calls"], summary["cached"]) == (2, 1)  # only the failed items ran again


def test_callbacks_see_each_failure_and_every_item_end(engine: Any) -> None:
    metrics = MetricsCallback()
    pipeline = Pipeline(nodes=[invert, shift, describe], callbacks=[metrics])
    pipeline.map(inputs={"x": XS}, map_over="x", engine=engine, on_error="collect")
    summary = metrics.summary()
    assert summary["invert"]["errors"] == 2 and summary["shift"]["errors"] == 1
    assert summary["describe"]["calls"] == 2


def test_metrics_count_the_retries(engine: Any, tmp_path: Path) -> None:
    retried = node(output_name="y", retries=2, backoff=0.001)(fails_once(tmp_path).func)
    metrics = MetricsCallback()
    pipeline = Pipeline(nodes=[retried], callbacks=[metrics])
    results = pipeline.map(inputs={"x": [1, 2, 3, 4, 5]}, map_over="x", engine=engine)
    assert results == [{"y": 10 * x} for x in range(1, 6)]
    assert metrics.summary()["flaky"]["retries"] == 3  # the odd items failed once each


def test_plain_callbacks_see_on_error_for_each_failed_call(engine: Any) -> None:
    class Hooks(PipelineCallback):
        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []

        def on_node_end(self, node_id, outputs, duration, ctx):
            self.seen.append(("end", node_id))

        def on_error(self, node_id, error, ctx):
            self.seen.append(("error", node_id))

    hooks = Hooks()
    pipeline = Pipeline(nodes=[invert, shift, describe], callbacks=[hooks])
    pipeline.map(inputs={"x": XS}, map_over="x", engine=engine, on_error="collect")
    counts = {kind: sorted(n for k, n in hooks.seen if k == kind) for kind in ("end", "error")}
    assert counts["error"] == ["invert", "invert", "shift"]
    assert counts["end"] == ["describe"] * 2 + ["invert"] * 3 + ["shift"] * 2


def test_run_returns_the_record_instead_of_raising(engine: Any) -> None:
    outputs = PIPELINE.run(inputs={"x": 0}, engine=engine, on_error="collect")
    assert outputs == {
        "_error": ErrorRecord(
            None, "invert", "invert", "ZeroDivisionError", "division by zero", 1, "x=0", "collect"
        )
    }


def test_a_lazy_daft_frame_carries_the_error_column() -> None:
    frame = PIPELINE.map(
        inputs={"x": [1, 0]}, map_over="x", engine=DaftEngine(collect=False), on_error="collect"
    )
    columns = frame.to_pydict()
    assert columns["label"] == ["1:2.0", None]
    assert columns["_error"][0] is None
    assert columns["_error"][1]["node"] == "invert"
    assert columns["_error"][1]["error_type"] == "ZeroDivisionError"


def test_a_lazy_daft_frame_leaves_skipped_rows_out() -> None:
    frame = PIPELINE.map(
        inputs={"x": [1, 0, 4]}, map_over="x", engine=DaftEngine(collect=False), on_error="skip"
    )
    columns = frame.to_pydict()
    assert columns["x"] == [1, 4] and columns["_error"] == [None, None]


def test_bad_policies_and_the_reserved_name_are_refused() -> None:
    with pytest.raises(PlanningError, match="pipeline 'pipeline': on_error must be one of"):
        PIPELINE.map(inputs={"x": [1]}, map_over="x", on_error="ignore")

    def f(x: int) -> int:
        return x

    with pytest.raises(PlanningError, match="node 'f': on_error must be one of"):
        node(output_name="y", on_error="retry")(f)
    with pytest.raises(ValueError, match="'_error' is reserved"):
        node(output_name="_error")(invert.func)
