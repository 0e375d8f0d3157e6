"""Stopping a run part-way and keeping what finished: Ctrl-C (SIGINT), SIGTERM, a deadline,
or the cancellation of the task awaiting it.

    results = pipeline.map(inputs=..., map_over="url", on_error="collect", deadline=60)
    results.cancelled     # a `Cancelled` record per item that did not finish
    results = results.retry()   # runs them; the finished calls come from the cache

A map runs inside a `cancellable()` scope, which holds one `Cancel` token for the whole
call (nested maps share it). The scope turns SIGINT and SIGTERM into `token.cancel(...)`
(a second Ctrl-C raises KeyboardInterrupt at once) and starts the deadline's timer. A
cancelled token stops the run cooperatively, the same way on every engine:

- no new node call starts: the runtime checks the token before each call
  (`raise_if_cancelled`) and raises `RunCancelled`, which no retry or on_error catches;
- in-flight async calls get `CancelledError` (their `finally` blocks run): the executors
  register hooks (`on_cancel`) that cancel their tasks;
- sync calls in threads are left to finish for `GRACE` seconds, then abandoned (they end
  in their threads, their results cached as they return);
- what finished is kept: in the cache, call by call, and under on_error "collect" in the
  results, where each unfinished item is a `Cancelled` record (`unfinished`). Otherwise the
  interrupt is raised again (`token.error()`): KeyboardInterrupt or `DeadlineExceeded`. (A
  cancelled task is asyncio's own cancellation: its CancelledError goes on, after the
  same cleanup.)
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..results import ERROR_FIELD, Cancelled

GRACE = 1.0  # seconds a cancelled run waits for sync calls in flight before leaving them

REASONS = {
    "interrupt": "interrupted (SIGINT, Ctrl-C)",
    "terminate": "terminated (SIGTERM)",
}


_ids = itertools.count()


class RunCancelled(Exception):
    """Raised where a node call would start after its run was cancelled. The runtime lets
    it through unwrapped: no retry, no on_error policy and no callback sees it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DeadlineExceeded(TimeoutError):
    """A map's `deadline` passed before every item finished (on_error other than
    "collect"; under "collect" the unfinished items are `Cancelled` records)."""


class Cancel:
    """The cancellation token of one run: thread-safe, cancelled once, with hooks.

    Executors register what stops their work (`on_cancel`); the runtime asks `cancelled`
    before each call. `cancelled_at` tells how long sync calls in flight may still take
    (`GRACE`)."""

    def __init__(self, deadline: float | None = None):
        # unique among this driver's runs (on Ray, a job's named actors are its own)
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.deadline = deadline
        self.reason: str | None = None
        self.cancelled_at: float | None = None
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.interrupt_main = False  # the main thread runs the nodes: Ctrl-C interrupts it
        self.forced = False  # a second Ctrl-C: stop at once

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str) -> None:
        """Cancel the run (the first reason given wins) and run the hooks, once."""
        global _any_cancelled
        with self._lock:
            if self.reason is not None:
                return
            self.reason, self.cancelled_at = reason, time.monotonic()
            hooks, self._hooks = self._hooks, []
        _any_cancelled = True  # from now on the runtime's check reads the context
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call `hook` when the run is cancelled (at once if it is); returns its removal."""
        with self._lock:
            if self.reason is None:
                self._hooks.append(hook)
                return lambda: self._remove(hook)
        hook()
        return lambda: None

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def grace_left(self) -> float | None:
        """Seconds left to wait for sync calls in flight (None: not cancelled)."""
        if self.cancelled_at is None:
            return None
        return max(0.0, self.cancelled_at + GRACE - time.monotonic())

    def message(self) -> str:
        if self.reason == "deadline":
            return f"the deadline of {self.deadline:g} s passed"
        return REASONS.get(self.reason or "", self.reason or "")

    def record(self, index: int | None) -> dict[str, Any]:
        """The result of an item that did not finish."""
        return {ERROR_FIELD: Cancelled.of(index, self.message())}

    def stopped(self) -> RunCancelled:
        """What a call that must not start (or was cancelled in flight) raises."""
        return RunCancelled(self.message())

    def check(self) -> None:
        """Raise `stopped()` once the run is cancelled."""
        if self.cancelled:
            raise self.stopped()

    def error(self) -> BaseException:
        """What a run that keeps no records raises once it stopped."""
        if self.reason == "deadline":
            return DeadlineExceeded(f"map stopped: {self.message()}")
        return KeyboardInterrupt()


class PolledCancel(Cancel):
    """Another process's token as seen here: cancelled once `told()` gives the driver's
    message, asked at most every `interval` seconds (the runtime asks before each call)."""

    interval = 0.02

    def __init__(self) -> None:
        super().__init__()
        self._asked = 0.0
        self._message = ""

    @property
    def cancelled(self) -> bool:
        if self.reason is None:
            now = time.monotonic()
            if now - self._asked > self.interval:
                self._asked = now
                told = self.told()
                if told is not None:
                    self._message = told
                    self.cancel("driver")
        return self.reason is not None

    def message(self) -> str:
        return self._message

    def told(self) -> str | None:
        """The driver's message once its run is cancelled, else None."""
        raise NotImplementedError


class FileCancel(PolledCancel):
    """A process worker's view of its driver's token: the driver creates the flag file
    `path` when the run is cancelled."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def told(self) -> str | None:
        try:
            with open(self.path) as flag:
                return flag.read()
        except FileNotFoundError:
            return None


class ClusterCancel(PolledCancel):
    """A Ray worker's view of its driver's token: the driver starts the named actor
    `flag_name(id)` when the run is cancelled (`raise_cluster_flag`). Its existence is the
    message: the workers need no channel of their own."""

    interval = 0.25  # a lookup asks the cluster's control store

    def __init__(self, token_id: str):
        super().__init__()
        self.id = token_id

    def told(self) -> str | None:
        import ray

        try:
            flag = ray.get_actor(flag_name(self.id))
        except ValueError:  # not started: the run goes on
            return None
        return ray.get(flag.message.remote())


def flag_name(token_id: str) -> str:
    return f"hypernodes-cancel-{token_id}"


class _Flag:
    """The actor whose existence tells a cluster's workers that a run was cancelled."""

    def __init__(self, message: str):
        self._message = message

    def message(self) -> str:
        return self._message


def raise_cluster_flag(token: Cancel) -> Callable[[], None]:
    """On Ray: when `token` is cancelled, start its flag actor (in a thread: the hook may
    run in a signal handler). Returns what removes the hook and the actor."""
    started: list[Any] = []

    def start() -> None:
        import ray

        flag = ray.remote(num_cpus=0)(_Flag).options(name=flag_name(token.id))
        actor = flag.remote(token.message())
        ray.get(actor.message.remote())  # started: the workers can find it
        started.append(actor)

    def in_thread() -> None:
        threading.Thread(target=start, name="hypernodes-cancel", daemon=True).start()

    unhook = token.on_cancel(in_thread)

    def remove() -> None:
        unhook()
        import ray

        for actor in started:
            ray.kill(actor)

    return remove


_CURRENT: contextvars.ContextVar[Cancel | None] = contextvars.ContextVar(
    "hypernodes_daft_cancel", default=None
)
_any_cancelled = False  # no token was ever cancelled here: the runtime's check is one read
_active: dict[str, Cancel] = {}  # by id: Daft functions in this process find their run's


def current() -> Cancel | None:
    """The token of the run this thread or task works for (None: outside a run)."""
    return _CURRENT.get()


def cancel_tasks(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel each of `tasks` (on their loop's thread: `call_soon_threadsafe`)."""
    for task in tasks:
        task.cancel()


def cancelling(token: Cancel | None, tasks: list[asyncio.Future[Any]]) -> Callable[[], None]:
    """While the returned removal is not called, cancelling the run of `token` (from any
    thread) cancels `tasks`, which run on this thread's event loop."""
    if token is None:
        return lambda: None
    loop = asyncio.get_running_loop()
    return token.on_cancel(lambda: loop.call_soon_threadsafe(cancel_tasks, tasks))


_remote: dict[str, Cancel] = {}  # by id: the tokens of runs whose driver is elsewhere


def token_for(token_id: str | None) -> Cancel | None:
    """A run's token by its id (Daft functions carry the id): the driver's own in its
    process, a `ClusterCancel` in a Ray worker; None elsewhere."""
    if token_id is None:
        return None
    token = _active.get(token_id)
    if token is not None:
        return token
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return _remote.setdefault(token_id, ClusterCancel(token_id))


def raise_if_cancelled() -> None:
    """Before a node call: raise `RunCancelled` if the run it works for was cancelled."""
    if not _any_cancelled:
        return
    token = _CURRENT.get()
    if token is not None:
        token.check()


@contextmanager
def watching(token: Cancel | None) -> Iterator[None]:
    """Work here for `token`'s run: a coroutine on another thread's loop, a worker
    process (its `FileCancel`)."""
    global _any_cancelled
    if isinstance(token, PolledCancel):
        _any_cancelled = True  # such a token is cancelled by asking it
    reset = _CURRENT.set(token)
    try:
        yield
    finally:
        _CURRENT.reset(reset)


@contextmanager
def cancellable(deadline: float | None = None) -> Iterator[Cancel]:
    """The scope of one run: its token in the context, the deadline's timer, and (in the
    main thread, where Python's default handlers are installed) SIGINT and SIGTERM turned
    into cancellation. A scope inside another (a map in a node) uses the outer token."""
    outer = _CURRENT.get()
    if outer is not None and deadline is None:
        yield outer
        return
    token = Cancel(deadline)
    follow: Callable[[], None] = lambda: None  # noqa: E731
    if outer is not None:  # a map with its own deadline inside a run: both stop it
        follow = outer.on_cancel(lambda: token.cancel(outer.reason or "interrupt"))
    reset = _CURRENT.set(token)
    _active[token.id] = token
    timer = _deadline_timer(token, deadline)
    restore = _signals_to(token)
    try:
        yield token
    finally:
        restore()
        follow()
        if timer is not None:
            timer.cancel()
        _active.pop(token.id, None)
        _CURRENT.reset(reset)


_STOPS = (RunCancelled, KeyboardInterrupt, asyncio.CancelledError)


def settled_stream(
    stream: Iterator[tuple[int, Any]], n_items: int, token: Cancel | None, on_error: str
) -> Iterator[tuple[int, Any]]:
    """A map's `(index, outputs)` stream that, once the run is cancelled and the stream has
    stopped, yields a `Cancelled` record per item it did not yield (on_error "collect") or
    raises the run's interrupt."""
    if token is None:
        yield from stream
        return
    done = bytearray(n_items)
    try:
        for index, outputs in stream:
            done[index] = 1
            yield index, outputs
    except _STOPS:
        if not token.cancelled or token.forced:
            raise
    yield from _rest(done, token, on_error)


async def asettled_stream(
    stream: AsyncIterator[tuple[int, Any]], n_items: int, token: Cancel | None, on_error: str
) -> AsyncIterator[tuple[int, Any]]:
    """`settled_stream` for async streams."""
    if token is None:
        async for entry in stream:
            yield entry
        return
    done = bytearray(n_items)
    try:
        async for index, outputs in stream:
            done[index] = 1
            yield index, outputs
    except _STOPS:
        if not token.cancelled or token.forced:
            raise
    for entry in _rest(done, token, on_error):
        yield entry


def _rest(done: bytearray, token: Cancel, on_error: str) -> Iterator[tuple[int, Any]]:
    """Once the run is cancelled: each item not `done`, as a record (on_error "collect"),
    or the run's interrupt raised."""
    if not token.cancelled:
        return
    if on_error != "collect":
        raise token.error()
    for index, finished in enumerate(done):
        if not finished:
            yield index, token.record(index)


def unfinished(results: list[Any], token: Cancel | None, on_error: str) -> list[Any]:
    """A map's results where the items not run are None: under "collect" each becomes a
    `Cancelled` record; otherwise the run's interrupt is raised."""
    if token is not None:
        done = bytearray(result is not None for result in results)
        for index, record in _rest(done, token, on_error):
            results[index] = record
    return results


def check_deadline(deadline: Any, owner: str) -> float | None:
    if deadline is None:
        return None
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or deadline <= 0:
        raise ValueError(f"{owner}: deadline must be a number of seconds > 0, got {deadline!r}")
    return float(deadline)


def _deadline_timer(token: Cancel, deadline: float | None) -> threading.Timer | None:
    if deadline is None:
        return None
    timer = threading.Timer(deadline, token.cancel, ("deadline",))
    timer.daemon = True
    timer.start()
    return timer


_installed: dict[int, Any] = {}  # the handlers of the scope in the main thread


def reassert_signals() -> None:
    """Install the scope's handlers again. Daft's native runner listens for Ctrl-C itself
    and, when it comes, drops the query's results; installing ours again (in the main
    thread, while its query runs) keeps SIGINT ours, so a cancelled query drains instead."""
    for signum, handler in _installed.items():
        signal.signal(signum, handler)


def _signals_to(token: Cancel) -> Callable[[], None]:
    """SIGINT and SIGTERM cancel `token` while the run lasts; returns the restoring call.
    Only where Python's defaults are in place: a handler of the user's (or asyncio's) is
    theirs to keep."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous: dict[int, Any] = {}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            reason = "interrupt" if signum == signal.SIGINT else "terminate"
            _installed[signum] = _handler(token, reason)
            previous[signum] = signal.signal(signum, _installed[signum])

    def restore() -> None:
        for signum, handler in previous.items():
            _installed.pop(signum, None)
            signal.signal(signum, handler)

    return restore


def _handler(token: Cancel, reason: str) -> Callable[[int, Any], None]:
    def on_signal(signum: int, frame: Any) -> None:
        if token.cancelled:  # a second Ctrl-C: stop waiting for the run to wind down
            token.forced = True
            raise KeyboardInterrupt
        token.cancel(reason)
        if token.interrupt_main:
            raise KeyboardInterrupt

    return on_signal
