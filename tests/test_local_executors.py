"""What the local executors promise beyond equal results (tests/test_scenarios.py has those)."""

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hypernodes_daft import ExecutionError, HypernodesEngine, Pipeline, PlanningError, node


class InFlight:
    """Counts calls running at once."""

    def __init__(self):
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_async_map_bounds_items_in_flight_and_uses_one_loop():
    flight, loops = InFlight(), set()

    @node(output_name="y")
    async def slow(x: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        with flight:
            await asyncio.sleep(0.01)
        return x

    pipeline = Pipeline(nodes=[slow])
    engine = HypernodesEngine(map_executor="async", max_concurrency=7)
    for _ in range(2):
        results = pipeline.map(inputs={"x": list(range(60))}, map_over="x", engine=engine)
        assert [r["y"] for r in results] == list(range(60))
    assert flight.peak == 7
    assert len(loops) == 1


def test_sync_nodes_under_async_map_overlap_in_threads():
    flight = InFlight()
    barrier = threading.Barrier(5, timeout=5)

    @node(output_name="y")
    def blocking(x: int) -> int:
        with flight:
            barrier.wait()  # only passes if 5 calls are in flight together
        return x * 2

    with HypernodesEngine(map_executor="async", max_concurrency=5) as engine:
        results = Pipeline(nodes=[blocking]).map(
            inputs={"x": list(range(10))}, map_over="x", engine=engine
        )
    assert [r["y"] for r in results] == [x * 2 for x in range(10)]
    assert flight.peak == 5


@pytest.mark.parametrize("node_executor", ["threaded", "async"])
def test_independent_nodes_of_one_item_run_together(node_executor):
    both_started = threading.Barrier(2, timeout=5)

    @node(output_name="data")
    def load() -> list[int]:
        return [1, 2, 3]

    @node(output_name="total")
    def compute_a(data: list[int]) -> int:
        both_started.wait()  # deadlocks (then times out) if compute_b is not running too
        return sum(data)

    @node(output_name="biggest")
    def compute_b(data: list[int]) -> int:
        both_started.wait()
        return max(data)

    @node(output_name="result")
    def combine(total: int, biggest: int) -> dict:
        return {"sum": total, "max": biggest}

    pipeline = Pipeline(nodes=[load, compute_a, compute_b, combine])
    with HypernodesEngine(node_executor=node_executor) as engine:
        assert pipeline.run(engine=engine)["result"] == {"sum": 6, "max": 3}


@pytest.mark.parametrize("map_executor", ["sequential", "threaded", "async", "parallel"])
def test_a_failing_item_is_named_on_every_executor(map_executor):
    @node(output_name="y")
    def check(x: int) -> int:
        if x == 3:
            raise KeyError(f"bad {x}")
        return x

    with HypernodesEngine(map_executor=map_executor, max_workers=2) as engine:
        with pytest.raises(KeyError) as info:
            Pipeline(nodes=[check]).map(inputs={"x": list(range(6))}, map_over="x", engine=engine)
    assert isinstance(info.value, ExecutionError)
    assert info.value.item_index == 3 and info.value.node_name == "check"


def test_parallel_pool_is_started_once_and_reused():
    @node(output_name="pid")
    def worker_pid(x: int) -> int:
        return os.getpid()

    pipeline = Pipeline(nodes=[worker_pid])
    inputs = {"x": list(range(8))}
    with HypernodesEngine(map_executor="parallel", max_workers=2) as engine:
        first = pipeline.map(inputs=inputs, map_over="x", engine=engine)
        pool = engine._owned["map"]
        second = pipeline.map(inputs=inputs, map_over="x", engine=engine)
        assert engine._owned["map"] is pool
        pids = {r["pid"] for r in first + second}
        assert os.getpid() not in pids and pids <= set(pool._processes)
    assert engine._owned == {}  # released by the with block


def test_parallel_runs_lambdas_and_closures():
    offset = 10
    add = node(output_name="y")(lambda x: x + offset)
    with HypernodesEngine(map_executor="parallel", max_workers=2) as engine:
        results = Pipeline(nodes=[add]).map(inputs={"x": [1, 2]}, map_over="x", engine=engine)
    assert results == [{"y": 11}, {"y": 12}]


def test_parallel_refuses_unpicklable_input_before_sending_work(tmp_path):
    @node(output_name="y")
    def use_lock(x: int, lock, marker_dir: str) -> int:
        (Path(marker_dir) / str(x)).touch()  # a trace of any item that ran
        return x

    inputs = {"x": [1, 2], "lock": threading.Lock(), "marker_dir": str(tmp_path)}
    with HypernodesEngine(map_executor="parallel", max_workers=2) as engine:
        with pytest.raises(PlanningError, match=r"input 'lock'.*use_lock.*cannot be sent"):
            Pipeline(nodes=[use_lock]).map(inputs=inputs, map_over="x", engine=engine)
    assert list(tmp_path.iterdir()) == []


def test_parallel_refuses_unpicklable_node_naming_it():
    lock = threading.Lock()

    @node(output_name="y")
    def guarded(x: int) -> int:
        with lock:
            return x

    with HypernodesEngine(map_executor="parallel", max_workers=2) as engine:
        with pytest.raises(PlanningError, match=r"node 'guarded' cannot be sent"):
            Pipeline(nodes=[guarded]).map(inputs={"x": [1]}, map_over="x", engine=engine)


def test_user_owned_executor_is_used_and_never_shut_down():
    pool = ThreadPoolExecutor(2, thread_name_prefix="mine")
    names = []

    @node(output_name="y")
    def where(x: int) -> int:
        names.append(threading.current_thread().name)
        return x

    with HypernodesEngine(map_executor=pool) as engine:
        Pipeline(nodes=[where]).map(inputs={"x": [1, 2, 3]}, map_over="x", engine=engine)
    assert names and all(n.startswith("mine") for n in names)
    assert pool.submit(lambda: 42).result() == 42  # still usable
    pool.shutdown()


def test_arun_and_amap_for_async_callers():
    @node(output_name="y")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    pipeline = Pipeline(nodes=[double], engine=HypernodesEngine(map_executor="async"))

    async def main():
        one = await pipeline.arun(inputs={"x": 2})
        many = await pipeline.amap(inputs={"x": [1, 2]}, map_over="x")
        return one, many

    assert asyncio.run(main()) == ({"y": 4}, [{"y": 2}, {"y": 4}])


def test_async_map_called_inside_a_running_loop():  # as in a Jupyter cell
    @node(output_name="y")
    async def double(x: int) -> int:
        return 2 * x

    async def cell():
        engine = HypernodesEngine(map_executor="async")
        return Pipeline(nodes=[double]).map(inputs={"x": [1, 2]}, map_over="x", engine=engine)

    assert asyncio.run(cell()) == [{"y": 2}, {"y": 4}]


def test_engine_arguments_are_checked():
    with pytest.raises(ValueError, match="map_executor 'gpu'"):
        HypernodesEngine(map_executor="gpu")
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        HypernodesEngine(max_concurrency=0)
    from concurrent.futures import ProcessPoolExecutor

    with pytest.raises(ValueError, match="node_executor cannot be a process pool"):
        HypernodesEngine(node_executor=ProcessPoolExecutor(1))


def test_quick_sync_nodes_move_onto_the_loop_and_slow_ones_stay_in_threads():
    threads = {"quick": [], "slow": []}

    @node(output_name="a")
    def quick(x: int) -> int:
        threads["quick"].append(threading.current_thread().name)
        return x

    @node(output_name="b")
    async def hop(a: int) -> int:  # an async node between them keeps two separate chains
        return a

    @node(output_name="c")
    def slow(b: int) -> int:
        threads["slow"].append(threading.current_thread().name)
        time.sleep(0.003)
        return b

    engine = HypernodesEngine(map_executor="async", max_concurrency=4)
    results = Pipeline(nodes=[quick, hop, slow]).map(
        inputs={"x": list(range(40))}, map_over="x", engine=engine
    )
    assert [r["c"] for r in results] == list(range(40))
    assert threads["quick"][-1] == "hypernodes-event-loop"  # proved quick, then inline
    assert all(name.startswith("hypernodes-io") for name in threads["slow"])


def _peak_recorder():
    """A counter of calls in flight and its peak, safe across threads."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def enter() -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])

    def leave() -> None:
        with lock:
            state["now"] -= 1

    return state, enter, leave


def test_node_max_concurrency_bounds_an_async_node_across_items():
    state, enter, leave = _peak_recorder()

    @node(output_name="y", max_concurrency=3)
    async def slow(x: int) -> int:
        enter()
        await asyncio.sleep(0.01)
        leave()
        return x

    engine = HypernodesEngine(map_executor="async", max_concurrency=100)
    result = Pipeline(nodes=[slow]).map(inputs={"x": list(range(30))}, map_over="x", engine=engine)
    assert result == [{"y": x} for x in range(30)]
    assert 1 < state["peak"] <= 3


def test_node_max_concurrency_bounds_a_sync_node_on_threads():
    state, enter, leave = _peak_recorder()

    @node(output_name="y", max_concurrency=2)
    def slow(x: int) -> int:
        enter()
        time.sleep(0.01)
        leave()
        return x

    with HypernodesEngine(map_executor="threaded", max_workers=8) as engine:
        pipeline = Pipeline(nodes=[slow])
        result = pipeline.map(inputs={"x": list(range(24))}, map_over="x", engine=engine)
    assert result == [{"y": x} for x in range(24)]
    assert state["peak"] == 2
