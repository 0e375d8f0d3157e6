"""The engine guide's examples that need no network, on the sequential engines and DaftEngine:
a diamond of sleeping nodes, a CPU-bound fib map, a NumPy matmul map.

Sizes are reduced (fib 10..15 instead of 35..38, 4x4 matrices instead of 1000x1000).
"""

from __future__ import annotations

import time

import pytest

from hypernodes_daft import HypernodesEngine, Pipeline, node
from hypernodes_daft.engines import DaftEngine  # the guide imports it from engines

SEQUENTIAL_ENGINES = [
    pytest.param(lambda: HypernodesEngine(), id="default"),
    pytest.param(lambda: HypernodesEngine(node_executor="sequential"), id="sequential"),
    pytest.param(lambda: DaftEngine(collect=True), id="daft"),
]


@pytest.fixture(params=SEQUENTIAL_ENGINES)
def engine(request):
    return request.param()


def test_node_level_dag_example(engine):
    """load_data -> (compute_a || compute_b) -> combine, each node sleeping 0.1 s."""

    @node(output_name="data")
    def load_data() -> list:
        time.sleep(0.1)
        return [1, 2, 3, 4, 5]

    @node(output_name="stat_a")
    def compute_a(data: list) -> int:
        time.sleep(0.1)
        return sum(data)

    @node(output_name="stat_b")
    def compute_b(data: list) -> int:
        time.sleep(0.1)
        return max(data)

    @node(output_name="result")
    def combine(stat_a: int, stat_b: int) -> dict:
        return {"sum": stat_a, "max": stat_b}

    pipeline = Pipeline(nodes=[load_data, compute_a, compute_b, combine], engine=engine)

    start = time.perf_counter()
    result = pipeline.run(inputs={})
    elapsed = time.perf_counter() - start

    assert result == {
        "data": [1, 2, 3, 4, 5],
        "stat_a": 15,
        "stat_b": 5,
        "result": {"sum": 15, "max": 5},
    }
    assert elapsed >= 0.3  # sequential: the three sleeping nodes run one after another
    assert pipeline.run(inputs={}, output_name="result") == {"result": {"sum": 15, "max": 5}}


def test_cpu_intensive_map_example(engine):
    @node(output_name="result")
    def cpu_intensive(n: int) -> int:
        """Pure Python - benefits from multiprocessing"""

        def fib(x):
            return x if x < 2 else fib(x - 1) + fib(x - 2)

        return fib(n)

    pipeline = Pipeline(nodes=[cpu_intensive], engine=engine)
    results = pipeline.map(inputs={"n": [10, 11, 12, 13, 10, 11, 12, 13]}, map_over="n")
    assert results == [{"result": r} for r in [55, 89, 144, 233, 55, 89, 144, 233]]


def test_numpy_matmul_map_example(engine):
    np = pytest.importorskip("numpy")

    @node(output_name="matrix")
    def compute(size: int) -> np.ndarray:
        """Numpy releases GIL - benefits from threading"""
        return np.random.rand(size, size) @ np.random.rand(size, size)

    pipeline = Pipeline(nodes=[compute], engine=engine)
    results = pipeline.map(inputs={"size": [4] * 20}, map_over="size")
    assert len(results) == 20
    for item in results:
        assert list(item) == ["matrix"]
        assert item["matrix"].shape == (4, 4)
        assert np.all(item["matrix"] >= 0)
