"""One long-lived event loop per process, in a daemon thread, for async nodes called from
synchronous code. Never an event loop per item or per call: a loop per call is what made
HyperNodes 0.4's async maps 50-100x slower than `asyncio.gather` (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from . import cancel

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop, started on first use (again after a fork)."""
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or not _thread or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="hypernodes-event-loop", daemon=True
            )
            _thread.start()
            _pid = os.getpid()
        return _loop


def run_coroutine(coro: Coroutine[Any, Any, T], with_run: bool = True) -> T:
    """Run `coro` to completion on the background loop and return its result.

    Works where an event loop is already running in this thread (a Jupyter cell). Called
    from the background loop's own thread (an async node running a pipeline synchronously),
    it runs `coro` on a fresh loop in a helper thread instead of deadlocking.

    If the caller is interrupted while waiting, or (`with_run`) the run this call works
    for is cancelled (runtime/cancel.py), `coro` is cancelled and its `finally` blocks run
    before this raises (the interrupt, or `RunCancelled`).
    """
    loop = background_loop()
    if threading.current_thread() is _thread:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()
    ended = threading.Event()
    future = asyncio.run_coroutine_threadsafe(_signalling(coro, ended), loop)
    token = cancel.current() if with_run else None  # its cancellation cancels `coro`
    unhook = (lambda: None) if token is None else token.on_cancel(future.cancel)
    try:
        return future.result()
    except BaseException as error:  # cancelled, or KeyboardInterrupt while waiting
        future.cancel()
        ended.wait(cancel.GRACE)  # its `finally` blocks run before the caller goes on
        if isinstance(error, concurrent.futures.CancelledError) and token and token.cancelled:
            raise token.stopped() from None
        raise
    finally:
        unhook()


async def _signalling(coro: Coroutine[Any, Any, T], ended: threading.Event) -> T:
    """`coro`, setting `ended` when it is over, cancelled or not."""
    try:
        return await coro
    finally:
        ended.set()


async def stream_in_thread(stream: Iterator[T]) -> AsyncIterator[T]:
    """A synchronous stream for async code: each next item fetched in a worker thread."""
    done = object()
    while (entry := await asyncio.to_thread(next, stream, done)) is not done:
        yield entry


def pumped(
    stream: Iterator[T], idle: Callable[[], None], window: int = 2, every: float = 0.1
) -> Iterator[T]:
    """`stream` produced in a helper thread and handed over through a bounded queue, while
    this thread waits in Python, calling `idle()` every `every` seconds of waiting (a
    stream stuck in native code would hold signal handlers back until it yields)."""
    entries: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=window)
    stopped = threading.Event()

    def pump() -> None:
        try:
            for entry in stream:
                if not hand_over(entries, ("item", entry), stopped):
                    return
            hand_over(entries, ("done", None), stopped)
        except BaseException as error:
            hand_over(entries, ("error", error), stopped)

    threading.Thread(target=pump, name="hypernodes-pump", daemon=True).start()
    try:
        yield from received(entries, idle, every)
    finally:
        stopped.set()


def received(
    entries: queue.Queue[tuple[str, Any]],
    idle: Callable[[], None] | None = None,
    every: float = 0.1,
) -> Iterator[Any]:
    """The entries a producer hands over: `("item", x)` yields x, `("error", e)` raises e,
    `("done", None)` ends; `idle()` every `every` seconds spent waiting (if given)."""
    while True:
        try:
            kind, payload = entries.get(timeout=None if idle is None else every)
        except queue.Empty:
            idle()  # type: ignore[misc]
            continue
        if kind == "item":
            yield payload
        elif kind == "error":
            raise payload
        else:
            return


def hand_over(entries: queue.Queue[Any], entry: Any, stopped: threading.Event) -> bool:
    """Put `entry` when there is room; False once the consumer has gone."""
    while not stopped.is_set():
        try:
            entries.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
