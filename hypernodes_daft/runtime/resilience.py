"""Retries with exponential backoff and per-call timeouts (`@node(retries=, timeout=)`).

    call = with_retries(with_timeout(func, is_async, 5.0), retries=3, backoff=0.1,
                        retry_on=(TimeoutError, ConnectionError))

Backoff waits `backoff * 2**attempt` seconds plus up to `backoff` of random jitter
(tenacity) and never holds a concurrency slot: the limit wraps one attempt.
An async call past its timeout is cancelled; a sync one cannot be interrupted, so the caller
stops waiting, raises TimeoutError, and the call finishes in its thread, ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tenacity

from .limits import limit_calls, rate_limited

if TYPE_CHECKING:
    from ..node import NodeOptions

_timeouts = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="hypernodes-timeout")


def with_timeout(func: Callable[..., Any], is_async: bool, seconds: float) -> Callable[..., Any]:
    """`func`, failing with TimeoutError when a call takes longer than `seconds`."""
    if is_async:

        @functools.wraps(func)
        async def bounded_async(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.wait_for(func(*args, **kwargs), seconds)

        return bounded_async

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        future = _timeouts.submit(func, *args, **kwargs)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"call took longer than {seconds} s") from None

    return bounded


def with_retries(
    func: Callable[..., Any],
    retries: int,
    backoff: float,
    retry_on: tuple[type[BaseException], ...],
    on_retry: Callable[[], None] | None = None,
) -> Callable[..., Any]:
    """`func` called up to `retries + 1` times while it raises one of `retry_on`;
    `on_retry()` is called before each retry (callbacks count them). The exception that
    ends the retries carries how many attempts were made (`hypernodes_attempts`, for the
    error records of on_error="collect")."""
    policy = {
        "stop": tenacity.stop_after_attempt(retries + 1),
        "wait": tenacity.wait_exponential(multiplier=backoff) + tenacity.wait_random(0, backoff),
        # an open circuit is not worth a retry: the breaker decides when to try again
        "retry": tenacity.retry_if_exception_type(retry_on)
        & tenacity.retry_if_not_exception_type(CircuitOpenError),
        "reraise": True,  # the node's own exception, not tenacity's RetryError
    }
    if on_retry is not None:
        policy["before_sleep"] = lambda _state: on_retry()
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def retried_async(*args: Any, **kwargs: Any) -> Any:
            retrying = tenacity.AsyncRetrying(**policy)  # sleeps with asyncio
            try:
                return await retrying(func, *args, **kwargs)
            except Exception as error:
                _count_attempts(error, retrying)
                raise

        return retried_async

    @functools.wraps(func)
    def retried(*args: Any, **kwargs: Any) -> Any:
        retrying = tenacity.Retrying(**policy)
        try:
            return retrying(func, *args, **kwargs)
        except Exception as error:
            _count_attempts(error, retrying)
            raise

    return retried


def _count_attempts(error: Exception, retrying: Any) -> None:
    attempts = retrying.statistics.get("attempt_number", 1)
    with contextlib.suppress(AttributeError):  # an exception type without a __dict__
        error.hypernodes_attempts = attempts  # type: ignore[attr-defined]


class CircuitOpenError(RuntimeError):
    """A node's circuit breaker is open: the call failed fast, without reaching the service."""


class CircuitBreaker:
    """Stops calling a service that keeps failing: after `failures` consecutive failed calls
    every call fails fast with CircuitOpenError for `cooldown` seconds; then one probe call
    goes through, and its success closes the circuit (its failure opens it again).

        @node(output_name="reply", breaker=CircuitBreaker(failures=5, cooldown=30))
        async def ask(prompt: str) -> str: ...

    One breaker per node and process, shared by every item of a map. Only the outcomes of
    calls admitted since the circuit last opened or closed count: a call let through before
    it opened and ending after (in flight meanwhile) neither closes it nor restarts the
    cool-down, nor ends the probe's turn.
    """

    def __init__(self, failures: int = 5, cooldown: float = 30.0):
        if failures < 1 or cooldown <= 0:
            raise ValueError("CircuitBreaker needs failures >= 1 and cooldown > 0")
        self.failures = failures
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._failed = 0  # consecutive failures
        self._opened_at: float | None = None
        self._probing = False
        self._era = 0  # +1 each time the circuit opens or closes

    def admit(self) -> int:
        """Let a call through, or raise CircuitOpenError. The call's ticket, for `record`."""
        with self._lock:
            if self._opened_at is None:
                return self._era
            if time.monotonic() - self._opened_at >= self.cooldown and not self._probing:
                self._probing = True  # half-open: this call is the probe
                return self._era
        raise CircuitOpenError(
            f"circuit open after {self.failures} consecutive failures; "
            f"calls fail fast for {self.cooldown} s before a probe"
        )

    def record(self, succeeded: bool, ticket: int) -> None:
        """The outcome of the call `admit` gave `ticket`."""
        with self._lock:
            if ticket != self._era:
                return  # admitted before the circuit last opened or closed: stale news
            if self._opened_at is not None:  # the probe (no other call is admitted)
                self._probing = False
                self._era += 1
                if succeeded:
                    self._failed, self._opened_at = 0, None
                else:
                    self._opened_at = time.monotonic()  # open again: wait another cool-down
                return
            if succeeded:
                self._failed = 0
                return
            self._failed += 1
            if self._failed >= self.failures:
                self._opened_at = time.monotonic()
                self._era += 1

    def release(self, ticket: int) -> None:
        """The call `admit` gave `ticket` ended without an outcome (cancelled): a probe's
        turn passes to the next call, and nothing is counted."""
        with self._lock:
            if ticket == self._era and self._opened_at is not None:
                self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def __getstate__(self) -> dict[str, Any]:  # another process starts closed
        return {"failures": self.failures, "cooldown": self.cooldown}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["failures"], state["cooldown"])


def with_breaker(func: Callable[..., Any], is_async: bool, breaker: CircuitBreaker) -> Any:
    """`func` guarded by `breaker`."""
    if is_async:

        @functools.wraps(func)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            ticket = breaker.admit()
            try:
                result = await func(*args, **kwargs)
            except Exception:
                breaker.record(False, ticket)
                raise
            except BaseException:  # cancelled: no news about the service
                breaker.release(ticket)
                raise
            breaker.record(True, ticket)
            return result

        return guarded_async

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        ticket = breaker.admit()
        try:
            result = func(*args, **kwargs)
        except Exception:
            breaker.record(False, ticket)
            raise
        except BaseException:  # interrupted: no news about the service
            breaker.release(ticket)
            raise
        breaker.record(True, ticket)
        return result

    return guarded


def resilient(
    func: Callable[..., Any],
    options: NodeOptions,
    is_async: bool,
    limit: Any = None,
    per_item: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """`func` with, around each attempt, the node's (`options`) timeout, circuit breaker
    (checked once the call holds its slot and its rate-limit turn, so calls queued before a circuit
    opened do not reach a dead service), concurrency bound (`limit`: a number, a shared
    LoopSlots, or None) and rate limit; and its retries around all (a backoff wait holds
    no slot); calls waiting for a slot or a rate-limit turn go first by the node's priority
    plus their map item's. `per_item` (a `batch_size` node called per item: `grouping.grouper_for`)
    turns the list function, so wrapped, into a function of one item; `on_retry()` is
    called before each retry."""
    timeout = options.timeout
    if timeout is not None:
        func = with_timeout(func, is_async, timeout)
    breaker = options.breaker
    if breaker is not None:
        func = with_breaker(func, is_async, breaker)
    if limit is not None:
        func = limit_calls(func, is_async, limit, options.priority)
    rate = options.rate_limit
    if rate is not None:
        func = rate_limited(func, is_async, rate, options.priority)
    if per_item is not None:
        # one grouped request is one attempt: under the timeout, the breaker (one failure),
        # the concurrency bound (max_concurrency counts grouped calls in flight) and the
        # rate limit (requests a second). Retries stay per item, outside: a failed item
        # joins a later group rather than re-sending the whole group it failed with.
        func = per_item(func)
    if options.retries:
        func = with_retries(func, options.retries, options.backoff, options.retry_on, on_retry)
    return func
