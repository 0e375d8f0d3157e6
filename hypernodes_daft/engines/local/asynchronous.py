"""The async executors: items are coroutines on one event loop, at most `max_concurrency` in
flight. Async nodes are awaited natively; runs of consecutive sync nodes hop to a worker
thread once, so the user never writes async code and a sync node never blocks the loop.

A pipeline whose nodes are all async runs as one coroutine per item with no thread hop:
seed 000's workload costs what `asyncio.gather` costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from ...exceptions import ExecutionError
from ...plan import RunPlan, iter_items
from ...runtime import NodeCall, Values, node_call

ARunItem = Callable[[Values], Awaitable[Values]]


class _SyncChain:
    """Consecutive sync node calls of one item, run in a single worker-thread hop."""

    __slots__ = ("calls", "threads")

    def __init__(self, calls: list[NodeCall], threads: Executor | None):
        self.calls = calls
        self.threads = threads

    def __call__(self, values: Values) -> None:
        for call in self.calls:
            call(values)

    async def acall(self, values: Values) -> None:
        await asyncio.get_running_loop().run_in_executor(self.threads, self, values)


def compile_arun(
    plan: RunPlan, concurrent_nodes: bool, threads: Executor | None, max_concurrency: int
) -> ARunItem:
    """A coroutine function running `plan` on a dict of values and returning its outputs.

    With `concurrent_nodes`, the nodes of one topological generation run together.
    """

    def compile_inner(inner: RunPlan) -> ARunItem:
        return compile_arun(inner, concurrent_nodes, threads, max_concurrency)

    async def map_inner(run_item: ARunItem, inputs: Values, *spec: Any) -> list[Values]:
        return await amap_items(run_item, inputs, *spec, max_concurrency=max_concurrency)

    calls = [node_call(step, compile_inner, map_inner) for step in plan.steps]
    if concurrent_nodes:
        levels = [
            _segments([calls[i] for i in level], threads, chain=False) for level in plan.generations
        ]
    else:
        levels = [[segment] for segment in _segments(calls, threads, chain=True)]
    outputs = plan.outputs

    async def arun(values: Values) -> Values:
        for level in levels:
            if len(level) == 1:
                await level[0].acall(values)
            else:
                await _gather_in_order([segment.acall(values) for segment in level])
        return {name: values[name] for name in outputs}

    return arun


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
) -> list[Values]:
    """Run every item with at most `max_concurrency` in flight; results in input order.

    `max_concurrency` worker coroutines pull items from one iterator, so a million-item map
    holds a million results but never a million pending tasks.
    """
    if n_items == 0:
        return []
    items = enumerate(iter_items(inputs, map_over, map_mode))
    results: list[Any] = [None] * n_items

    async def worker() -> None:
        for index, item in items:
            try:
                results[index] = await arun_item(item)
            except ExecutionError as error:
                raise error.located(index) from error.original

    workers = [asyncio.ensure_future(worker()) for _ in range(min(max_concurrency, n_items))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return results
