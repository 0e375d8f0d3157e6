"""The async executors: items are coroutines on one event loop, at most `max_concurrency` in
flight. Async nodes are awaited natively; runs of consecutive sync nodes hop to a worker
thread once, so the user never writes async code and a sync node never blocks the loop.

A pipeline whose nodes are all async runs as one coroutine per item with no thread hop:
10,000 items awaiting 0.1 s each cost what `asyncio.gather` costs (benchmarks/local_executors.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from ...exceptions import ExecutionError
from ...plan import RunPlan, iter_items
from ...runtime import cancel
from ...runtime.context import CURRENT, Where, current_item, in_branch, item_frame
from ...runtime.item_order import Priority, start_order
from ...runtime.items import aitem_runner, node_calls, settled
from ...runtime.node_call import NO_SERVICES, NodeCall, Services, Values

ARunItem = Callable[..., Awaitable[Values]]  # (values, index=None) -> outputs


class _SyncChain:
    """Consecutive sync node calls of one item, run in a single worker-thread hop.

    Chains that prove quick (`_PROBES` calls under `_INLINE_BELOW` seconds, hardly any over)
    then run inline on the loop: a thread hop costs more than a trivial node. A chain that
    later takes over `_OFFLOAD_ABOVE` seconds inline goes back to threads for good, so the
    loop is blocked at most once, briefly, by a node that turns slow.
    """

    _PROBES = 8
    _INLINE_BELOW = 0.0002
    _OFFLOAD_ABOVE = 0.002

    __slots__ = ("calls", "threads", "quick", "slow", "inline", "pinned")

    def __init__(self, calls: list[NodeCall], threads: Executor | None):
        self.calls = calls
        self.threads = threads
        self.quick = self.slow = 0  # probe calls under / over `_INLINE_BELOW`
        self.inline = False
        self.pinned = False  # once slow inline, always offloaded

    def __call__(self, values: Values) -> float:
        start = time.perf_counter()
        for call in self.calls:
            call(values)
        return time.perf_counter() - start

    async def acall(self, values: Values) -> None:
        if self.inline:
            if self(values) > self._OFFLOAD_ABOVE:
                self.inline, self.pinned = False, True
            return
        # in a copy of this task's context, told the item (the thread's stack does not
        # hold the item runner): the nodes see the item they run for
        context = contextvars.copy_context()
        context.run(CURRENT.set, Where(None, current_item()))
        loop = asyncio.get_running_loop()
        took = await loop.run_in_executor(self.threads, context.run, self, values)
        if not self.pinned:
            if took < self._INLINE_BELOW:
                self.quick += 1
            else:
                self.slow += 1
            # inline only a chain that is quick nearly always (a rare GC pause is allowed)
            self.inline = self.quick >= self._PROBES and self.slow <= self.quick // 8


def compile_arun(
    plan: RunPlan,
    concurrent_nodes: bool,
    threads: Executor | None,
    max_concurrency: int,
    services: Services = NO_SERVICES,
) -> ARunItem:
    """A coroutine function running `plan` on a dict of values and returning its outputs.

    With `concurrent_nodes`, the nodes of one topological generation run together.
    """

    def compile_inner(inner: RunPlan, inner_services: Services) -> ARunItem:
        return compile_arun(inner, concurrent_nodes, threads, max_concurrency, inner_services)

    async def map_inner(run_item: ARunItem, inputs: Values, *spec: Any) -> list[Values]:
        results = await amap_items(run_item, inputs, *spec, max_concurrency=max_concurrency)
        cancel.raise_if_cancelled()  # a nested map stopped part-way fails its outer item
        return results

    calls = node_calls(plan, compile_inner, map_inner, services)
    if concurrent_nodes:
        levels = [
            _segments([calls[i] for i in level], threads, chain=False) for level in plan.generations
        ]
    else:
        levels = [[segment] for segment in _segments(calls, threads, chain=True)]
    outputs = plan.outputs
    settles = services.top
    n_levels = len(levels)

    async def arun(values: Values, index: int | None = None) -> Values:
        # Nodes find `index` in this frame (context.item_frame). Nothing is made per item
        # that lives while it waits, beyond what `gather` makes: no scope, no wrapper
        # coroutine, no closure cell (comprehensions live in helpers), no list iterator
        # (an index walks the levels): 10,000 items in flight turn each such object into
        # garbage-collector time.
        try:
            at = 0
            while at < n_levels:
                level = levels[at]
                at += 1
                if len(level) == 1:
                    await level[0].acall(values)
                else:
                    await _gather_in_order(_branches(level, values))
        except ExecutionError as error:
            return settled(error, index, settles)
        return _picked(values, outputs)

    item_frame(arun)
    return arun if services.events is None else aitem_runner(arun, services.events)


def _branches(level: list[Any], values: Values) -> list[Any]:
    """The segments of one level as branches of the running item, each a task of its own."""
    item = current_item()
    return [in_branch(segment.acall(values), item) for segment in level]


def _picked(values: Values, names: tuple[str, ...]) -> Values:
    return {name: values[name] for name in names}


def _segments(calls: list[Any], threads: Executor | None, chain: bool) -> list[Any]:
    """Wrap sync node calls so they run off the loop; with `chain`, merge neighbours."""
    segments: list[Any] = []
    for call in calls:
        if isinstance(call, NodeCall) and not call.is_async:
            if chain and segments and isinstance(segments[-1], _SyncChain):
                segments[-1].calls.append(call)
            else:
                segments.append(_SyncChain([call], threads))
        else:
            segments.append(call)
    return segments


async def _gather_in_order(awaitables: list[Awaitable[Any]]) -> None:
    """Await all; if several fail, raise the first in plan order (deterministic errors)."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def amap_items(
    arun_item: ARunItem,
    inputs: Values,
    map_over: tuple[str, ...],
    map_mode: str,
    n_items: int,
    *,
    max_concurrency: int,
    priority: Priority = None,
) -> list[Values]:
    """Run every item with at most `max_concurrency` in flight (started by `priority` when
    given: item_order.py); results in input order.

    `max_concurrency` worker coroutines pull items from one iterator, so a million-item map
    holds a million results but never a million pending tasks. If the run is cancelled,
    the items in flight are cancelled (their `finally` blocks run) and those not finished
    are None in the results (`cancel.unfinished` makes them records).
    """
    if n_items == 0:
        return []
    token = cancel.current()
    if n_items <= max_concurrency and priority is None:  # one task per item, as gather
        return await _all_at_once(arun_item, iter_items(inputs, map_over, map_mode), token)
    items, arun_item = start_order(arun_item, inputs, map_over, map_mode, priority)
    results: list[Any] = [None] * n_items

    async def worker() -> None:
        for index, item in items:
            try:
                results[index] = await arun_item(item, index)
            except ExecutionError as error:
                raise error.located(index) from error.original
            if token is not None and token.cancelled:
                return

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(max_concurrency, n_items))]
    await _settled(tasks, token)
    return results


async def _all_at_once(
    arun_item: ARunItem, items: Iterator[Values], token: cancel.Cancel | None
) -> list[Values]:
    """One task per item and no wrapper coroutine: the per-item cost of plain gather."""
    tasks = [asyncio.ensure_future(arun_item(item, index)) for index, item in enumerate(items)]
    try:
        results = await _settled(tasks, token)
    except ExecutionError as error:
        failed = (i for i, t in enumerate(tasks) if t.done() and not t.cancelled())
        index = next(i for i in failed if tasks[i].exception() is error)
        raise error.located(index) from error.original
    return results if results is not None else [_result(task) for task in tasks]


async def _settled(tasks: list[asyncio.Future[Any]], token: cancel.Cancel | None) -> Any:
    """Await `tasks` and return their results; the first failure is raised once the others
    are cancelled and over. A cancelled run cancels them too, and returns None (what
    finished is in the tasks' results)."""
    stop = cancel.cancelling(token, tasks)
    try:
        return await asyncio.gather(*tasks)
    except (asyncio.CancelledError, cancel.RunCancelled):
        if token is None or not token.cancelled:
            raise
        return None
    finally:
        stop()
        running = [task for task in tasks if not task.done()]
        if running:  # their `finally` blocks run before the map returns (a sync call in a
            cancel.cancel_tasks(running)  # thread is not waited for beyond the grace)
            await asyncio.wait(running, timeout=cancel.GRACE)


def _result(task: asyncio.Future[Any]) -> Any:
    """A finished item's outputs; None for one cancelled or stopped."""
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()
