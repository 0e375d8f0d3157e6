"""Who goes first when calls wait: `@node(priority=...)` plus the map item's priority.

    queue = WaitQueue()                 # aging: AGING_SECONDS of waiting = +1 priority
    queue.push(waiter, priority=2.0)    # higher first; equal priorities: first come first
    first = queue.pop_first()           # the waiter to serve next, or None

Every waiting place of the runtime keeps its waiters in a `WaitQueue`: a node's
`max_concurrency` slots (async and sync), a slot object several nodes share, a
`ClusterLimit` (its Ray actor and its in-process fallback) and a `rate_limit`'s starts.

A call's priority is its node's `priority` plus its map item's (`Pipeline.map(...,
priority=...)`), which the map executors set for the item's calls (`item_priority_set`).
It is looked up only when a call has to wait: a call that finds a free slot pays nothing.

Starvation: linear aging. A waiter that arrived at monotonic time t with priority p has,
at time `now`, the effective priority p + (now - t) / A, where A is `AGING_SECONDS` (or a
queue's own `aging`): a call arriving more than A * (its priority - a waiter's) seconds
after that waiter goes after it, so a stream of higher-priority calls cannot hold a call
back for ever. Comparing two waiters at any moment compares p - t / A, a number fixed
when the waiter arrives, so the heap never re-sorts.
`aging=None` is strict priority: a lower one waits while any higher one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = [
    "AGING_SECONDS",
    "LoopTurn",
    "ThreadTurn",
    "WaitQueue",
    "is_live",
    "item_priority",
    "item_priority_reset",
    "item_priority_set",
]

AGING_SECONDS = 10.0
"""Seconds of waiting worth one unit of priority (see the module's docstring)."""

T = TypeVar("T")

_ITEM_PRIORITY: contextvars.ContextVar[float] = contextvars.ContextVar(
    "hypernodes_daft_item_priority", default=0.0
)


def item_priority() -> float:
    """The priority of the map item whose calls run here (0 outside a prioritized map)."""
    return _ITEM_PRIORITY.get()


def item_priority_set(priority: float) -> contextvars.Token[float]:
    """Make `priority` the item priority of the calls run from here (tasks and threads
    started with a copy of this context inherit it); undo with `item_priority_reset`."""
    return _ITEM_PRIORITY.set(priority)


def item_priority_reset(token: contextvars.Token[float]) -> None:
    _ITEM_PRIORITY.reset(token)


class WaitQueue(list, Generic[T]):  # type: ignore[type-arg]
    """Waiters, served highest (aged) priority first, in arrival order among equals.

    The queue is its heap, a list: `if queue:` and `len(queue)` cost what they cost on a
    list, so a limit with nobody waiting checks it for free. Not thread-safe: its owner
    holds its lock (or its event loop) around each use. `aging`: seconds per unit of
    priority (None: strict); `clock`: for tests.
    """

    __slots__ = ("aging", "clock", "_arrivals")

    def __init__(
        self, aging: float | None = AGING_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__()
        if aging is not None and not aging > 0:
            raise ValueError(f"priority aging must be > 0 seconds or None, got {aging!r}")
        self.aging = aging
        self.clock = clock
        self._arrivals = itertools.count()  # ties: first come, first served

    def push(self, waiter: T, priority: float) -> None:
        """Queue `waiter` with `priority`, arriving now."""
        rank = -priority if self.aging is None else self.clock() / self.aging - priority
        heapq.heappush(self, (rank, next(self._arrivals), waiter))

    def pop_first(self, live: Callable[[T], bool] = lambda _: True) -> T | None:
        """The first waiter still `live` (the others, given up, are dropped), or None."""
        while self:
            waiter = heapq.heappop(self)[2]
            if live(waiter):
                return waiter
        return None


class ThreadTurn:
    """A thread's place in a queue: `wait()` blocks until `grant()` (from any thread)."""

    __slots__ = ("_gate", "granted", "abandoned")

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._gate.acquire()
        self.granted = False
        self.abandoned = False  # its thread stopped waiting (interrupted)

    def wait(self) -> None:
        self._gate.acquire()

    def grant(self) -> None:
        self.granted = True
        self._gate.release()

    def live(self) -> bool:
        return not self.abandoned


class LoopTurn:
    """A coroutine's place in a queue served from any thread: `await turn.future` until
    `grant()`; a cancelled waiter is no longer `live`."""

    __slots__ = ("future", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self._loop.create_future()

    def grant(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop closed: nobody is left to wake
            self._loop.call_soon_threadsafe(_resolve, self.future)

    def live(self) -> bool:
        return not self.future.done()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile
        future.set_result(None)


def is_live(turn: Any) -> bool:
    return turn.live()
