"""Caching per node and per item, the same on every engine (issue 7)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node, stateful
from hypernodes_daft.cache import DiskCache, MemoryCache, UnhashableInput, hash_value

ENGINES = {
    "sequential": lambda cache: HypernodesEngine(cache=cache),
    "threaded": lambda cache: HypernodesEngine(node_executor="threaded", cache=cache),
    "async": lambda cache: HypernodesEngine(map_executor="async", cache=cache),
    "parallel": lambda cache: HypernodesEngine(map_executor="parallel", max_workers=2, cache=cache),
    "daft": lambda cache: DaftEngine(cache=cache),
}


def counting_pipeline(calls_file: Path) -> Pipeline:
    """Three nodes; every call appends the node's name to `calls_file` (works across
    processes, so the parallel executor's calls are counted too)."""

    def record(name: str) -> None:
        with open(calls_file, "a") as log:
            log.write(name + "\n")

    @node(output_name="a")
    def first(x: int) -> int:
        record("first")
        return x + 1

    @node(output_name="b")
    def second(a: int) -> int:
        record("second")
        return a * 2

    @node(output_name="c")
    def third(b: int, k: int) -> int:
        record("third")
        return b - k

    return Pipeline(nodes=[first, second, third])


def calls(calls_file: Path) -> list[str]:
    return calls_file.read_text().split() if calls_file.exists() else []


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_second_map_with_a_disk_cache_calls_no_node(name, tmp_path):
    calls_file = tmp_path / "calls.txt"
    pipeline = counting_pipeline(calls_file)
    engine = ENGINES[name](DiskCache(tmp_path / "cache"))
    inputs = {"x": [1, 2, 3, 4], "k": 3}
    expected = [{"a": x + 1, "b": 2 * (x + 1), "c": 2 * (x + 1) - 3} for x in inputs["x"]]
    try:
        assert pipeline.map(inputs=inputs, map_over="x", engine=engine) == expected
        assert len(calls(calls_file)) == 12
        assert pipeline.map(inputs=inputs, map_over="x", engine=engine) == expected
        assert len(calls(calls_file)) == 12  # nothing ran again
        changed = {"x": [1, 2, 3, 4, 5], "k": 3}  # one new item: only its three calls
        pipeline.map(inputs=changed, map_over="x", engine=engine)
        assert len(calls(calls_file)) == 15
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()


@pytest.mark.parametrize("name", ["sequential", "daft"])
def test_run_is_cached_too(name, tmp_path):
    calls_file = tmp_path / "calls.txt"
    pipeline = counting_pipeline(calls_file)
    engine = ENGINES[name](MemoryCache())
    first = pipeline.run(inputs={"x": 1, "k": 0}, engine=engine)
    second = pipeline.run(inputs={"x": 1, "k": 0}, engine=engine)
    assert first == second == {"a": 2, "b": 4, "c": 4}
    assert len(calls(calls_file)) == 3


def test_editing_a_node_reruns_it_and_its_descendants_only(tmp_path):
    """Two processes, the second with `second` edited: `first` stays cached."""
    script = tmp_path / "job.py"
    cache = tmp_path / "cache"
    log = tmp_path / "calls.txt"

    def write(body: str) -> None:
        script.write_text(
            textwrap.dedent(
                f"""
                from hypernodes_daft import HypernodesEngine, Pipeline, node
                from hypernodes_daft.cache import DiskCache

                def record(name):
                    with open({str(log)!r}, "a") as f:
                        f.write(name + "\\n")

                @node(output_name="a")
                def first(x):
                    record("first")
                    return x + 1

                @node(output_name="b")
                def second(a):
                    record("second")
                    return {body}

                @node(output_name="c")
                def third(b):
                    record("third")
                    return b - 1

                @node(output_name="side")
                def side(x):
                    record("side")
                    return -x

                pipeline = Pipeline(nodes=[first, second, third, side])
                engine = HypernodesEngine(cache=DiskCache({str(cache)!r}))
                print(pipeline.map(inputs={{"x": [1, 2]}}, map_over="x", engine=engine))
                """
            )
        )

    def run() -> str:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    write("a * 2")
    run()
    write("a * 3")  # the edit
    log.write_text("")
    out = run()
    assert sorted(calls(log)) == ["second", "second", "third", "third"]
    assert "'b': 6" in out and "'c': 5" in out


def test_kill_9_mid_map_then_rerun_completes_and_recomputes_only_unfinished(tmp_path):
    script = tmp_path / "job.py"
    cache, log, started = tmp_path / "cache", tmp_path / "calls.txt", tmp_path / "started"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            from hypernodes_daft import HypernodesEngine, Pipeline, node
            from hypernodes_daft.cache import DiskCache

            @node(output_name="y")
            def slow(x):
                with open({str(log)!r}, "a") as f:
                    f.write(f"{{x}}\\n")
                if x == 5 and sys.argv[1] == "die":
                    open({str(started)!r}, "w").close()
                    time.sleep(60)  # killed here
                return x * 10

            engine = HypernodesEngine(cache=DiskCache({str(cache)!r}))
            print(Pipeline(nodes=[slow]).map(inputs={{"x": list(range(10))}}, map_over="x",
                                             engine=engine))
            """
        )
    )
    victim = subprocess.Popen([sys.executable, str(script), "die"])
    try:
        for _ in range(600):
            if started.exists() or victim.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists(), "the job never reached item 5"
        victim.kill()  # SIGKILL: no cleanup runs
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    log.write_text("")
    done = subprocess.run([sys.executable, str(script), "live"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([{"y": x * 10} for x in range(10)])
    assert calls(log) == [str(x) for x in range(5, 10)]  # items 0-4 came from the cache
    assert not list(cache.glob("*/*.tmp"))  # no half-written entry left behind


def test_concurrent_writers_of_one_key_leave_a_whole_entry(tmp_path):
    cache = DiskCache(tmp_path)
    value = list(range(50_000))
    writers = [threading.Thread(target=cache.put, args=("k" * 40, value)) for _ in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert cache.lookup("k" * 40) == (True, value)
    assert len(cache) == 1


def test_none_results_are_cached(tmp_path):
    log: list[int] = []

    @node(output_name="y")
    def nothing(x: int) -> None:
        log.append(x)

    engine = HypernodesEngine(cache=DiskCache(tmp_path))
    pipeline = Pipeline(nodes=[nothing])
    pipeline.map(inputs={"x": [1, 2]}, map_over="x", engine=engine)
    pipeline.map(inputs={"x": [1, 2]}, map_over="x", engine=engine)
    assert log == [1, 2]


def test_cache_false_opts_a_node_out(tmp_path):
    log: list[str] = []

    @node(output_name="a")
    def kept(x: int) -> int:
        log.append("kept")
        return x

    @node(output_name="b", cache=False)
    def fresh(a: int) -> int:
        log.append("fresh")
        return a

    engine = HypernodesEngine(cache=MemoryCache())
    pipeline = Pipeline(nodes=[kept, fresh])
    for _ in range(2):
        pipeline.run(inputs={"x": 1}, engine=engine)
    assert log == ["kept", "fresh", "fresh"]


@dataclasses.dataclass
class Point:
    x: int
    y: float


@stateful
class Model:
    def __init__(self, name: str):
        self.name = name


def test_values_hash_by_content_and_type():
    assert hash_value(1) != hash_value("1") != hash_value(1.0)
    assert hash_value([1, 2]) != hash_value((1, 2))
    assert hash_value({"a": 1, "b": 2}) == hash_value({"b": 2, "a": 1})
    assert hash_value({3, 1, 2}) == hash_value({1, 2, 3})
    assert hash_value(Point(1, 2.0)) == hash_value(Point(1, 2.0)) != hash_value(Point(1, 3.0))
    assert hash_value(np.arange(4)) == hash_value(np.arange(4)) != hash_value(np.arange(5))
    assert hash_value(np.arange(4, dtype=np.int32)) != hash_value(np.arange(4, dtype=np.int64))
    assert hash_value(pa.array([1, 2])) == hash_value(pa.array([1, 2]))
    assert hash_value(pa.array([1, 2])) != hash_value(pa.array([1, 3]))
    assert hash_value(Model("a")) == hash_value(Model("a")) != hash_value(Model("b"))


def test_values_with_a_cache_key_hook_use_it():
    class Client:
        def __init__(self, url: str):
            self.url = url
            self._lock = threading.Lock()

        def __cache_key__(self) -> str:
            return self.url

    assert hash_value(Client("a")) == hash_value(Client("a")) != hash_value(Client("b"))


def test_a_value_without_stable_hash_skips_caching_with_one_warning(tmp_path):
    log: list[int] = []

    @node(output_name="y")
    def use(x: int, lock: object) -> int:
        log.append(x)
        return x

    with pytest.raises(UnhashableInput):
        hash_value(threading.Lock())
    engine = HypernodesEngine(cache=MemoryCache())
    pipeline = Pipeline(nodes=[use])
    with pytest.warns(UserWarning, match="node 'use' is not cached"):
        for _ in range(2):
            pipeline.map(
                inputs={"x": [1, 2], "lock": threading.Lock()}, map_over="x", engine=engine
            )
    assert log == [1, 2, 1, 2]  # ran every time, results still right
