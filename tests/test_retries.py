"""`@node(retries=, backoff=, retry_on=, timeout=)`, the same on every engine."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hypernodes_daft import (
    CircuitBreaker,
    CircuitOpenError,
    DaftEngine,
    ExecutionError,
    HypernodesEngine,
    Pipeline,
    node,
)
from hypernodes_daft.runtime import resilience
from hypernodes_daft.runtime.resilience import with_breaker

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "async": lambda: HypernodesEngine(map_executor="async"),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=4),
    "daft": lambda: DaftEngine(),
}


def flaky_node(failures: int, **options):
    """A node failing its first `failures` calls per item with ConnectionError."""
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    @node(output_name="y", **options)
    def fetch(x: int) -> int:
        with lock:
            attempts[x] = attempts.get(x, 0) + 1
            failed = attempts[x] <= failures
        if failed:
            raise ConnectionError(f"transient {x}")
        return x * 10

    return fetch, attempts


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_transient_failures_are_retried_until_success(name):
    fetch, attempts = flaky_node(2, retries=3, backoff=0.001)
    result = Pipeline(nodes=[fetch]).map({"x": [1, 2, 3]}, "x", engine=ENGINES[name]())
    assert result == [{"y": 10}, {"y": 20}, {"y": 30}]
    assert attempts == {1: 3, 2: 3, 3: 3}


def test_exhausted_retries_raise_the_last_error():
    fetch, attempts = flaky_node(5, retries=2, backoff=0.001)
    with pytest.raises(ExecutionError) as caught:
        Pipeline(nodes=[fetch]).map({"x": [7]}, "x")
    assert isinstance(caught.value, ConnectionError) and attempts == {7: 3}


def test_only_the_listed_exceptions_are_retried():
    fetch, attempts = flaky_node(1, retries=3, backoff=0.001, retry_on=(TimeoutError,))
    with pytest.raises(ConnectionError):
        Pipeline(nodes=[fetch]).run({"x": 1})
    assert attempts == {1: 1}


def test_backoff_grows_between_attempts():
    fetch, _ = flaky_node(3, retries=3, backoff=0.05)
    started = time.perf_counter()
    Pipeline(nodes=[fetch]).run({"x": 1})
    # waits of about 0.05, 0.1 and 0.2 s, each plus up to 0.05 s of jitter
    assert 0.35 <= time.perf_counter() - started < 1.5


@pytest.mark.parametrize("name", ["sequential", "async", "daft"])
def test_an_async_call_past_its_timeout_is_cancelled(name):
    cancelled = []

    @node(output_name="y", timeout=0.05)
    async def slow(x: int) -> int:
        try:
            await asyncio.sleep(0 if x == 1 else 5)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        Pipeline(nodes=[slow]).map({"x": [1, 2]}, "x", engine=ENGINES[name]())
    assert time.perf_counter() - started < 3 and cancelled == [2]


def test_a_sync_call_past_its_timeout_raises_timeout_error():
    @node(output_name="y", timeout=0.05)
    def slow(x: int) -> int:
        time.sleep(0.5)
        return x

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        Pipeline(nodes=[slow]).run({"x": 1})
    assert time.perf_counter() - started < 0.4


def test_a_timed_out_attempt_is_retried():
    calls = []

    @node(output_name="y", timeout=0.05, retries=2, backoff=0.001, retry_on=(TimeoutError,))
    async def sometimes_slow(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(5 if len(calls) == 1 else 0)
        return x

    assert Pipeline(nodes=[sometimes_slow]).run({"x": 4}) == {"y": 4}
    assert calls == [4, 4]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="retries"):
        node(output_name="y", retries=-1)(lambda x: x)
    with pytest.raises(ValueError, match="timeout"):
        node(output_name="y", timeout=0)(lambda x: x)


def test_circuit_breaker_fails_fast_while_the_service_is_down_then_probes():
    service = {"up": False, "calls": 0}

    @node(output_name="y", breaker=CircuitBreaker(failures=3, cooldown=0.2))
    def call(x: int) -> int:
        service["calls"] += 1
        if not service["up"]:
            raise ConnectionError("service down")
        return x

    pipeline = Pipeline(nodes=[call])
    errors = []
    for x in range(10):
        with pytest.raises(Exception) as caught:
            pipeline.run({"x": x})
        errors.append(type(caught.value.original).__name__)
    assert errors == ["ConnectionError"] * 3 + ["CircuitOpenError"] * 7
    assert service["calls"] == 3  # the dead service saw 3 calls, not 10
    time.sleep(0.25)
    service["up"] = True  # after the cool-down one probe goes through and closes it
    assert pipeline.run({"x": 1}) == {"y": 1} and pipeline.run({"x": 2}) == {"y": 2}
    assert service["calls"] == 5


def test_a_failed_probe_opens_the_circuit_again():
    breaker = CircuitBreaker(failures=1, cooldown=0.05)
    calls = []

    @node(output_name="y", breaker=breaker)
    def down(x: int) -> int:
        calls.append(x)
        raise ConnectionError("down")

    pipeline = Pipeline(nodes=[down])
    with pytest.raises(ConnectionError):
        pipeline.run({"x": 1})
    time.sleep(0.06)
    with pytest.raises(ConnectionError):  # the probe
        pipeline.run({"x": 2})
    with pytest.raises(CircuitOpenError):  # open again, no call
        pipeline.run({"x": 3})
    assert calls == [1, 2] and breaker.is_open


def test_retries_do_not_spin_on_an_open_circuit():
    calls = []

    @node(output_name="y", retries=5, backoff=0.01, breaker=CircuitBreaker(2, cooldown=60))
    def down(x: int) -> int:
        calls.append(x)
        raise ConnectionError("down")

    started = time.perf_counter()
    with pytest.raises(CircuitOpenError):
        Pipeline(nodes=[down]).run({"x": 1})
    assert calls == [1, 1] and time.perf_counter() - started < 0.5


class Clock:
    """The breaker's clock, moved by hand: `resilience.time` with `monotonic()` set."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(resilience, "time", made)
    return made


class Held:
    """A call guarded by `breaker` that blocks in a thread until told how to end, so it is
    in flight (admitted) while other calls change the circuit."""

    def __init__(self, breaker: CircuitBreaker, pool: ThreadPoolExecutor):
        self.inside, self.outcome = threading.Event(), queue.SimpleQueue()

        def call() -> str:
            self.inside.set()
            if self.outcome.get(timeout=10) == "fail":
                raise ConnectionError("down")
            return "ok"

        self.future = pool.submit(with_breaker(call, False, breaker))
        assert self.inside.wait(10)  # admitted and running

    def end(self, outcome: str) -> None:
        self.outcome.put(outcome)
        with contextlib.suppress(ConnectionError):
            self.future.result(timeout=10)


def down_call(breaker: CircuitBreaker):
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    return with_breaker(down, False, breaker), calls


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_a_call_admitted_before_the_circuit_opened_does_not_change_it(clock, outcome):
    """A call let through while the circuit was closed, ending after it opened, says nothing
    about the service now: its success does not close the circuit (only the probe's does,
    after the cool-down), its failure does not restart the cool-down. A late success used to
    close it at once, so the next calls reached the dead service (on threads, a request
    answered just before the service died is read after 5 calls found it dead)."""
    breaker = CircuitBreaker(failures=2, cooldown=60)
    down, calls = down_call(breaker)
    with ThreadPoolExecutor(1) as pool:
        late = Held(breaker, pool)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                down()
        assert breaker.is_open
        clock.now += 40
        late.end(outcome)
    assert breaker.is_open
    with pytest.raises(CircuitOpenError):
        down()
    clock.now += 20  # 60 s after the circuit opened: the probe goes through
    with pytest.raises(ConnectionError):
        down()
    assert calls == [1, 1, 1] and breaker.is_open


def test_while_the_probe_is_out_a_late_result_lets_no_other_call_through(clock):
    """Half-open: one probe at a time. A call admitted before the circuit opened, ending
    while the probe is in flight, neither closes the circuit nor frees the probe's turn."""
    breaker = CircuitBreaker(failures=1, cooldown=5)
    down, calls = down_call(breaker)
    with ThreadPoolExecutor(2) as pool:
        late = Held(breaker, pool)
        with pytest.raises(ConnectionError):
            down()
        clock.now += 5
        probe = Held(breaker, pool)
        late.end("ok")
        with pytest.raises(CircuitOpenError):  # the probe is still out
            down()
        probe.end("ok")  # the probe's success closes the circuit
    assert not breaker.is_open and calls == [1]
    with pytest.raises(ConnectionError):
        down()


def test_a_cancelled_probe_passes_the_turn_to_the_next_call(clock):
    """A probe cancelled in flight (its item was cancelled, or a timeout around it fired)
    says nothing about the service: the next call is the probe. Before, the breaker stayed
    half-open with no probe out, failing every later call fast for good."""
    breaker = CircuitBreaker(failures=1, cooldown=5)
    down, calls = down_call(breaker)
    with pytest.raises(ConnectionError):
        down()
    clock.now += 5
    started = []

    async def hang() -> None:
        started.append(1)
        await asyncio.sleep(60)

    async def cancel_the_probe() -> None:
        probe = asyncio.ensure_future(with_breaker(hang, True, breaker)())
        await asyncio.sleep(0)
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe

    asyncio.run(cancel_the_probe())
    assert started == [1] and breaker.is_open
    with pytest.raises(ConnectionError):  # the next call is let through as the probe
        down()
    assert calls == [1, 1]


@pytest.mark.parametrize("name", ["sequential", "async", "threaded", "daft"])
def test_rate_limit_spaces_call_starts(name):
    starts = []
    lock = threading.Lock()

    @node(output_name="y", rate_limit=50)
    def stamp(x: int) -> int:
        with lock:
            starts.append(time.monotonic())
        return x

    result = Pipeline(nodes=[stamp]).map({"x": list(range(11))}, "x", engine=ENGINES[name]())
    assert result == [{"y": x} for x in range(11)]
    starts.sort()
    assert starts[-1] - starts[0] >= 10 / 50 * 0.9  # 10 intervals of 20 ms


def test_rate_limit_paces_an_async_node_across_concurrent_items():
    @node(output_name="y", rate_limit=100)
    async def stamp(x: int) -> float:
        return time.monotonic()

    engine = HypernodesEngine(map_executor="async")
    stamps = [
        r["y"] for r in Pipeline(nodes=[stamp]).map({"x": list(range(21))}, "x", engine=engine)
    ]
    assert max(stamps) - min(stamps) >= 20 / 100 * 0.9


def test_node_called_on_a_function_takes_the_same_options():
    fetch, attempts = flaky_node(2)
    retried = node(fetch.func, retries=2, backoff=0.001)  # not the decorator form
    assert retried.output_name == "fetch" and retried.options.retries == 2
    assert Pipeline(nodes=[retried]).run({"x": 5}) == {"fetch": 50}
    assert attempts == {5: 3}
