"""Streaming maps: each item's result as soon as it is done, as `(index, outputs)`.

    for index, outputs in pipeline.iter_map(inputs={"url": urls}, map_over="url"):
        save(index, outputs)                    # results are never all held at once

Items are started lazily and at most `window` are in flight, so a million-item stream holds
a window of items, not a million results. Leaving the loop early cancels what has not run.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from itertools import islice
from typing import Any

from ...exceptions import ExecutionError
from ...runtime import cancel
from ...runtime.item_order import Priority, start_order
from ...runtime.items import RunItem
from ...runtime.loop import background_loop, hand_over, received
from ...runtime.node_call import Values

Streamed = tuple[int, Values]


def stream_threaded(
    pool: Executor,
    run_item: RunItem,
    inputs: Values,
    map_over: tuple[str, ...],
    map_mode: str,
    window: int,
    priority: Priority = None,
) -> Iterator[Streamed]:
    """Items on `pool`, at most `window` in flight (started by `priority` when given),
    yielded in the order they finish; a failure is raised as `FirstFailure` says."""
    items, run_item = start_order(run_item, inputs, map_over, map_mode, priority)
    # each item in a copy of this context: its nodes see the run's token
    tasks = ((i, (contextvars.copy_context(), run_item, item, i)) for i, item in items)
    failures = FirstFailure()
    token = cancel.current()
    for index, outcome in as_finished(pool, _outcome, failures.gate(tasks), window, token):
        if isinstance(outcome, _Failed):
            failures.add(index, outcome.error)
        elif outcome is not _STOPPED:
            yield index, outcome
    failures.raise_first()


class FirstFailure:
    """The failures of items run concurrently, so that the one raised is the one a
    sequential run meets first, whatever finishes first: once one is seen no new item
    starts, those running finish, then the failure of the lowest index is raised (items
    start in index order, so every item below it has run; in a map by priority, the lowest
    index among the failures seen)."""

    def __init__(self) -> None:
        self.seen: dict[int, BaseException] = {}

    def gate(self, tasks: Iterator[Any]) -> Iterator[Any]:
        """`tasks` until a failure is seen."""
        for task in tasks:
            if self.seen:
                return
            yield task

    def add(self, index: int, error: BaseException) -> None:
        self.seen[index] = error

    def raise_first(self) -> None:
        if self.seen:
            raise self.seen[min(self.seen)]


def as_finished(
    pool: Executor,
    call: Any,
    tasks: Iterator[tuple[int, tuple[Any, ...]]],
    window: int,
    token: cancel.Cancel | None = None,
) -> Iterator[tuple[int, Any]]:
    """`(key, call(*args))` for each `(key, args)` of `tasks`, run on `pool` with at most
    `window` in flight, as they finish (lower keys first among those finished together).
    Tasks are drawn lazily; leaving early cancels those not started. Once the run of
    `token` is cancelled, no task starts, and those running are waited for during the
    grace period only."""
    running: dict[Future[Any], int] = {}
    poll = None if token is None else _POLL

    def refill() -> None:
        if token is not None and token.cancelled:
            return
        for key, args in islice(tasks, window - len(running)):
            running[pool.submit(call, *args)] = key

    try:
        refill()
        while running:
            done, _ = wait(running, timeout=poll, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=running.__getitem__):
                yield running.pop(future), future.result()
            if token is not None and token.cancelled:
                for future in [f for f in running if f.cancel()]:  # not started
                    del running[future]
                if token.grace_left() == 0:
                    return  # the calls still running are left to finish in their threads
            refill()
    finally:
        for future in running:
            future.cancel()


async def astream_items(
    arun_item: Any,
    inputs: Values,
    map_over: tuple[str, ...],
    map_mode: str,
    max_concurrency: int,
    priority: Priority = None,
) -> AsyncIterator[Streamed]:
    """Items as coroutines, at most `max_concurrency` in flight (started by `priority` when
    given), in the order they finish. A cancelled run cancels the items in flight, and the
    stream ends."""
    items, arun_item = start_order(arun_item, inputs, map_over, map_mode, priority)
    finished: asyncio.Queue[tuple[int, Any, BaseException | None] | None] = asyncio.Queue()
    # results not yet taken: workers wait while the consumer is behind (bounded memory)
    room = asyncio.Semaphore(max_concurrency)

    async def worker() -> None:
        try:
            for index, item in items:
                await room.acquire()
                try:
                    entry = (index, await arun_item(item, index), None)
                except Exception as error:
                    entry = (index, None, error)
                finished.put_nowait(entry)
                if entry[2] is not None:
                    break
        finally:
            finished.put_nowait(None)  # this worker is done (or cancelled)

    workers = [asyncio.ensure_future(worker()) for _ in range(max_concurrency)]
    stop = cancel.cancelling(cancel.current(), workers)
    running = len(workers)
    try:
        while running:
            entry = await finished.get()
            if entry is None:
                running -= 1
                continue
            room.release()
            index, result, error = entry
            if isinstance(error, ExecutionError):
                raise error.located(index) from error.original
            if isinstance(error, cancel.RunCancelled):
                continue  # stopped by the cancellation: not finished
            if error is not None:
                raise error
            yield index, result
    finally:
        stop()
        cancel.cancel_tasks(workers)


def stream_from_loop(stream: AsyncIterator[Streamed], window: int = 1024) -> Iterator[Streamed]:
    """An async stream, run on the background event loop and consumed from synchronous code
    through a bounded queue (one hop per item would cost a loop round-trip each)."""
    entries: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=window)
    stopped = threading.Event()

    async def pump() -> None:
        try:
            async for item in stream:
                entry = ("item", item)
                try:
                    entries.put_nowait(entry)
                except queue.Full:  # the consumer is behind: wait without blocking the loop
                    await asyncio.to_thread(hand_over, entries, entry, stopped)
            outcome: tuple[str, Any] = ("done", None)
        except Exception as error:
            outcome = ("error", error)
        await asyncio.to_thread(hand_over, entries, outcome, stopped)

    pumping = asyncio.run_coroutine_threadsafe(pump(), background_loop())
    try:
        yield from received(entries)
    finally:
        stopped.set()
        pumping.cancel()  # the stream's workers are cancelled with it


class _Failed:
    """An item's failure, returned rather than raised so the others can finish."""

    __slots__ = ("error",)

    def __init__(self, error: ExecutionError):
        self.error = error


_STOPPED = object()  # an item stopped by its run's cancellation: it did not finish
_POLL = 0.05  # seconds between looks at the token while waiting for running items


def _outcome(context: contextvars.Context, run_item: RunItem, item: Values, index: int) -> Any:
    try:
        return context.run(run_item, item, index)
    except ExecutionError as error:
        return _Failed(error.located(index))
    except cancel.RunCancelled:
        return _STOPPED
