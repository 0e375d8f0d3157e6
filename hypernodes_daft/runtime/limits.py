"""Bounding how many calls of one node are in flight (`@node(max_concurrency=N)`) and how
often they start (`@node(rate_limit=R)`, calls per second).

    bounded = limit_calls(func, is_async=True, limit=10)   # same signature, at most 10 at once

Async calls are bounded per event loop (one loop per process here, and per Daft worker),
sync calls per process with a semaphore: the bound holds across every item of a map.
`ClusterLimit(N)` bounds them across every process of a Ray cluster instead.
Calls that wait go first by priority, the node's (`@node(priority=2)`) plus their map
item's (runtime/priority.py). `local_bound` lowers a node's bound to the calls this machine
can hold at once for what each one asks (`@node(gpus=1)`: one call per visible GPU).
"""

from __future__ import annotations

import asyncio
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
from .priority import AGING_SECONDS, LoopTurn, ThreadTurn, WaitQueue, is_live, item_priority


class _Slots:
    """Permits for calls in flight on one event loop. Unlike a semaphore, a batch that fits
    takes all its permits at once, so a batch under the limit costs what `gather` costs.
    Waiters are served by priority (runtime/priority.py)."""

    def __init__(self, limit: int, aging: float | None = AGING_SECONDS):
        self.free = limit
        self.waiting: WaitQueue[asyncio.Future[None]] = WaitQueue(aging)

    def take(self, n: int) -> bool:
        if self.free >= n and not self.waiting:
            self.free -= n
            return True
        return False

    async def wait(self, priority: float = 0.0) -> None:
        """Take a permit; a call that waits for one queues with `priority` plus its map
        item's (looked up only then: the free path costs nothing)."""
        if self.take(1):
            return
        ticket = asyncio.get_running_loop().create_future()
        self.waiting.push(ticket, priority + item_priority())
        await ticket  # `give` hands its permit straight to this waiter

    def give(self, n: int) -> None:
        for _ in range(n):
            # the first waiter not cancelled; `if self.waiting`: no call when none waits
            ticket = self.waiting.pop_first(_pending) if self.waiting else None
            if ticket is not None:
                ticket.set_result(None)
            else:
                self.free += 1


def _pending(ticket: asyncio.Future[None]) -> bool:
    return not ticket.done()


class LoopSlots:
    """One `_Slots` per event loop (asyncio primitives belong to the loop they run on)."""

    def __init__(self, limit: int, aging: float | None = AGING_SECONDS):
        self.limit = limit
        self.aging = aging
        self._by_loop: dict[int, _Slots] = {}

    def here(self) -> _Slots:
        loop = id(asyncio.get_running_loop())
        slots = self._by_loop.get(loop)
        if slots is None:
            slots = self._by_loop.setdefault(loop, _Slots(self.limit, self.aging))
        return slots

    def __getstate__(self) -> dict[str, Any]:  # another process: its own loops
        return {"limit": self.limit, "aging": self.aging, "_by_loop": {}}


class ThreadSlots:
    """Permits for sync calls in flight in this process, handed to waiting threads by
    priority (a `threading.BoundedSemaphore` would wake them in no set order).

        slots = ThreadSlots(4)
        slots.acquire(priority=1.0)
        try: ...
        finally: slots.release()
    """

    def __init__(self, limit: int, aging: float | None = AGING_SECONDS):
        self.limit = limit
        self.free = limit
        self.waiting: WaitQueue[ThreadTurn] = WaitQueue(aging)
        self._lock = threading.Lock()

    def acquire(self, priority: float = 0.0) -> None:
        with self._lock:
            if self.free and not self.waiting:
                self.free -= 1
                return
            turn = ThreadTurn()
            self.waiting.push(turn, priority + item_priority())
        try:
            turn.wait()  # `release` hands its permit straight to this thread
        except BaseException:  # interrupted while waiting: give up the place, or the permit
            with self._lock:
                turn.abandoned = True
                granted = turn.granted
            if granted:
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            turn = self.waiting.pop_first(is_live) if self.waiting else None
            if turn is None:
                self.free += 1
            else:
                turn.grant()

    def __getstate__(self) -> dict[str, Any]:  # another process: its own permits
        return {"limit": self.limit, "aging": self.waiting.aging}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["aging"])


def limit_calls(
    func: Callable[..., Any],
    is_async: bool,
    limit: int | LoopSlots | ThreadSlots | SharedLimit,
    priority: float = 0.0,
) -> Callable[..., Any]:
    """`func` with at most `limit` calls in flight at once (async: per event loop; a
    LoopSlots or ThreadSlots given is shared with whoever else holds it; a ClusterLimit:
    cluster-wide). Calls that wait go first by `priority` (the node's) plus their item's."""
    if isinstance(limit, SharedLimit):  # a ClusterLimit, say
        # `bound(func, is_async)` is the protocol's; only a node with a priority asks more
        return limit.bound(func, is_async, priority) if priority else limit.bound(func, is_async)
    if is_async:
        loops = limit if isinstance(limit, LoopSlots) else LoopSlots(limit)

        @functools.wraps(func)
        async def bounded_async(*args: Any, **kwargs: Any) -> Any:
            slots = loops.here()
            await slots.wait(priority)
            try:
                return await func(*args, **kwargs)
            finally:
                slots.give(1)

        return bounded_async
    assert not isinstance(limit, LoopSlots), "a LoopSlots bounds async calls only"
    gate = limit if isinstance(limit, ThreadSlots) else ThreadSlots(limit)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        gate.acquire(priority)
        try:
            return func(*args, **kwargs)
        finally:
            gate.release()

    return bounded


class ClusterLimit:
    """At most `limit` calls in flight across every process of a Ray cluster, for the
    nodes given it: `@node(max_concurrency=ClusterLimit(64))` (one object may serve
    several nodes that share a service's quota).

        quota = ClusterLimit(64, name="llm-api")
        @node(output_name="reply", max_concurrency=quota, priority=1)
        async def ask(prompt: str) -> str: ...

    The slots live in a named Ray actor (`name`), created by the first call; each call
    takes a slot from it and gives it back (two actor messages: worth it for calls to a
    service, not for microsecond nodes). Where Ray is not running, the process is the whole
    cluster and the bound is kept in the process. A worker that dies holding a slot loses
    it for the rest of the job. Waiting calls are served by priority, the node's plus the
    map item's, aged by `aging` seconds per unit (runtime/priority.py; None: strict).
    """

    def __init__(self, limit: int, name: str | None = None, aging: float | None = AGING_SECONDS):
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"ClusterLimit: limit must be a positive int, got {limit!r}")
        WaitQueue(aging)  # checks it
        self.limit = limit
        self.name = name or f"hypernodes-limit-{uuid.uuid4().hex[:12]}"
        self.aging = aging
        self._actor: Any = None
        self._local: dict[bool, LoopSlots | ThreadSlots] = {}

    def bound(
        self, func: Callable[..., Any], is_async: bool, priority: float = 0.0
    ) -> Callable[..., Any]:
        """`func` taking one of the cluster's slots for each call; waiting calls go first
        by `priority` (the node's) plus their map item's."""
        if is_async:
            local_async = self._in_process(func, True, priority)

            @functools.wraps(func)
            async def bounded_async(*args: Any, **kwargs: Any) -> Any:
                actor = self._slots()
                if actor is None:
                    return await local_async(*args, **kwargs)
                ticket = uuid.uuid4().hex
                try:
                    await actor.acquire.remote(ticket, priority + item_priority())
                    return await func(*args, **kwargs)
                finally:  # also when cancelled while waiting: the actor gives it back
                    actor.release.remote(ticket)

            return bounded_async

        local = self._in_process(func, False, priority)

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            actor = self._slots()
            if actor is None:
                return local(*args, **kwargs)
            import ray

            ticket = uuid.uuid4().hex
            try:
                ray.get(actor.acquire.remote(ticket, priority + item_priority()))
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
            self._actor = actor.options(name=self.name, get_if_exists=True).remote(
                self.limit, self.aging
            )
        return self._actor

    def _in_process(
        self, func: Callable[..., Any], is_async: bool, priority: float
    ) -> Callable[..., Any]:
        """`func` bounded by the slots this process keeps for the limit (one set for sync
        calls, one for async, shared by every node given the limit)."""
        if is_async not in self._local:
            kind = LoopSlots if is_async else ThreadSlots
            self._local[is_async] = kind(self.limit, self.aging)
        return limit_calls(func, is_async, self._local[is_async], priority)

    def __getstate__(self) -> dict[str, Any]:  # another process finds the actor by name
        return {"limit": self.limit, "name": self.name, "aging": self.aging}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["name"], state.get("aging", AGING_SECONDS))

    def __repr__(self) -> str:
        return f"ClusterLimit({self.limit}, name={self.name!r})"


class _SlotsActor:
    """A Ray actor holding a ClusterLimit's slots. Calls are tickets: `release(ticket)`
    gives back a slot held, or, if the ticket still waits (its caller gave up), gives it
    back as soon as it is granted. Async methods: they all run on the actor's event loop.
    Waiting tickets are served by the priority their caller sent."""

    def __init__(self, limit: int, aging: float | None = AGING_SECONDS):
        self.slots = _Slots(limit, aging)
        self.held: set[str] = set()
        self.abandoned: set[str] = set()

    async def acquire(self, ticket: str, priority: float = 0.0) -> None:
        await self.slots.wait(priority)
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

    async def waiting(self) -> int:
        return len(self.slots.waiting)


class RateLimit:
    """At most `per_second` call starts per second in this process, evenly spaced.

    A call starts at once when nobody waits and the spacing has passed; otherwise it
    queues, and a pacer thread (running while calls wait) hands out the starts one
    interval apart, by priority (runtime/priority.py), to threads and coroutines alike.
    """

    def __init__(self, per_second: float, aging: float | None = AGING_SECONDS):
        self.interval = 1.0 / per_second
        self.waiting: WaitQueue[ThreadTurn | LoopTurn] = WaitQueue(aging)
        self._next = 0.0  # the earliest next start
        self._lock = threading.Lock()
        self._wake = threading.Event()  # the pacer sleeps on it (set: look again now)
        self._pacing = False

    def wait_turn(self, priority: float = 0.0) -> None:
        """Block this thread until the call may start."""
        with self._lock:
            if self._start_now():
                return
            turn = ThreadTurn()
            self._queue(turn, priority)
        try:
            turn.wait()
        except BaseException:  # interrupted: its start, if granted meanwhile, is lost
            turn.abandoned = True
            raise

    async def await_turn(self, priority: float = 0.0) -> None:
        """Wait, without blocking the event loop, until the call may start."""
        with self._lock:
            if self._start_now():
                return
            turn = LoopTurn()
            self._queue(turn, priority)
        await turn.future

    def _start_now(self) -> bool:
        now = time.monotonic()
        if self.waiting or now < self._next:
            return False
        self._next = now + self.interval
        return True

    def _queue(self, turn: ThreadTurn | LoopTurn, priority: float) -> None:
        self.waiting.push(turn, priority + item_priority())
        if not self._pacing:
            self._pacing = True
            threading.Thread(target=self._pace, name="hypernodes-rate", daemon=True).start()

    def _pace(self) -> None:
        """Grant the waiters their starts, an interval apart, until none waits."""
        while True:
            with self._lock:
                wait = self._next - time.monotonic()
                if wait <= 0:
                    turn = self.waiting.pop_first(is_live)
                    if turn is None:
                        self._pacing = False
                        return
                    self._next = time.monotonic() + self.interval
                    turn.grant()
                    continue
                self._wake.clear()
            self._wake.wait(wait)

    def __getstate__(self) -> dict[str, Any]:  # another process keeps its own pace
        return {"interval": self.interval, "aging": self.waiting.aging}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(1.0 / state["interval"], state.get("aging", AGING_SECONDS))


def rate_limited(
    func: Callable[..., Any], is_async: bool, rate: float | RateLimit, priority: float = 0.0
) -> Any:
    """`func` started at most `rate` times a second (a number, or a `RateLimit` shared
    with others); calls that wait start first by `priority` plus their map item's."""
    pace = rate if isinstance(rate, RateLimit) else RateLimit(rate)
    if is_async:

        @functools.wraps(func)
        async def paced_async(*args: Any, **kwargs: Any) -> Any:
            await pace.await_turn(priority)
            return await func(*args, **kwargs)

        return paced_async

    @functools.wraps(func)
    def paced(*args: Any, **kwargs: Any) -> Any:
        pace.wait_turn(priority)
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
