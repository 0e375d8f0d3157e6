"""Bounding how many calls of one node are in flight (`@node(max_concurrency=N)`) and how
often they start (`@node(rate_limit=R)`, calls per second).

    bounded = limit_calls(func, is_async=True, limit=10)   # same signature, at most 10 at once

Async calls are bounded per event loop (one loop per process here, and per Daft worker),
sync calls per process with a semaphore: the bound holds across every item of a map.
`ClusterLimit(N)` bounds them across every process of a Ray cluster instead.
`local_bound` lowers a node's bound to the calls this machine can hold at once for what
each one asks (`@node(gpus=1)`: one call per visible GPU).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..options import NodeOptions, SharedLimit
from ..resources import Placement, check_fits, local_machine


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
    func: Callable[..., Any], is_async: bool, limit: int | LoopSlots | SharedLimit
) -> Callable[..., Any]:
    """`func` with at most `limit` calls in flight at once (async: per event loop; a
    LoopSlots given is shared with whoever else holds it; a ClusterLimit: cluster-wide)."""
    if isinstance(limit, SharedLimit):  # a ClusterLimit, say
        return limit.bound(func, is_async)
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


class ClusterLimit:
    """At most `limit` calls in flight across every process of a Ray cluster, for the
    nodes given it: `@node(max_concurrency=ClusterLimit(64))` (one object may serve
    several nodes that share a service's quota).

        quota = ClusterLimit(64, name="llm-api")
        @node(output_name="reply", max_concurrency=quota)
        async def ask(prompt: str) -> str: ...

    The slots live in a named Ray actor (`name`), created by the first call; each call
    takes a slot from it and gives it back (two actor messages: worth it for calls to a
    service, not for microsecond nodes). Where Ray is not running, the process is the whole
    cluster and the bound is kept in the process. A worker that dies holding a slot loses
    it for the rest of the job.
    """

    def __init__(self, limit: int, name: str | None = None):
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"ClusterLimit: limit must be a positive int, got {limit!r}")
        self.limit = limit
        self.name = name or f"hypernodes-limit-{uuid.uuid4().hex[:12]}"
        self._actor: Any = None
        self._local: dict[bool, Callable[..., Any]] = {}

    def bound(self, func: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        """`func` taking one of the cluster's slots for each call."""
        if is_async:

            @functools.wraps(func)
            async def bounded_async(*args: Any, **kwargs: Any) -> Any:
                actor = self._slots()
                if actor is None:
                    return await self._in_process(func, True)(*args, **kwargs)
                ticket = uuid.uuid4().hex
                try:
                    await actor.acquire.remote(ticket)
                    return await func(*args, **kwargs)
                finally:  # also when cancelled while waiting: the actor gives it back
                    actor.release.remote(ticket)

            return bounded_async

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            actor = self._slots()
            if actor is None:
                return self._in_process(func, False)(*args, **kwargs)
            import ray

            ticket = uuid.uuid4().hex
            try:
                ray.get(actor.acquire.remote(ticket))
                return func(*args, **kwargs)
            finally:
                actor.release.remote(ticket)

        return bounded

    def _slots(self) -> Any:
        """The cluster's slot actor, or None where Ray is not running."""
        if self._actor is None:
            ray = sys.modules.get("ray")  # not imported: certainly not running
            if ray is None or not ray.is_initialized():
                return None
            actor = ray.remote(num_cpus=0)(_SlotsActor)
            self._actor = actor.options(name=self.name, get_if_exists=True).remote(self.limit)
        return self._actor

    def _in_process(self, func: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async not in self._local:
            self._local[is_async] = limit_calls(_call, is_async, self.limit)
        bounded = self._local[is_async]
        return functools.partial(bounded, func)

    def __getstate__(self) -> dict[str, Any]:  # another process finds the actor by name
        return {"limit": self.limit, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["name"])

    def __repr__(self) -> str:
        return f"ClusterLimit({self.limit}, name={self.name!r})"


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class _SlotsActor:
    """A Ray actor holding a ClusterLimit's slots. Calls are tickets: `release(ticket)`
    gives back a slot held, or, if the ticket still waits (its caller gave up), gives it
    back as soon as it is granted. Async methods: they all run on the actor's event loop."""

    def __init__(self, limit: int):
        self.slots = _Slots(limit)
        self.held: set[str] = set()
        self.abandoned: set[str] = set()

    async def acquire(self, ticket: str) -> None:
        await self.slots.wait()
        if ticket in self.abandoned:
            self.abandoned.discard(ticket)
            self.slots.give(1)
        else:
            self.held.add(ticket)

    async def release(self, ticket: str) -> None:
        if ticket in self.held:
            self.held.discard(ticket)
            self.slots.give(1)
        else:
            self.abandoned.add(ticket)

    async def in_use(self) -> int:
        return len(self.held)


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


def local_bound(options: NodeOptions, label: str) -> int | SharedLimit | None:
    """The node's `max_concurrency`, lowered to as many calls as this machine holds at once
    for its `cpus`/`gpus`/`memory` (custom Ray resources name cluster machines: they do not
    bound local calls). A request this machine cannot hold once is a `ResourceError`."""
    request = replace(options.request, custom=())
    if not request or isinstance(options.max_concurrency, SharedLimit):
        return options.max_concurrency
    machine = local_machine()
    check_fits([Placement(label, request)], [machine], "this machine")
    fits = request.copies_on(machine)
    return min(fits, options.max_concurrency or fits)
