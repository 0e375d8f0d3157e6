"""Bounding how many calls of one node are in flight (`@node(max_concurrency=N)`) and how
often they start (`@node(rate_limit=R)`, calls per second).

    bounded = limit_calls(func, is_async=True, limit=10)   # same signature, at most 10 at once

Async calls are bounded per event loop (one loop per process here, and per Daft worker),
sync calls per process with a semaphore: the bound holds across every item of a map.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Callable
from typing import Any


class _Slots:
    """Permits for calls in flight on one event loop. Unlike a semaphore, a batch that fits
    takes all its permits at once, so a batch under the limit costs what `gather` costs."""

    def __init__(self, limit: int):
        self.free = limit
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self, n: int) -> bool:
        if self.free >= n and not self.waiting:
            self.free -= n
            return True
        return False

    async def wait(self) -> None:
        if self.take(1):
            return
        ticket = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        await ticket  # `give` hands its permit straight to this waiter

    def give(self, n: int) -> None:
        for _ in range(n):
            while self.waiting and self.waiting[0].done():  # a cancelled waiter
                self.waiting.popleft()
            if self.waiting:
                self.waiting.popleft().set_result(None)
            else:
                self.free += 1


class LoopSlots:
    """One `_Slots` per event loop (asyncio primitives belong to the loop they run on)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._by_loop: dict[int, _Slots] = {}

    def here(self) -> _Slots:
        loop = id(asyncio.get_running_loop())
        slots = self._by_loop.get(loop)
        return slots if slots is not None else self._by_loop.setdefault(loop, _Slots(self.limit))

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "_by_loop": {}}  # another process: its own loops


def limit_calls(
    func: Callable[..., Any], is_async: bool, limit: int | LoopSlots
) -> Callable[..., Any]:
    """`func` with at most `limit` calls in flight at once (async: per event loop; a
    LoopSlots given is shared with whoever else holds it)."""
    if is_async:
        loops = limit if isinstance(limit, LoopSlots) else LoopSlots(limit)

        @functools.wraps(func)
        async def bounded_async(*args: Any, **kwargs: Any) -> Any:
            slots = loops.here()
            await slots.wait()
            try:
                return await func(*args, **kwargs)
            finally:
                slots.give(1)

        return bounded_async
    assert isinstance(limit, int), "a LoopSlots bounds async calls only"
    gate = threading.BoundedSemaphore(limit)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        with gate:
            return func(*args, **kwargs)

    return bounded


class RateLimit:
    """At most `per_second` call starts per second in this process, evenly spaced."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Reserve the next start; how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def __getstate__(self) -> dict[str, Any]:  # another process keeps its own pace
        return {"interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(1.0 / state["interval"])


def rate_limited(func: Callable[..., Any], is_async: bool, per_second: float) -> Any:
    """`func` started at most `per_second` times a second."""
    rate = RateLimit(per_second)
    if is_async:

        @functools.wraps(func)
        async def paced_async(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(rate.delay())
            return await func(*args, **kwargs)

        return paced_async

    @functools.wraps(func)
    def paced(*args: Any, **kwargs: Any) -> Any:
        time.sleep(rate.delay())
        return func(*args, **kwargs)

    return paced
