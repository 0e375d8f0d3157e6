"""Priorities (issue 19): `@node(priority=...)` and a map's per-item `priority=` decide who
goes first whenever calls wait: for a node's `max_concurrency` slot (async and sync), for a
limit several nodes share, for a `ClusterLimit` (in process), for `rate_limit` starts, and
which items the map executors start first. Equal priorities keep arrival order; waiting
ages a call's priority (runtime/priority.py).

The waiting scenarios hold a limit of 1 with a first call blocked on an event, queue 100
low-priority calls and then 5 high-priority ones (each checked queued by counting the
waiters, not by sleeping), release the first call and assert the order the calls start in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from hypernodes_daft import HypernodesEngine, Pipeline, node
from hypernodes_daft.exceptions import PlanningError
from hypernodes_daft.runtime.limits import (
    ClusterLimit,
    LoopSlots,
    RateLimit,
    ThreadSlots,
    limit_calls,
    rate_limited,
)
from hypernodes_daft.runtime.priority import WaitQueue, item_priority_reset, item_priority_set

LOW = [f"low{i}" for i in range(100)]
HIGH = [f"high{i}" for i in range(5)]


# -- the queue's policy ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_equal_priorities_are_served_in_arrival_order() -> None:
    queue: WaitQueue[str] = WaitQueue()
    for name in ["a", "b", "c", "d"]:
        queue.push(name, 1.0)
    assert [queue.pop_first() for _ in range(4)] == ["a", "b", "c", "d"]
    assert queue.pop_first() is None


def test_higher_priority_first_then_arrival_order() -> None:
    queue: WaitQueue[str] = WaitQueue(aging=None)
    for name, priority in [("a", 0), ("b", 2), ("c", 1), ("d", 2), ("e", -1)]:
        queue.push(name, priority)
    assert [queue.pop_first() for _ in range(5)] == ["b", "d", "c", "a", "e"]


def test_aging_lets_a_long_waiting_call_pass_a_newer_higher_one() -> None:
    """Aging 1 s per unit: a priority-0 call that has waited 5 s counts as 5 against a
    priority-3 call arriving now; one that has waited 2 s does not."""
    clock = FakeClock()
    queue: WaitQueue[str] = WaitQueue(aging=1.0, clock=clock)
    queue.push("old-low", 0)
    clock.now = 5.0
    queue.push("new-high", 3)
    assert queue.pop_first() == "old-low"

    queue = WaitQueue(aging=1.0, clock=clock)
    clock.now = 10.0
    queue.push("old-low", 0)
    clock.now = 12.0
    queue.push("new-high", 3)
    assert queue.pop_first() == "new-high"


def test_strict_priority_never_ages() -> None:
    clock = FakeClock()
    queue: WaitQueue[str] = WaitQueue(aging=None, clock=clock)
    queue.push("old-low", 0)
    clock.now = 1e6
    queue.push("new-high", 3)
    assert queue.pop_first() == "new-high"


def test_given_up_waiters_are_skipped() -> None:
    queue: WaitQueue[str] = WaitQueue()
    for name in ["a", "b", "c"]:
        queue.push(name, 0)
    assert queue.pop_first(lambda name: name != "a") == "b"


def test_bad_aging_is_an_error() -> None:
    with pytest.raises(ValueError, match="aging must be > 0"):
        WaitQueue(aging=0)
    with pytest.raises(ValueError, match="aging must be > 0"):
        ClusterLimit(2, aging=-1)


# -- waiting for a slot: async ----------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition()` holds (no wall-clock wait)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the calls never queued")


async def _with_item_priority(priority: float, call: Any, name: str) -> None:
    token = item_priority_set(priority)
    try:
        await call(name)
    finally:
        item_priority_reset(token)


async def _queue_then_release(
    low: Any, high: Any, waiting: Callable[[], int], release: asyncio.Event
) -> None:
    """The first call holds the slot; 100 low calls queue, then 5 high ones; release."""
    first = asyncio.ensure_future(low("first"))
    await _until(lambda: len(started) == 1)
    lows = [asyncio.ensure_future(low(name)) for name in LOW]
    await _until(lambda: waiting() == 100)
    highs = [asyncio.ensure_future(high(name)) for name in HIGH]
    await _until(lambda: waiting() == 105)
    release.set()
    await asyncio.gather(first, *lows, *highs)


started: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_record() -> None:
    started.clear()


def _async_work(release: asyncio.Event) -> Callable[[str], Any]:
    async def work(name: str) -> str:
        started.append(name)
        if name == "first":
            await release.wait()
        await asyncio.sleep(0)  # hold the slot across a loop turn
        return name

    return work


def test_async_node_limit_starts_the_5_high_priority_items_next() -> None:
    """One node, limit 1: items' priorities (set by the map executors) order its waiters."""

    async def scenario() -> None:
        release = asyncio.Event()
        slots = LoopSlots(1)
        bounded = limit_calls(_async_work(release), True, slots)

        async def low(name: str) -> None:
            await _with_item_priority(0, bounded, name)

        async def high(name: str) -> None:
            await _with_item_priority(5, bounded, name)

        await _queue_then_release(low, high, lambda: len(slots.here().waiting), release)

    asyncio.run(scenario())
    assert started == ["first", *HIGH, *LOW]  # and equal priorities in arrival order


def test_async_limit_shared_by_two_nodes_serves_the_higher_node_first() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        shared = LoopSlots(1)
        low = limit_calls(_async_work(release), True, shared, priority=0)
        high = limit_calls(_async_work(release), True, shared, priority=5)
        await _queue_then_release(low, high, lambda: len(shared.here().waiting), release)

    asyncio.run(scenario())
    assert started == ["first", *HIGH, *LOW]


def test_cluster_limit_in_process_serves_the_higher_node_first() -> None:
    """Without Ray the process is the cluster: both nodes wait on its in-process slots."""

    async def scenario() -> None:
        release = asyncio.Event()
        quota = ClusterLimit(1)
        low = quota.bound(_async_work(release), True, 0)
        high = quota.bound(_async_work(release), True, 5)
        await low("warm-up")  # makes the process's slots
        started.clear()
        slots = quota._local[True]
        assert isinstance(slots, LoopSlots)
        await _queue_then_release(low, high, lambda: len(slots.here().waiting), release)

    asyncio.run(scenario())
    assert started == ["first", *HIGH, *LOW]


def test_equal_priorities_keep_todays_fifo_order_at_a_limit() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        shared = LoopSlots(1)
        one = limit_calls(_async_work(release), True, shared, priority=2)
        two = limit_calls(_async_work(release), True, shared, priority=2)
        await _queue_then_release(one, two, lambda: len(shared.here().waiting), release)

    asyncio.run(scenario())
    assert started == ["first", *LOW, *HIGH]


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        slots = LoopSlots(1)
        bounded = limit_calls(_async_work(release), True, slots, priority=0)
        first = asyncio.ensure_future(bounded("first"))
        await _until(lambda: started == ["first"])
        gone = asyncio.ensure_future(bounded("gone"))
        kept = asyncio.ensure_future(bounded("kept"))
        await _until(lambda: len(slots.here().waiting) == 2)
        gone.cancel()
        release.set()
        await asyncio.gather(first, kept)

    asyncio.run(scenario())
    assert started == ["first", "kept"]


# -- waiting for a slot: threads ----------------------------------------------------------------


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the calls never queued"
        time.sleep(0.001)


def _threads_queue_then_release(
    low: Any, high: Any, waiting: Callable[[], int], release: threading.Event
) -> None:
    first = threading.Thread(target=low, args=("first",))
    first.start()
    _wait_for(lambda: len(started) == 1)
    threads = [threading.Thread(target=low, args=(name,)) for name in LOW]
    for thread in threads:
        thread.start()
    _wait_for(lambda: waiting() == 100)
    highs = [threading.Thread(target=high, args=(name,)) for name in HIGH]
    for thread in highs:
        thread.start()
    _wait_for(lambda: waiting() == 105)
    release.set()
    for thread in [first, *threads, *highs]:
        thread.join()


def _sync_work(release: threading.Event) -> Callable[[str], str]:
    lock = threading.Lock()

    def work(name: str) -> str:
        with lock:
            started.append(name)
        if name == "first":
            release.wait()
        return name

    return work


def test_sync_node_limit_starts_the_5_high_priority_calls_next() -> None:
    """A sync node's limit (threads: arrival order among the lows is the threads' own)."""
    release = threading.Event()
    slots = ThreadSlots(1)
    bounded = limit_calls(_sync_work(release), False, slots)

    def low(name: str) -> None:
        bounded(name)

    def high(name: str) -> None:
        token = item_priority_set(5)
        try:
            bounded(name)
        finally:
            item_priority_reset(token)

    _threads_queue_then_release(low, high, lambda: len(slots.waiting), release)
    assert started[0] == "first"
    assert set(started[1:6]) == set(HIGH)
    assert sorted(started[6:]) == sorted(LOW)


def test_sync_cluster_limit_in_process_shared_by_two_nodes() -> None:
    release = threading.Event()
    quota = ClusterLimit(1)
    work = _sync_work(release)
    low = quota.bound(work, False, 0)
    high = quota.bound(work, False, 5)
    slots = quota._local[False]
    assert isinstance(slots, ThreadSlots)
    _threads_queue_then_release(low, high, lambda: len(slots.waiting), release)
    assert started[0] == "first"
    assert set(started[1:6]) == set(HIGH)


# -- rate limits -----------------------------------------------------------------------------


def _hold_starts(rate: RateLimit) -> None:
    """No start is due for an hour: calls queue (the pacer sleeps)."""
    with rate._lock:
        rate._next = time.monotonic() + 3600


def _resume_starts(rate: RateLimit) -> None:
    with rate._lock:
        rate._next = 0.0
        rate._wake.set()


def test_rate_limit_starts_the_5_high_priority_calls_next() -> None:
    async def scenario() -> None:
        rate = RateLimit(2000.0)
        work = _async_work(asyncio.Event())
        low = rate_limited(work, True, rate, priority=0)
        high = rate_limited(work, True, rate, priority=5)
        _hold_starts(rate)
        lows = [asyncio.ensure_future(low(name)) for name in LOW]
        await _until(lambda: len(rate.waiting) == 100)
        highs = [asyncio.ensure_future(high(name)) for name in HIGH]
        await _until(lambda: len(rate.waiting) == 105)
        _resume_starts(rate)
        await asyncio.gather(*lows, *highs)

    asyncio.run(scenario())
    assert started == [*HIGH, *LOW]


def test_sync_rate_limit_serves_threads_by_priority() -> None:
    """Starts granted 50 ms apart: a thread records its start long before the next grant
    (the grants, not the threads' wake-ups, are what is ordered)."""
    rate = RateLimit(20.0)
    work = _sync_work(threading.Event())
    low = rate_limited(work, False, rate, priority=0)
    high = rate_limited(work, False, rate, priority=5)
    _hold_starts(rate)
    threads = [threading.Thread(target=low, args=(name,)) for name in LOW[:20]]
    for thread in threads:
        thread.start()
    _wait_for(lambda: len(rate.waiting) == 20)
    highs = [threading.Thread(target=high, args=(name,)) for name in HIGH]
    for thread in highs:
        thread.start()
    _wait_for(lambda: len(rate.waiting) == 25)
    _resume_starts(rate)
    for thread in [*threads, *highs]:
        thread.join()
    assert set(started[:5]) == set(HIGH)


def test_a_cancelled_rate_limit_waiter_gives_its_start_to_the_next() -> None:
    async def scenario() -> None:
        rate = RateLimit(2000.0)
        paced = rate_limited(_async_work(asyncio.Event()), True, rate)
        _hold_starts(rate)
        gone = asyncio.ensure_future(paced("gone"))
        kept = asyncio.ensure_future(paced("kept"))
        await _until(lambda: len(rate.waiting) == 2)
        gone.cancel()
        await asyncio.sleep(0)
        _resume_starts(rate)
        await kept

    asyncio.run(scenario())
    assert started == ["kept"]


def test_rate_limit_still_spaces_the_starts() -> None:
    starts: list[float] = []
    paced = rate_limited(lambda: starts.append(time.monotonic()), False, 50.0)
    for _ in range(6):
        paced()
    assert starts[-1] - starts[0] >= 5 / 50 * 0.9  # at least the spacing, however slow


# -- map items ---------------------------------------------------------------------------------

N_ITEMS = 20
URGENCY = [(i * 7) % N_ITEMS for i in range(N_ITEMS)]  # a permutation of 0..19


def _by_urgency() -> list[int]:
    return sorted(range(N_ITEMS), key=lambda i: -URGENCY[i])


def _recording_pipeline(is_async: bool, engine: Any) -> tuple[Pipeline, list[int]]:
    finished: list[int] = []
    if is_async:

        @node(output_name="y", max_concurrency=1)
        async def work(x: int, urgency: int) -> int:
            await asyncio.sleep(0)
            finished.append(x)
            return x * 10

    else:

        @node(output_name="y", max_concurrency=1)
        def work(x: int, urgency: int) -> int:
            finished.append(x)
            return x * 10

    return Pipeline(nodes=[work], engine=engine), finished


INPUTS = {"x": list(range(N_ITEMS)), "urgency": URGENCY}

EXECUTORS = {
    "async": lambda: HypernodesEngine(map_executor="async", max_concurrency=4),
    "async-one-at-a-time": lambda: HypernodesEngine(map_executor="async", max_concurrency=1),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=1),
    "sequential": lambda: HypernodesEngine(),
}


# a sync node under the async executor with 4 items in flight runs in 4 threads: which of
# them reaches a free slot first is the threads' race, so that case is not exact
EXACT = [(e, k) for e in EXECUTORS for k in (True, False) if (e, k) != ("async", False)]


@pytest.mark.parametrize(("executor", "is_async"), EXACT)
def test_items_run_in_priority_order_and_results_stay_in_item_order(
    executor: str, is_async: bool
) -> None:
    with EXECUTORS[executor]() as engine:
        pipeline, finished = _recording_pipeline(is_async, engine)
        results = pipeline.map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgency")
    assert finished == _by_urgency()
    assert [r["y"] for r in results] == [x * 10 for x in range(N_ITEMS)]


@pytest.mark.parametrize("executor", ["async", "threaded"])
def test_the_highest_priority_half_finishes_first_with_a_priority_function(executor: str) -> None:
    with EXECUTORS[executor]() as engine:
        pipeline, finished = _recording_pipeline(executor == "async", engine)
        pipeline.map(
            inputs=INPUTS, map_over=["x", "urgency"], priority=lambda item: item["urgency"]
        )
    top_half = {i for i in range(N_ITEMS) if URGENCY[i] >= N_ITEMS // 2}
    assert set(finished[: N_ITEMS // 2]) == top_half


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_equal_item_priorities_keep_index_order(executor: str) -> None:
    with EXECUTORS[executor]() as engine:
        pipeline, finished = _recording_pipeline(executor.startswith("async"), engine)
        pipeline.map(inputs={**INPUTS, "level": 3}, map_over=["x", "urgency"], priority="level")
    assert finished == list(range(N_ITEMS))


def test_iter_map_streams_in_priority_order_on_the_sequential_executor() -> None:
    pipeline, _ = _recording_pipeline(False, HypernodesEngine())
    streamed = pipeline.iter_map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgency")
    assert [index for index, _ in streamed] == _by_urgency()


def test_aiter_map_and_amap_take_a_priority() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        with HypernodesEngine(map_executor="async", max_concurrency=1) as engine:
            pipeline, finished = _recording_pipeline(True, engine)
            spec = {"inputs": INPUTS, "map_over": ["x", "urgency"], "priority": "urgency"}
            streamed = [i async for i, _ in pipeline.aiter_map(**spec)]
            results = await pipeline.amap(**spec)
        return streamed, [r["y"] for r in results]

    streamed, ys = asyncio.run(scenario())
    assert streamed == _by_urgency()
    assert ys == [x * 10 for x in range(N_ITEMS)]


def test_node_calls_wait_with_their_items_priority() -> None:
    """Items all in flight at once (engine concurrency 20): the node's limit of 1 decides,
    by each call's priority: its node's (here 0) plus its item's. The first call holds
    the slot until every other item waits for it."""
    order: list[int] = []
    quota = ClusterLimit(1)  # in process: its waiters can be counted

    @node(output_name="y", max_concurrency=quota)
    async def work(x: int, urgency: int) -> int:
        order.append(x)
        if len(order) == 1:
            slots = quota._local[True]
            assert isinstance(slots, LoopSlots)
            await _until(lambda: len(slots.here().waiting) == N_ITEMS - 1)
        return x

    engine = HypernodesEngine(map_executor="async", max_concurrency=N_ITEMS)
    pipeline = Pipeline(nodes=[work], engine=engine)
    pipeline.map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgency")
    first = order[0]  # took the free slot; the others waited by their item's priority
    assert order[1:] == [i for i in _by_urgency() if i != first]


def test_parallel_map_sends_the_chunk_with_the_highest_priority_first() -> None:
    from hypernodes_daft.engines.local.parallel import _row_chunks
    from hypernodes_daft.plan import MapPlan

    plan = Pipeline(nodes=[node(output_name="y")(lambda x, urgency: x)]).plan(
        inputs=INPUTS, map_over=["x", "urgency"]
    )
    assert isinstance(plan, MapPlan)
    chunks = _row_chunks(replace(plan, priority="urgency"), INPUTS, 5)
    best = {start: max(URGENCY[start : start + 5]) for start in range(0, N_ITEMS, 5)}
    starts = [start for start, _ in chunks]
    assert starts == sorted(best, key=lambda start: -best[start])
    assert starts != sorted(starts)  # this priority does change the order
    with HypernodesEngine(map_executor="parallel", max_workers=1) as engine:
        pipeline = Pipeline(nodes=[node(output_name="y")(lambda x, urgency: x * 10)])
        results = pipeline.map(
            inputs=INPUTS, map_over=["x", "urgency"], priority="urgency", engine=engine
        )
    assert [r["y"] for r in results] == [x * 10 for x in range(N_ITEMS)]


def test_write_parquet_takes_a_priority_and_writes_rows_in_item_order(tmp_path: Any) -> None:
    import pyarrow.parquet as pq

    pipeline, finished = _recording_pipeline(False, HypernodesEngine())
    files = pipeline.write_parquet(INPUTS, str(tmp_path), ["x", "urgency"], priority="urgency")
    assert finished == _by_urgency()
    table = pq.read_table(files[0]) if len(files) == 1 else pq.read_table(str(tmp_path))
    assert table.column("x").to_pylist() == list(range(N_ITEMS))


def test_a_nested_map_runs_with_its_outer_items_priority() -> None:
    """The inner items of a nested map wait with the priority of the outer item."""
    from hypernodes_daft.runtime.priority import item_priority

    seen: dict[int, float] = {}

    @node(output_name="y")
    def inner(x: int) -> int:
        seen[x] = item_priority()
        return x

    nested = Pipeline(nodes=[inner], name="inner").as_node(map_over="x")
    outer = Pipeline(nodes=[nested], engine=HypernodesEngine())
    outer.map(inputs={"x": [[1, 2], [3]]}, map_over="x", priority=lambda item: 7 - len(item["x"]))
    assert seen == {1: 5.0, 2: 5.0, 3: 6.0}


# -- DaftEngine ---------------------------------------------------------------------------------


def test_daft_engine_runs_rows_in_priority_order_and_returns_them_in_item_order() -> None:
    from hypernodes_daft import DaftEngine

    seen: list[int] = []

    @node(output_name="y", native=False)
    def work(x: int, urgency: int) -> int:
        seen.append(x)
        return x * 10

    pipeline = Pipeline(nodes=[work], engine=DaftEngine())
    results = pipeline.map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgency")
    assert [r["y"] for r in results] == [x * 10 for x in range(N_ITEMS)]
    assert seen == _by_urgency()  # one partition here: its rows in the order given
    streamed = dict(pipeline.iter_map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgency"))
    assert {i: r["y"] for i, r in streamed.items()} == {x: x * 10 for x in range(N_ITEMS)}


def test_daft_engine_numbers_failed_rows_by_their_item() -> None:
    from hypernodes_daft import DaftEngine

    @node(output_name="y", native=False)
    def invert(x: int, urgency: int) -> float:
        return 1 / x

    pipeline = Pipeline(nodes=[invert], engine=DaftEngine())
    results = pipeline.map(
        inputs=INPUTS, map_over=["x", "urgency"], priority="urgency", on_error="collect"
    )
    assert [e.index for e in results.errors] == [0]  # item 0 (x=0) ran 20th
    assert results[1]["y"] == 1.0


def test_daft_engine_says_where_it_cannot_order_rows(tmp_path: Any) -> None:
    from hypernodes_daft import DaftEngine

    pipeline = Pipeline(nodes=[node(output_name="y")(lambda x, urgency: x)])
    spec = {"inputs": INPUTS, "map_over": ["x", "urgency"], "priority": "urgency"}
    with pytest.raises(PlanningError, match=r"DaftEngine: a map's priority='urgency'.*lazy"):
        pipeline.map(**spec, engine=DaftEngine(collect=False))
    with pytest.raises(PlanningError, match=r"DaftEngine: .*not write_parquet"):
        pipeline.write_parquet(
            INPUTS, str(tmp_path), ["x", "urgency"], engine=DaftEngine(), priority="urgency"
        )


# -- bad input ---------------------------------------------------------------------------------


def test_a_priority_that_is_not_an_input_names_the_pipeline_and_the_value() -> None:
    pipeline, _ = _recording_pipeline(False, HypernodesEngine())
    pipeline.with_name("scoring")
    with pytest.raises(PlanningError, match=r"pipeline 'scoring': priority='urgent' is not an"):
        pipeline.map(inputs=INPUTS, map_over=["x", "urgency"], priority="urgent")


def test_a_priority_of_the_wrong_kind_is_an_error() -> None:
    pipeline, _ = _recording_pipeline(False, HypernodesEngine())
    with pytest.raises(TypeError, match=r"priority must be an input name or a function.*got 3"):
        pipeline.map(inputs=INPUTS, map_over=["x", "urgency"], priority=3)


@pytest.mark.parametrize("bad", ["high", None, True, float("nan")])
def test_an_item_priority_that_is_not_a_number_names_the_item(bad: Any) -> None:
    pipeline, _ = _recording_pipeline(False, HypernodesEngine())
    urgency = [1, 2, bad]
    with pytest.raises(ValueError, match=r"item 2 has priority .*must be a number"):
        pipeline.map(
            inputs={"x": [1, 2, 3], "urgency": urgency},
            map_over=["x", "urgency"],
            priority="urgency",
        )
    with pytest.raises(ValueError, match=r"item 2 has priority .*the priority function"):
        pipeline.map(
            inputs={"x": [1, 2, 3], "urgency": urgency},
            map_over=["x", "urgency"],
            priority=lambda item: item["urgency"],
        )


def test_a_node_priority_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"node 'f': priority must be a number"):

        @node(output_name="y", priority="high")
        def f(x: int) -> int:
            return x
