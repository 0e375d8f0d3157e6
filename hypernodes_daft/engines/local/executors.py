"""The local engine's executors, one object per kind, chosen once by `HypernodesEngine`.

A node executor compiles the item runner of a plan: how the nodes of one item run
(sequential, threaded, async). A map executor runs the items of a map with those runners,
in four forms: `map` (every result, in order), `iter_map` (streamed), and `amap` /
`aiter_map` for async callers. The mechanics live in the modules of each kind
(`threaded.py`, `asynchronous.py`, `parallel.py`, `streaming.py`, and `runtime.items` for
the sequential run); these classes only decide which of them a call uses.

Executors hold no state of their own: the engine owns the pools (`pool(role)` starts one
on first use: "node", "map" or "io") and the compiled-runner cache (`keep`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import loky

from ...plan import MapPlan, RunPlan
from ...runtime import cancel
from ...runtime.events import aobserved_stream, observed_map, observed_stream
from ...runtime.items import RunItem, collected, compile_run, stream_items
from ...runtime.loop import run_coroutine, stream_in_thread
from ...runtime.node_call import Services, Values
from ...stateful import request_of
from .asynchronous import ARunItem, amap_items, compile_arun
from .parallel import iter_parallel
from .streaming import Streamed, astream_items, stream_from_loop, stream_threaded
from .threaded import compile_threaded

Compile = Callable[[RunPlan, Services], Any]
# the engine's cache of compiled runners: keep(kind, plan, services, compile) -> runner
Keep = Callable[[str, RunPlan, Services, Compile], Any]
# role -> the engine's pool for it, started on first use; `pool(role, broken=p)` replaces
# the broken pool `p` with a new one
Pool = Callable[..., Executor]


# -- node executors: how the nodes of one item run --------------------------------------------


class SequentialNodes:
    """The nodes of an item one after another in the calling thread (in an async map,
    consecutive sync nodes hop to a worker thread together)."""

    name = "sequential"
    concurrent_nodes = False  # in the async runner: a generation's nodes run together

    def __init__(self, keep: Keep, pool: Pool, max_concurrency: int):
        self.keep = keep
        self.pool = pool
        self.max_concurrency = max_concurrency

    def runner(self, plan: RunPlan, services: Services) -> RunItem:
        """A synchronous function running one item."""
        return self.keep("sync", plan, services, self.compile)

    def async_runner(self, plan: RunPlan, services: Services) -> ARunItem:
        """A coroutine function running one item. Kept per plan, so what the runner learned
        (which sync nodes are quick enough to run on the loop) carries over to the next call."""
        return self.keep("async", plan, services, self.acompile)

    def caller_runner(self, plan: RunPlan, services: Services) -> ARunItem:
        """What `arun` awaits: async work on the caller's event loop, a plan of sync nodes
        in a worker thread."""
        if plan.is_async:
            return self.async_runner(plan, services)
        run = self.runner(plan, services)
        return lambda values, index=None: asyncio.to_thread(run, values, index)

    def compile(self, plan: RunPlan, services: Services) -> RunItem:
        return compile_run(plan, services)

    def acompile(self, plan: RunPlan, services: Services) -> ARunItem:
        threads = self.pool("io")
        return compile_arun(plan, self.concurrent_nodes, threads, self.max_concurrency, services)


class ThreadedNodes(SequentialNodes):
    """The nodes of one topological generation run together on a thread pool."""

    name = "threaded"
    concurrent_nodes = True

    def compile(self, plan: RunPlan, services: Services) -> RunItem:
        return compile_threaded(plan, self.pool("node"), services)


class AsyncNodes(SequentialNodes):
    """The nodes of one generation run together as coroutines on one event loop (the
    caller's, or the background loop for synchronous callers); sync nodes in threads."""

    name = "async"
    concurrent_nodes = True

    def runner(self, plan: RunPlan, services: Services) -> RunItem:
        arun = self.async_runner(plan, services)
        return lambda values, index=None: run_coroutine(arun(values, index))

    def caller_runner(self, plan: RunPlan, services: Services) -> ARunItem:
        return self.async_runner(plan, services)


NODE_EXECUTORS: dict[str, type[SequentialNodes]] = {
    "sequential": SequentialNodes,
    "async": AsyncNodes,
    "threaded": ThreadedNodes,
}


# -- map executors: how the items of a map run --------------------------------------------------


class SequentialMap:
    """Items one after another, in order, in the calling thread. Async callers get the
    synchronous forms run in a worker thread."""

    name = "sequential"
    # items of one map run at once in this process, so batch_size nodes group their calls
    concurrent_items = False
    runs_in_caller = True  # the items run in the calling thread

    def __init__(self, nodes: SequentialNodes, pool: Pool, workers: int, max_concurrency: int):
        self.nodes = nodes
        self.pool = pool
        self.workers = workers
        self.max_concurrency = max_concurrency

    def map(self, plan: MapPlan, inputs: Values, services: Services) -> list[Values]:
        with observed_map(services.events, plan.n_items):
            return collected(self._settled(plan, inputs, services), plan.n_items)

    def iter_map(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        stream = self._settled(plan, inputs, services)
        return observed_stream(stream, services.events, plan.n_items)

    async def amap(self, plan: MapPlan, inputs: Values, services: Services) -> list[Values]:
        return await asyncio.to_thread(self.map, plan, inputs, services)

    def aiter_map(
        self, plan: MapPlan, inputs: Values, services: Services
    ) -> AsyncIterator[Streamed]:
        return stream_in_thread(self.iter_map(plan, inputs, services))

    def new_pool(self, size: int | None = None) -> Executor:
        """The pool of the "map" role, when the engine was not given one."""
        return ThreadPoolExecutor(size or self.workers, thread_name_prefix="hypernodes-map")

    def _settled(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        """The items' stream; if the run is cancelled, it ends with the unfinished items'
        records (or raises the interrupt: cancel.settled_stream)."""
        token = cancel.current()
        if token is not None and self.runs_in_caller:
            # Ctrl-C interrupts the node running in the main thread
            token.interrupt_main = threading.current_thread() is threading.main_thread()
        stream = self._stream(plan, inputs, services)
        return cancel.settled_stream(stream, plan.n_items, token, services.on_error)

    def _stream(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        run_item = self.nodes.runner(plan.item, services)
        return stream_items(run_item, inputs, plan.map_over, plan.map_mode, plan.priority)


class ThreadedMap(SequentialMap):
    """Items on a thread pool of `workers` threads, a window of them in flight."""

    name = "threaded"
    concurrent_items = True
    runs_in_caller = False
    _MIN_WINDOW = 256

    def __init__(self, nodes: SequentialNodes, pool: Pool, workers: int, max_concurrency: int):
        super().__init__(nodes, pool, workers, max_concurrency)
        # Items in flight: enough that waiting for the next one to finish is rare (each wait
        # costs tens of microseconds), few enough that a long map holds a window of
        # futures, not one per item.
        self.window = max(self._MIN_WINDOW, 4 * workers)

    def _stream(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        run_item = self.nodes.runner(plan.item, services)
        spec = (inputs, plan.map_over, plan.map_mode)
        return stream_threaded(self.pool("map"), run_item, *spec, self.window, plan.priority)


class ParallelMap(SequentialMap):
    """Items in a process pool of `workers` processes, started once per engine; each
    process runs the nodes of its items sequentially."""

    name = "parallel"
    runs_in_caller = False

    def new_pool(self, size: int | None = None) -> Executor:
        # loky, not multiprocessing: its workers are fresh interpreters (no fork of a process
        # running threads) that never import the user's __main__, so no main guard is needed
        return loky.ProcessPoolExecutor(size or self.workers)

    def _stream(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        return iter_parallel(*self._pools_for(inputs), plan, inputs, services)

    def _pools_for(self, inputs: Values) -> tuple[Callable[..., Executor], int]:
        """The pools and worker count for a map of `inputs`: each worker process holds its
        own instance of a `@stateful` object, so one with `replicas=R` gets a pool of at
        most R workers (a "map:R" pool, kept beside the full one)."""
        replicas = min(filter(None, (request_of(v)[1] for v in inputs.values())), default=0)
        if not replicas or replicas >= self.workers:
            return self.pool, self.workers
        pool = self.pool
        return (lambda role, broken=None: pool(f"{role}:{replicas}", broken)), replicas


class AsyncMap(SequentialMap):
    """Items as coroutines on one event loop, at most `max_concurrency` in flight: the
    caller's loop for `amap` and `aiter_map`, the background loop for synchronous callers."""

    name = "async"
    concurrent_items = True
    runs_in_caller = False

    # The run's token goes along explicitly: the background loop's tasks do not see the
    # caller's context. A cancelled run's interrupt is raised in the caller's thread, never
    # on the background loop (a KeyboardInterrupt there would stop the loop's thread).

    def map(self, plan: MapPlan, inputs: Values, services: Services) -> list[Values]:
        token = cancel.current()
        # the map's coroutine stops its items itself and returns what finished
        results = run_coroutine(self._amap(plan, inputs, services, token), with_run=False)
        return cancel.unfinished(results, token, services.on_error)

    def iter_map(self, plan: MapPlan, inputs: Values, services: Services) -> Iterator[Streamed]:
        token = cancel.current()
        stream = stream_from_loop(self._aiter_map(plan, inputs, services, token))
        settled = cancel.settled_stream(stream, plan.n_items, token, services.on_error)
        return observed_stream(settled, services.events, plan.n_items)

    async def amap(self, plan: MapPlan, inputs: Values, services: Services) -> list[Values]:
        token = cancel.current()
        results = await self._amap(plan, inputs, services, token)
        return cancel.unfinished(results, token, services.on_error)

    def aiter_map(
        self, plan: MapPlan, inputs: Values, services: Services
    ) -> AsyncIterator[Streamed]:
        token = cancel.current()
        stream = self._aiter_map(plan, inputs, services, token)
        settled = cancel.asettled_stream(stream, plan.n_items, token, services.on_error)
        return aobserved_stream(settled, services.events, plan.n_items)

    async def _amap(
        self, plan: MapPlan, inputs: Values, services: Services, token: cancel.Cancel | None
    ) -> list[Values]:
        """The items' results; those a cancelled run did not finish are None."""
        with cancel.watching(token), observed_map(services.events, plan.n_items):
            return await amap_items(
                self.nodes.async_runner(plan.item, services),
                inputs,
                plan.map_over,
                plan.map_mode,
                plan.n_items,
                max_concurrency=self.max_concurrency,
                priority=plan.priority,
            )

    async def _aiter_map(
        self, plan: MapPlan, inputs: Values, services: Services, token: cancel.Cancel | None
    ) -> AsyncIterator[Streamed]:
        with cancel.watching(token):
            arun_item = self.nodes.async_runner(plan.item, services)
            spec = (inputs, plan.map_over, plan.map_mode)
            async for entry in astream_items(
                arun_item, *spec, max_concurrency=self.max_concurrency, priority=plan.priority
            ):
                yield entry


MAP_EXECUTORS: dict[str, type[SequentialMap]] = {
    "sequential": SequentialMap,
    "async": AsyncMap,
    "threaded": ThreadedMap,
    "parallel": ParallelMap,
}
