"""Grouping concurrent calls of one node into one call over lists (`@node(batch_size=N)`).

A batch endpoint (embeddings, a bulk lookup) answers many items in one request. The node is
written over lists, one value per item, and returns one result per item, in order:

    @node(output_name="embedding", batch_size=32, batch_delay=0.05)
    async def embed(text: list[str]) -> list[list[float]]:
        return await client.embed(text)         # one request for up to 32 texts

    per_item = grouped(embed.func, "embed", embed.root_args, True, size=32, delay=0.05)
    await per_item(text="hello")   # joins the group being filled; its own result back

The map still calls the node once per item. Calls that arrive while a group is open join
it; the group goes out as one call when it holds `size` calls, or `delay` seconds after its
first call. Each caller gets its own result, or, when the grouped call fails, its error.
Where items run one after another nothing would ever join, so `grouped(..., wait=False)`
calls at once with lists of one (see `Services.concurrent_items` in node_call.py).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..node import NodeOptions

Item = dict[str, Any]  # one call's arguments, by parameter name


def grouper_for(
    options: NodeOptions, names: Sequence[str], label: str, is_async: bool, wait: bool
) -> Callable[..., Any] | None:
    """How to turn a node's list function into a per-item one (`grouped` with the node's
    `batch_size` and `batch_delay`; `names`: its parameters), or None without `batch_size`."""
    if options.batch_size is None:
        return None
    settings = {"size": options.batch_size, "delay": options.batch_delay, "wait": wait}
    return functools.partial(
        grouped, label=label, names=tuple(names), is_async=is_async, **settings
    )


def grouped(
    func: Callable[..., Any],
    label: str,
    names: Sequence[str],
    is_async: bool,
    size: int,
    delay: float,
    wait: bool = True,
) -> Callable[..., Any]:
    """`func`, a function over lists, as a function of one item's arguments (by position in
    `names`, or by name) that returns that item's result. With `wait`, concurrent calls are
    grouped (at most `size`, at most `delay` seconds after the first); without, each call
    goes alone as lists of one."""
    if not wait or size == 1:
        return _alone(func, label, tuple(names), is_async)
    if is_async:
        grouper: Any = AsyncGrouper(func, label, size, delay)

        @functools.wraps(func)  # a coroutine function: retries see an async call
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await grouper.submit(_bind(names, args, kwargs))

        return call_async
    grouper = SyncGrouper(func, label, size, delay)

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return grouper.submit(_bind(names, args, kwargs))

    return call


def split(result: Any, n_items: int, label: str) -> list[Any]:
    """A grouped call's result as one result per item, or a ValueError naming the node."""
    try:
        if isinstance(result, (str, bytes, dict)):  # iterable, but not one entry per item
            raise TypeError
        results = list(result)
    except TypeError:
        raise ValueError(
            f"node '{label}' (batch_size) must return a list with one result per item: "
            f"expected {n_items}, got {result!r}"
        ) from None
    if len(results) != n_items:
        raise ValueError(
            f"node '{label}' (batch_size) must return one result per item, in order: "
            f"expected {n_items}, got {len(results)}"
        )
    return results


def as_lists(items: Sequence[Item]) -> Item:
    """The grouped call's arguments: per parameter, the list of the items' values."""
    return {name: [item[name] for item in items] for name in items[0]}


def _bind(names: Sequence[str], args: tuple[Any, ...], kwargs: Item) -> Item:
    if not args:  # the node runtime calls by name: no copy to make
        return kwargs
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _alone(
    func: Callable[..., Any], label: str, names: tuple[str, ...], is_async: bool
) -> Callable[..., Any]:
    """Each call at once, as lists of one."""
    if is_async:

        @functools.wraps(func)
        async def alone_async(*args: Any, **kwargs: Any) -> Any:
            item = _bind(names, args, kwargs)
            return split(await func(**as_lists([item])), 1, label)[0]

        return alone_async

    @functools.wraps(func)
    def alone(*args: Any, **kwargs: Any) -> Any:
        item = _bind(names, args, kwargs)
        return split(func(**as_lists([item])), 1, label)[0]

    return alone


class _Grouper:
    """What both groupers keep: the list function and how to group. The open groups are
    state of this process (locks, futures of an event loop), so a pickled grouper arrives
    in another process with none."""

    def __init__(self, func: Callable[..., Any], label: str, size: int, delay: float):
        self.func = func
        self.label = label
        self.size = size
        self.delay = delay
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {"func": self.func, "label": self.label, "size": self.size, "delay": self.delay}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)


class _LoopGroup:
    """A group being filled on one event loop: the calls' arguments and their futures."""

    __slots__ = ("loop", "items", "futures", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop  # held: the loop's id is not reused while its group is open
        self.items: list[Item] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.timer: asyncio.TimerHandle | None = None


class AsyncGrouper(_Grouper):
    """Groups the calls of an async list function, per event loop (asyncio futures and
    timers belong to one loop). The first call of a group schedules its flush after
    `delay`; the `size`-th flushes it at once. The grouped call runs as a task of its own,
    so no caller's cancellation cancels the others' request."""

    def _start(self) -> None:
        self._open: dict[int, _LoopGroup] = {}  # loop id -> its group being filled
        self._running: set[asyncio.Task[None]] = set()  # referenced until done

    async def submit(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        group = self._open.get(id(loop))
        if group is None:
            group = self._open[id(loop)] = _LoopGroup(loop)
            group.timer = loop.call_later(self.delay, self._flush, group)
        future = loop.create_future()
        group.items.append(item)
        group.futures.append(future)
        if len(group.items) >= self.size:
            self._flush(group)
        return await future

    def _flush(self, group: _LoopGroup) -> None:
        if self._open.get(id(group.loop)) is not group:
            return  # already sent (full before its timer fired)
        del self._open[id(group.loop)]
        if group.timer is not None:
            group.timer.cancel()
        task = group.loop.create_task(self._send(group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, group: _LoopGroup) -> None:
        try:
            result = await self.func(**as_lists(group.items))
            results = split(result, len(group.items), self.label)
        except Exception as error:  # every item of the group fails with it
            for future in group.futures:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for future in group.futures:
                future.cancel()
            raise
        for future, value in zip(group.futures, results, strict=True):
            if not future.done():  # a caller that was cancelled meanwhile
                future.set_result(value)


class _ThreadGroup:
    """A group being filled by threads; the first caller (its leader) makes the call."""

    __slots__ = ("items", "changed", "done", "results", "error")

    def __init__(self, lock: threading.Lock):
        self.items: list[Item] = []
        self.changed = threading.Condition(lock)  # full (for the leader), or done
        self.done = False
        self.results: list[Any] = []
        self.error: BaseException | None = None


class SyncGrouper(_Grouper):
    """Groups the calls of a sync list function made from several threads. The first
    caller of a group waits up to `delay` for others (less if the group fills), closes it,
    makes the grouped call in its own thread and hands each waiting caller its result."""

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._open: _ThreadGroup | None = None

    def submit(self, item: Item) -> Any:
        with self._lock:
            group = self._open
            leader = group is None
            if group is None:
                group = self._open = _ThreadGroup(self._lock)
            index = len(group.items)
            group.items.append(item)
            if len(group.items) >= self.size:
                self._open = None  # closed: later calls start a new group
                group.changed.notify_all()
            if not leader:
                while not group.done:
                    group.changed.wait()
                if group.error is not None:
                    raise group.error
                return group.results[index]
            self._gather(group)
        return self._send(group)

    def _gather(self, group: _ThreadGroup) -> None:
        """The leader, holding the lock: wait for the group to fill or `delay` to pass."""
        deadline = time.monotonic() + self.delay
        while self._open is group:
            left = deadline - time.monotonic()
            if left <= 0:
                self._open = None
                break
            group.changed.wait(left)

    def _send(self, group: _ThreadGroup) -> Any:
        """The leader, without the lock: the grouped call; every caller's outcome."""
        try:
            result = self.func(**as_lists(group.items))
            group.results = split(result, len(group.items), self.label)
        except BaseException as error:  # every item of the group fails with it
            group.error = error
        with self._lock:
            group.done = True
            group.changed.notify_all()
        if group.error is not None:
            raise group.error
        return group.results[0]
