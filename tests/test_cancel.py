"""Cancellation: Ctrl-C (SIGINT), SIGTERM and deadlines stop a map on every engine, keep
what finished (in the cache, and as `Cancelled` records under on_error="collect") and
leave nothing running; a re-run computes only the rest (runtime/cancel.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from _interrupting import (
    N,
    check_interrupted_run,
    interrupt_half_way,
    lines,
    rerun_computes_only_the_rest,
)

from hypernodes_daft import (
    DaftEngine,
    DiskCache,
    HypernodesEngine,
    Pipeline,
    node,
)
from hypernodes_daft.results import Cancelled
from hypernodes_daft.runtime.cancel import DeadlineExceeded

LOCAL = ["sequential", "threaded", "async", "parallel", "daft"]


@pytest.mark.parametrize("engine", LOCAL)
def test_ctrl_c_keeps_the_finished_items_as_results_and_cancelled_records(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(engine, tmp_path, collect=True)
    assert process.returncode == 0, err[-3000:]
    results = json.loads(out)
    finished = check_interrupted_run(engine, tmp_path, sent, log)
    ok = {int(i) for i in results["ok"]}
    assert ok and results["cancelled"] and ok.isdisjoint(results["cancelled"])
    assert sorted(ok | set(results["cancelled"])) == list(range(N))
    for index, outputs in results["ok"].items():
        assert outputs == {"fetched": int(index) * 10, "squared": (int(index) * 10) ** 2}
    rerun_computes_only_the_rest(engine, tmp_path, finished)


@pytest.mark.parametrize("engine", ["sequential", "async", "parallel", "daft"])
def test_ctrl_c_without_collect_raises_keyboard_interrupt_after_cleanup(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(engine, tmp_path, collect=False)
    assert process.returncode == -signal.SIGINT  # Python's exit for KeyboardInterrupt
    assert "KeyboardInterrupt" in err
    assert "FATAL" not in err  # no abort on the way out
    check_interrupted_run(engine, tmp_path, sent, log)


@pytest.mark.parametrize("engine", ["threaded", "daft"])
def test_sigterm_stops_the_map_as_ctrl_c_does(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(
        engine, tmp_path, collect=True, signum=signal.SIGTERM
    )
    assert process.returncode == 0, err[-3000:]
    assert json.loads(out)["cancelled"]
    check_interrupted_run(engine, tmp_path, sent, log)


SLOW_PIPELINE = """
import os, time
from hypernodes_daft import Pipeline, node

@node(output_name="doubled")
def double(x: int) -> int:
    with open(os.environ["CALLS_LOG"], "a") as log:
        log.write(f"{x}\\n")
    time.sleep(0.1)
    return 2 * x

pipeline = Pipeline(nodes=[double])
"""


def interrupt_cli(
    command: list[str], tmp_path, env: dict[str, str]
) -> tuple[subprocess.Popen, str, str]:
    """Run the CLI and press Ctrl-C once 10 calls were made; its output."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    run = subprocess.Popen(command, cwd=tmp_path, env=env, text=True, **pipes)
    limit = time.monotonic() + 120
    while len(lines(tmp_path, "calls")) < 10 and time.monotonic() < limit:
        assert run.poll() is None
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    return run, out, err


@pytest.mark.parametrize("engine", ["local", "daft"])
def test_the_cli_run_interrupted_writes_what_finished_and_exits_130(engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pipe.py").write_text(SLOW_PIPELINE)
    pq.write_table(pa.table({"x": list(range(40))}), tmp_path / "in.parquet")
    calls = tmp_path / "calls"
    command = [sys.executable, "-m", "hypernodes_daft.cli", "run", "pipe.py:pipeline"]
    command += ["--input", "in.parquet", "--output", "out", "--engine", engine]
    command += ["--cache", "cache", "--on-error", "collect", "--no-progress"]
    env = {**os.environ, "CALLS_LOG": str(calls)}
    run, out, _ = interrupt_cli(command, tmp_path, env)
    assert run.returncode == 130
    finished = int(re.search(r"interrupted: (\d+) of 40 rows finished", out)[1])
    table = pq.read_table(tmp_path / "out").to_pylist()
    done = [row for row in table if row["_error"] is None]
    assert len(done) == finished and 0 < finished < 40
    assert all(row["doubled"] == 2 * row["x"] for row in done)
    assert {row["_error"]["error_type"] for row in table if row["_error"]} == {"Cancelled"}

    calls.unlink()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(lines(tmp_path, "calls")) <= 40 - finished  # the finished ones: cached
    assert sorted(r["doubled"] for r in pq.read_table(tmp_path / "out").to_pylist()) == [
        2 * x for x in range(40)
    ]


def test_the_cli_run_interrupted_without_collect_says_what_it_kept_and_exits_130(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pipe.py").write_text(SLOW_PIPELINE)
    pq.write_table(pa.table({"x": list(range(40))}), tmp_path / "in.parquet")
    command = [sys.executable, "-m", "hypernodes_daft.cli", "run", "pipe.py:pipeline"]
    command += ["--input", "in.parquet", "--output", "out", "--cache", "cache", "--no-progress"]
    env = {**os.environ, "CALLS_LOG": str(tmp_path / "calls")}
    run, _, err = interrupt_cli(command, tmp_path, env)
    assert run.returncode == 130
    assert "interrupted: nothing written to out" in err
    assert "Traceback" not in err and "FATAL" not in err
    assert 10 <= len(DiskCache(tmp_path / "cache")) < 40  # the finished calls are kept


# -- deadlines, cancelled tasks, retry: in this process -------------------------------------


@node(output_name="y")
async def wait_50ms(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 1


@node(output_name="y")
def block_50ms(x: int) -> int:
    time.sleep(0.05)
    return x + 1


DEADLINE_ENGINES = {
    "async": lambda: (HypernodesEngine(map_executor="async", max_concurrency=20), wait_50ms),
    "threaded": lambda: (HypernodesEngine(map_executor="threaded", max_workers=20), block_50ms),
    "daft": lambda: (DaftEngine(max_concurrency=20), wait_50ms),
}


@pytest.mark.parametrize("name", list(DEADLINE_ENGINES))
def test_a_deadline_returns_on_time_with_cancelled_records_for_the_rest(name):
    engine, slow = DEADLINE_ENGINES[name]()
    pipeline = Pipeline(nodes=[slow], engine=engine)
    started = time.monotonic()
    results = pipeline.map(
        inputs={"x": list(range(1000))}, map_over="x", on_error="collect", deadline=1.0
    )
    assert time.monotonic() - started <= 2.0  # the deadline + 1 s
    assert len(results) == 1000 and not results.errors
    assert 0 < len(results.ok) < 1000  # 1,000 x 50 ms at 20 in flight take 2.5 s
    assert len(results.ok) + len(results.cancelled) == 1000
    for index, outputs in enumerate(results):
        record = outputs.get("_error")
        assert outputs == {"y": index + 1} if record is None else record.index == index
    assert all("deadline of 1 s" in c.message for c in results.cancelled)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("name", ["async", "daft"])
def test_a_deadline_without_collect_raises_deadline_exceeded(name, on_error):
    engine, slow = DEADLINE_ENGINES[name]()
    pipeline = Pipeline(nodes=[slow], engine=engine)
    with pytest.raises(DeadlineExceeded, match="deadline of 0.3 s"):
        pipeline.map(inputs={"x": list(range(1000))}, map_over="x", on_error=on_error, deadline=0.3)


def test_retry_runs_the_cancelled_items_and_the_cache_spares_the_finished(tmp_path):
    calls: list[int] = []

    @node(output_name="y")
    async def counted(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.05)
        return x * 3

    engine = HypernodesEngine(map_executor="async", max_concurrency=10)
    pipeline = Pipeline(nodes=[counted], engine=engine, cache=DiskCache(tmp_path))
    results = pipeline.map(
        inputs={"x": list(range(200))}, map_over="x", on_error="collect", deadline=0.4
    )
    assert results.cancelled and all(isinstance(c, Cancelled) for c in results.cancelled)
    finished, before = len(results.ok), len(calls)
    again = results.retry()
    assert again == [{"y": x * 3} for x in range(200)]
    assert not again.cancelled and not again.errors
    assert len(calls) - before == 200 - finished  # the finished ones come from the cache


def test_iter_map_with_a_deadline_streams_what_finished_then_the_cancelled():
    pipeline = Pipeline(nodes=[wait_50ms], engine=HypernodesEngine(map_executor="async"))
    seen = dict(
        pipeline.iter_map(
            inputs={"x": list(range(3000))}, map_over="x", on_error="collect", deadline=0.3
        )
    )
    assert sorted(seen) == list(range(3000))
    cancelled = [i for i, outputs in seen.items() if "_error" in outputs]
    assert cancelled and len(cancelled) < 3000
    assert all(isinstance(seen[i]["_error"], Cancelled) for i in cancelled)


def test_cancelling_the_task_awaiting_amap_runs_the_finally_blocks_and_raises(tmp_path):
    ended: list[int] = []

    @node(output_name="y")
    async def tidy(x: int) -> int:
        try:
            await asyncio.sleep(0.05 if x < 5 else 30)
            return x
        finally:
            ended.append(x)

    engine = HypernodesEngine(map_executor="async", max_concurrency=20)
    pipeline = Pipeline(nodes=[tidy], engine=engine, cache=DiskCache(tmp_path))

    async def main() -> None:
        task = asyncio.ensure_future(pipeline.amap(inputs={"x": list(range(20))}, map_over="x"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(ended) == list(range(20))  # every call's finally ran before it raised

    asyncio.run(main())
    assert len(DiskCache(tmp_path)) == 5  # the calls that finished are kept


def test_a_bad_deadline_is_an_error_naming_the_pipeline():
    pipeline = Pipeline(nodes=[wait_50ms], name="fetcher")
    with pytest.raises(ValueError, match="pipeline 'fetcher': deadline must be .* got -1"):
        pipeline.map(inputs={"x": [1]}, map_over="x", deadline=-1)


def test_a_second_ctrl_c_stops_waiting_for_sync_calls_in_flight():
    @node(output_name="y")
    def stuck(x: int) -> int:
        time.sleep(3)
        return x

    pipeline = Pipeline(nodes=[stuck], engine=HypernodesEngine(map_executor="threaded"))

    def press_twice() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # cancel: the calls in flight get a grace period
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # stop now

    import threading

    threading.Thread(target=press_twice).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.map(inputs={"x": list(range(4))}, map_over="x", on_error="collect")
    assert time.monotonic() - started < 1.0  # not the 1 s grace, not the 3 s calls


def test_a_handler_of_the_users_is_kept_and_python_s_is_restored_after_the_map():
    seen = []

    @node(output_name="y")
    def look(x: int) -> int:
        seen.append(signal.getsignal(signal.SIGINT))
        return x

    pipeline = Pipeline(nodes=[look])
    pipeline.map(inputs={"x": [1]}, map_over="x")
    assert seen[-1] is not signal.default_int_handler  # ours while the map runs
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored

    def mine(signum, frame):
        raise RuntimeError("the user's")

    previous = signal.signal(signal.SIGINT, mine)
    try:
        pipeline.map(inputs={"x": [1]}, map_over="x")
        assert seen[-1] is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_cancelled_nested_map_cancels_its_outer_item_not_a_partial_result():
    @node(output_name="y")
    async def inner_slow(x: int) -> int:
        await asyncio.sleep(0.02)
        return x

    inner = Pipeline(nodes=[inner_slow]).as_node(
        input_mapping={"xs": "x"}, output_mapping={"y": "ys"}, map_over="xs"
    )

    @node(output_name="total")
    def add_up(ys: list) -> int:
        return sum(ys)

    engine = HypernodesEngine(map_executor="async", node_executor="async", max_concurrency=4)
    pipeline = Pipeline(nodes=[inner, add_up], engine=engine)
    inputs = {"xs": [list(range(50))] * 40}  # 0.26 s an item, 4 in flight: 2.6 s in all
    results = pipeline.map(inputs=inputs, map_over="xs", on_error="collect", deadline=1.5)
    assert results.cancelled
    for outputs in results:
        assert "_error" in outputs or outputs == {"ys": list(range(50)), "total": 1225}


def test_a_deadline_cancels_the_least_urgent_items_and_retry_keeps_the_priority():
    started: list[int] = []

    @node(output_name="y")
    async def urgent_first(x: int) -> int:
        started.append(x)
        await asyncio.sleep(0.05)
        return x

    engine = HypernodesEngine(map_executor="async", max_concurrency=10)
    pipeline = Pipeline(nodes=[urgent_first], engine=engine)
    results = pipeline.map(
        inputs={"x": list(range(200))},
        map_over="x",
        on_error="collect",
        priority=lambda item: item["x"],  # the highest x first
        deadline=0.4,
    )
    finished = sorted(outputs["y"] for outputs in results.ok)
    cancelled = sorted(record.index for record in results.cancelled)
    assert finished and cancelled
    assert max(cancelled) < min(finished)  # what the deadline cut off: the least urgent
    started.clear()
    again = results.retry()
    assert again == [{"y": x} for x in range(200)]
    assert started == sorted(started, reverse=True)  # the retry starts them by priority too


RUN_ONE_ITEM = """
import asyncio, sys, time
from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node

@node(output_name="y")
async def slow(x: int) -> int:
    try:
        print("started", flush=True)
        await asyncio.sleep(30)
        return x
    finally:
        print("finally ran", flush=True)

engine = DaftEngine() if sys.argv[1] == "daft" else HypernodesEngine()
Pipeline(nodes=[slow], engine=engine).run(inputs={"x": 1})
"""


@pytest.mark.parametrize("engine", ["sequential", "daft"])
def test_ctrl_c_during_run_cancels_its_async_call_and_raises(engine, tmp_path):
    script = tmp_path / "run_one.py"
    script.write_text(RUN_ONE_ITEM)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen([sys.executable, str(script), engine], text=True, **pipes)
    assert process.stdout.readline() == "started\n"
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 10  # not the call's 30 s
    assert out == "finally ran\n"
    assert process.returncode == -signal.SIGINT and "KeyboardInterrupt" in err
    assert "FATAL" not in err


def test_cancelling_the_task_awaiting_arun_runs_the_finally_block():
    ended: list[int] = []

    @node(output_name="y")
    async def tidy(x: int) -> int:
        try:
            await asyncio.sleep(30)
            return x
        finally:
            ended.append(x)

    pipeline = Pipeline(nodes=[tidy], engine=HypernodesEngine(node_executor="async"))

    async def main() -> None:
        task = asyncio.ensure_future(pipeline.arun(inputs={"x": 7}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended == [7]

    asyncio.run(main())
