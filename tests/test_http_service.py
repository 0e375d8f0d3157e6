"""Resilient I/O against a real local HTTP service (issue 8): retries, `max_concurrency`,
the circuit breaker, streaming and timeouts, measured by the service's own counters.

The service (tests/_http_service.py) runs on 127.0.0.1 in a thread with its own event loop;
each test gets a fresh one from the `service` fixture. Sync nodes call it with http.client
(blocking), async nodes with aiohttp.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from _http_service import (
    CONNECTION_ERRORS,
    TRANSIENT,
    HttpService,
    Sessions,
    get_async,
    get_sync,
    new_session,
    value_of,
)

from hypernodes_daft import (
    CircuitBreaker,
    CircuitOpenError,
    ClusterLimit,
    DaftEngine,
    ExecutionError,
    HypernodesEngine,
    MemoryCache,
    Pipeline,
    node,
)

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=16),
    "async": lambda: HypernodesEngine(map_executor="async", max_concurrency=100),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(max_concurrency=100),
}


def fetch_node(url: str, kind: str, sessions: Sessions | None = None, **options: Any) -> Any:
    """A node `fetch(item) -> value` calling the service: blocking or with aiohttp."""
    if kind == "sync":

        @node(output_name="value", **options)
        def fetch(item: int) -> int:
            return get_sync(url, item)

        return fetch

    assert sessions is not None

    @node(output_name="value", **options)
    async def afetch(item: int) -> int:
        return await get_async(sessions.get(), url, item)

    return afetch


def subclass_names(types: tuple[type, ...]) -> set[str]:
    """The names of `types` and of all their subclasses (what an error record names)."""
    names = set()
    for kind in types:
        names.add(kind.__name__)
        names |= subclass_names(tuple(kind.__subclasses__()))
    return names


def values(ids: Any) -> list[dict[str, int]]:
    return [{"value": value_of(i)} for i in ids]


# -- retries ----------------------------------------------------------------------------------

RETRY_CASES = [
    ("sequential", "sync"),
    ("threaded", "sync"),
    ("parallel", "sync"),
    ("async", "async"),
    ("async", "sync"),
    ("daft", "async"),
    ("daft", "sync"),
]


@pytest.mark.parametrize(("engine_name", "kind"), RETRY_CASES)
def test_every_item_succeeds_through_20_percent_transient_failures(
    service, sessions, engines, engine_name, kind
):
    service.configure(fail_rate=0.2, seed=8)
    ids = list(range(1000))
    fetch = fetch_node(service.url, kind, sessions, retries=5, backoff=0.002, retry_on=TRANSIENT)
    result = Pipeline(nodes=[fetch]).map({"item": ids}, "item", engine=engines(engine_name))
    assert result == values(ids)
    stats = service.stats()
    assert stats.failed > 150  # about 20% of first attempts got a 503 ...
    assert stats.total == len(ids) + stats.failed  # ... and each one was retried
    # exactly the attempts the failures call for: no item called again after its success,
    # no attempt lost (the service decides each 503 from (seed, id, attempt number))
    assert stats.total == service.expected_requests(ids)
    assert sorted(stats.per_id) == ids
    assert stats.in_flight == 0


# -- max_concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_name", "kind"),
    [("async", "async"), ("daft", "async"), ("threaded", "sync"), ("daft", "sync")],
)
@pytest.mark.parametrize("bound", [7, ClusterLimit(7)], ids=["per_process", "cluster_limit"])
def test_the_service_never_sees_more_than_max_concurrency_requests(
    service, sessions, engines, engine_name, kind, bound
):
    """An int bounds the process; so does a ClusterLimit without a Ray cluster (the process
    is the whole cluster: tests/ray measures it across worker processes)."""
    service.configure(latency=0.02)
    ids = list(range(200))
    limited = fetch_node(service.url, kind, sessions, max_concurrency=bound)
    engine = engines(engine_name)  # 100 items in flight (16 threads) allowed
    assert Pipeline(nodes=[limited]).map({"item": ids}, "item", engine=engine) == values(ids)
    stats = service.stats()
    assert stats.total == 200
    assert stats.peak == 7  # never more, and the limit was reached: the bound was measured

    if (engine_name, kind) == ("daft", "sync"):
        return  # without a bound, a sync node's rows run one by one on DaftEngine (CPU work)
    service.reset()  # the same map without the node's bound goes well past 7
    unlimited = fetch_node(service.url, kind, sessions)
    assert Pipeline(nodes=[unlimited]).map({"item": ids}, "item", engine=engine) == values(ids)
    assert service.stats().peak > 7


# -- in-flight dedup -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_name", "kind"),
    [
        ("async", "async"),
        ("async", "sync"),
        ("threaded", "sync"),
        ("daft", "async"),
        ("daft", "sync"),
    ],
)
def test_identical_calls_in_flight_are_made_once(service, sessions, engines, engine_name, kind):
    """Ten items in a row ask for the same id, concurrently: with a cache each distinct
    call reaches the service once (the others wait for it); without, every item calls."""
    service.configure(latency=0.05)
    ids = [i // 10 for i in range(200)]
    engine = engines(engine_name)
    fetch = fetch_node(service.url, kind, sessions)
    cached = Pipeline(nodes=[fetch], cache=MemoryCache())
    assert cached.map({"item": ids}, "item", engine=engine) == values(ids)
    assert service.stats().total == 20

    service.reset()
    assert Pipeline(nodes=[fetch]).map({"item": ids}, "item", engine=engine) == values(ids)
    assert service.stats().total == 200


# -- circuit breaker --------------------------------------------------------------------------

BREAKER_CASES = [("async", "async", 300), ("threaded", "sync", 300), ("daft", "async", 120)]
SLOTS = 4  # max_concurrency of the node in map_until_the_service_dies


class WatchedBreaker(CircuitBreaker):
    """A CircuitBreaker that also counts what it is told (`record`), in the order it is told:
    `breaks`, successes told while closed after a failure (each ends a run of failures), and
    `while_open`, outcomes told once open (calls admitted before it opened)."""

    def __init__(self, failures: int = 5, cooldown: float = 30.0):
        super().__init__(failures, cooldown)
        self.watch = threading.Lock()
        self.failed = False
        self.breaks = self.while_open = 0

    def record(self, succeeded: bool, *ticket: Any) -> None:
        with self.watch:
            if self.is_open:
                self.while_open += 1
            elif succeeded and self.failed:
                self.breaks += 1
            self.failed |= not succeeded
            super().record(succeeded, *ticket)


def assert_the_breaker_cut(dead: list[bool], breaker: WatchedBreaker) -> None:
    """What a breaker with `failures=5` and a long cool-down guarantees against a service
    that died mid-map, with `SLOTS` calls at most in flight (the breaker is asked once a call
    holds its slot). `dead`: one entry per call that found the service dead, whether the
    circuit was open then.

    - Once open, the circuit stays open: no call finds it closed again.
    - Only calls already holding a slot when it opened reach the service after: the other
      `SLOTS - 1` (the call that opened it holds one); calls waiting for a slot then do not.
    - It opens at the 5th failure in a row, in the order the breaker is told them. A call
      the service answered just before it died may be read after other calls found it
      dead (a thread waiting for the GIL on a busy machine): that success ends the run, so
      the breaker lets `4` more calls through for each such success (`breaks`: at most
      `SLOTS - 1`, the calls in flight when the service died).
    """
    failures = breaker.failures
    assert breaker.is_open and dead == sorted(dead), dead  # False ... False True ... True
    in_flight = f"{breaker.while_open} outcomes told with the circuit open"
    assert sum(dead) <= breaker.while_open <= SLOTS - 1, in_flight
    assert breaker.breaks <= SLOTS - 1
    bound = failures + (failures - 1) * breaker.breaks + SLOTS - 1
    calls = f"{len(dead)} calls, {sum(dead)} with the circuit open, {breaker.breaks} breaks"
    assert len(dead) <= bound, calls


def map_until_the_service_dies(
    service: HttpService,
    engine: Any,
    kind: str,
    sessions: Sessions,
    n_items: int,
    breaker: CircuitBreaker | None,
    on_error: str = "raise",
) -> tuple[list[bool], Any]:
    """Map `n_items` over a service that dies on its 40th request, with `retries=3` and
    `max_concurrency=4`: (one entry per call that found the service dead, counted in the
    node: whether the circuit was already open then; the map's error, or with on_error
    "collect" its results)."""
    service.reset()
    service.restart()
    service.configure(latency=0.005, kill_after=40)
    dead: list[bool] = []
    lock = threading.Lock()  # `dead` in the order the circuit's state was read
    call = fetch_node(service.url, kind, sessions).func

    def note_dead() -> None:
        with lock:
            dead.append(breaker is not None and breaker.is_open)

    def counted(item: int) -> Any:
        try:
            return call(item)
        except CONNECTION_ERRORS:
            note_dead()
            raise

    async def acounted(item: int) -> int:
        try:
            return await call(item)
        except CONNECTION_ERRORS:
            note_dead()
            raise

    options = {"retries": 3, "backoff": 0.01, "retry_on": TRANSIENT, "max_concurrency": SLOTS}
    fetch = node(output_name="value", breaker=breaker, **options)(
        acounted if kind == "async" else counted
    )
    pipeline, items = Pipeline(nodes=[fetch]), {"item": list(range(n_items))}
    if on_error == "raise":
        with pytest.raises(ExecutionError) as caught:
            pipeline.map(items, "item", engine=engine)
        outcome: Any = caught.value
    else:
        outcome = pipeline.map(items, "item", engine=engine, on_error=on_error)
    time.sleep(0.3)  # calls still running after the map raised are counted too
    assert not service.alive and service.stats().total == 40
    return dead, outcome


@pytest.mark.parametrize(("engine_name", "kind", "n_items"), BREAKER_CASES)
def test_a_circuit_breaker_cuts_the_calls_to_a_service_killed_mid_map(
    service, sessions, engines, engine_name, kind, n_items
):
    engine = engines(engine_name)
    unguarded, error = map_until_the_service_dies(service, engine, kind, sessions, n_items, None)
    assert isinstance(error, CONNECTION_ERRORS)

    breaker = CircuitBreaker(failures=5, cooldown=0.5)
    guarded, error = map_until_the_service_dies(service, engine, kind, sessions, n_items, breaker)
    assert isinstance(error, (CircuitOpenError, *CONNECTION_ERRORS)) and breaker.is_open
    calls = f"{len(guarded)} calls with the breaker, {len(unguarded)} without"
    assert len(guarded) >= 5 and 2 * len(guarded) <= len(unguarded), calls

    service.restart()  # back up: after the cool-down one probe closes the circuit again
    service.configure(latency=0.0)
    time.sleep(0.5)
    pipeline = Pipeline(nodes=[fetch_node(service.url, kind, sessions, breaker=breaker)])
    assert pipeline.map({"item": [1]}, "item", engine=engine) == values([1])  # the probe
    assert not breaker.is_open
    assert pipeline.map({"item": [2, 3, 4]}, "item", engine=engine) == values([2, 3, 4])


COLLECT_CASES = [*BREAKER_CASES, ("daft", "sync", 120), ("sequential", "sync", 100)]


@pytest.mark.parametrize(("engine_name", "kind", "n_items"), COLLECT_CASES)
def test_with_the_service_killed_mid_map_collect_keeps_every_item_and_the_breaker_cuts_calls(
    service, sessions, engines, engine_name, kind, n_items
):
    """on_error="collect": the map outlives the service. Every item is in the results, in
    order: a value from the 39 requests that were answered, or an error record naming the
    node; and the breaker still cuts the calls that reach the dead service."""
    engine = engines(engine_name)
    unguarded, _ = map_until_the_service_dies(
        service, engine, kind, sessions, n_items, None, "collect"
    )
    breaker = WatchedBreaker(failures=5, cooldown=60)
    guarded, results = map_until_the_service_dies(
        service, engine, kind, sessions, n_items, breaker, "collect"
    )
    assert len(results) == n_items and len(results.ok) + len(results.errors) == n_items
    assert 30 <= len(results.ok) <= 39  # the answered requests (some retried items share none)
    for index, entry in enumerate(results):
        if "_error" not in entry:
            assert entry == {"value": value_of(index)}
            continue
        record = entry["_error"]
        node_name = "acounted" if kind == "async" else "counted"
        assert (record.index, record.node, record.inputs) == (index, node_name, f"item={index}")
        assert record.error_type in {"CircuitOpenError", *subclass_names(CONNECTION_ERRORS)}
        assert record.on_error == "collect" and 1 <= record.attempts <= 4
    assert {r.error_type for r in results.errors} >= {"CircuitOpenError"}
    assert_the_breaker_cut(guarded, breaker)
    calls = f"{len(guarded)} calls with the breaker, {len(unguarded)} without"
    assert 4 * len(guarded) <= len(unguarded), calls


@pytest.mark.parametrize(("engine_name", "kind", "n_items"), BREAKER_CASES)
def test_calls_waiting_for_a_concurrency_slot_do_not_get_past_an_open_circuit(
    service, sessions, engines, engine_name, kind, n_items
):
    """5 failures open the circuit; only calls already holding one of the 4 slots may still
    reach the dead service (`assert_the_breaker_cut`). A call admitted by the breaker *before*
    waiting for its slot would reach it after the circuit opened
    (hypernodes_daft/runtime/resilience.py `resilient` asks the breaker inside the
    concurrency limit). Not `len(dead) <= 5 + 4`: a request answered just before the service
    died, read after calls found it dead, ends the run of failures (`breaks`); and a call
    admitted before the circuit opened must not close it when it ends (it used to)."""
    breaker = WatchedBreaker(failures=5, cooldown=60)
    engine = engines(engine_name)
    dead, _ = map_until_the_service_dies(service, engine, kind, sessions, n_items, breaker)
    assert_the_breaker_cut(dead, breaker)


@pytest.mark.parametrize(
    ("engine_name", "kind"), [("async", "async"), ("threaded", "sync"), ("daft", "async")]
)
def test_a_retry_backoff_holds_no_concurrency_slot(service, sessions, engines, engine_name, kind):
    """Item 0's first attempt gets a 503 and waits 0.3 s before its retry; with
    `max_concurrency=1` the other items use the slot meanwhile
    (hypernodes_daft/runtime/resilience.py: "Backoff ... never holds a concurrency slot:
    the limit wraps one attempt")."""
    service.configure(fail_ids={0: 1})
    ids = list(range(6))
    fetch = fetch_node(
        service.url,
        kind,
        sessions,
        max_concurrency=1,
        retries=1,
        backoff=0.3,
        retry_on=TRANSIENT,
    )
    assert Pipeline(nodes=[fetch]).map(
        {"item": ids}, "item", engine=engines(engine_name)
    ) == values(ids)
    order = service.stats().order
    assert order[-1] == 0 and sorted(order[:-1]) == ids, order


# -- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine_name", "kind"), [("async", "async"), ("threaded", "sync")])
def test_iter_map_yields_results_before_the_slowest_item_finishes(
    service, sessions, engines, engine_name, kind
):
    service.configure(slow={0: 2.0})  # item 0 takes 2 s, the others no time
    ids = list(range(20))
    pipeline = Pipeline(nodes=[fetch_node(service.url, kind, sessions)])
    started = time.perf_counter()
    arrivals = []
    for index, outputs in pipeline.iter_map({"item": ids}, "item", engine=engines(engine_name)):
        arrivals.append((index, outputs, time.perf_counter() - started))
    first, last = arrivals[0], arrivals[-1]
    assert first[2] < 1.0, arrivals[:3]
    assert last[0] == 0 and last[2] >= 1.9
    assert sorted((i, out) for i, out, _ in arrivals) == list(enumerate(values(ids)))


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_name", "kind"), [("async", "async"), ("daft", "async"), ("sequential", "sync")]
)
def test_a_timeout_gives_up_on_a_hung_request_and_the_next_item_works(
    service, sessions, engines, engine_name, kind
):
    service.configure(slow={1: 5.0})  # item 1 hangs for 5 s
    engine = engines(engine_name)
    pipeline = Pipeline(nodes=[fetch_node(service.url, kind, sessions, timeout=0.2)])
    started = time.perf_counter()
    with pytest.raises(TimeoutError) as caught:
        pipeline.map({"item": [1]}, "item", engine=engine)
    assert isinstance(caught.value, ExecutionError)
    assert pipeline.map({"item": [2, 3]}, "item", engine=engine) == values([2, 3])
    assert time.perf_counter() - started < 1.5
    if kind == "async":  # the request was cancelled: the service saw its client go away
        deadline = time.monotonic() + 2
        while service.stats().cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.stats().cancelled == 1
    assert service.stats().per_id == {1: 1, 2: 1, 3: 1}  # no retry: retries=0


def test_the_service_counts_requests_and_dies_and_comes_back(service):
    """The fixture's service itself: counters, slow path, 503s, kill and restart."""
    service.configure(slow={5: 0.2}, fail_rate=1.0, max_failures=1)
    with pytest.raises(TRANSIENT):  # the first attempt of every id fails
        get_sync(service.url, 5)
    started = time.perf_counter()
    assert get_sync(service.url, 5) == value_of(5)
    assert time.perf_counter() - started >= 0.2
    stats = service.stats()
    assert (stats.total, stats.per_id, stats.failed, stats.peak) == (2, {5: 2}, 1, 1)

    async def together() -> list[int]:
        async with new_session() as session:
            return await asyncio.gather(*(get_async(session, service.url, 5) for _ in range(3)))

    service.reset()
    service.configure(fail_rate=0.0)
    assert asyncio.run(together()) == [value_of(5)] * 3
    assert service.stats().peak == 3
    service.kill()
    with pytest.raises(CONNECTION_ERRORS):
        get_sync(service.url, 1)
    service.restart()
    assert get_sync(service.url, 1) == value_of(1)
