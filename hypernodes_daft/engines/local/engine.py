"""`HypernodesEngine`: runs plans on this machine, with one executor for the nodes of an item
and one for the items of a map.

    engine = HypernodesEngine()                            # sequential: easy to debug
    engine = HypernodesEngine(map_executor="async")        # I/O: 100 items in flight
    with HypernodesEngine(map_executor="parallel") as engine:   # CPU: all cores
        pipeline.map(inputs={"n": [30] * 8}, map_over="n", engine=engine)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ...plan import MapPlan, RunPlan
from ...runtime.dispatch import callback_list
from ...runtime.events import Events, aobserved_stream, observed_map, observed_stream
from ...runtime.items import RunItem, compile_run, map_items, stream_items
from ...runtime.loop import run_coroutine, stream_in_thread
from ...runtime.node_call import Services, Values
from .asynchronous import ARunItem, amap_items, compile_arun
from .parallel import iter_parallel, map_parallel
from .streaming import astream_items, stream_from_loop, stream_threaded
from .threaded import compile_threaded, map_threaded

NODE_EXECUTORS = ("sequential", "async", "threaded")
MAP_EXECUTORS = ("sequential", "async", "threaded", "parallel")
_MAX_IO_THREADS = 256
_KEPT_RUNNERS = 32
_MIN_WINDOW = 256


class HypernodesEngine:
    """Local execution with a choice of executors.

    - `node_executor`: how the nodes of one item run: "sequential"; "threaded" (the nodes of
      one topological generation run together on a thread pool); "async" (the same, as
      coroutines on one event loop; sync nodes run in worker threads).
    - `map_executor`: how map items run: "sequential"; "threaded" (a thread pool of
      `max_workers`, default CPU count); "async" (coroutines on one long-lived event loop, at
      most `max_concurrency` items in flight); "parallel" (a process pool of `max_workers`
      processes, started once per engine and reused; functions and data travel with
      cloudpickle, nodes run sequentially inside each process).
    - Either may be a `concurrent.futures.Executor` you own (a process pool only for maps);
      the engine uses it and never shuts it down. `shutdown()`, or leaving a `with` block,
      releases the pools the engine started itself.
    - Sync nodes under an async executor run on a thread pool of `max_workers` threads
      (default `max_concurrency`, at most 256), so blocking I/O still overlaps.
    """

    def __init__(
        self,
        node_executor: str | Executor = "sequential",
        map_executor: str | Executor = "sequential",
        max_workers: int | None = None,
        max_concurrency: int = 100,
        cache: Any = None,
        callbacks: list[Any] | None = None,
    ):
        self.node_executor = _kind("node_executor", node_executor, NODE_EXECUTORS)
        self.map_executor = _kind("map_executor", map_executor, MAP_EXECUTORS)
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"HypernodesEngine: max_workers must be >= 1, got {max_workers}")
        if max_concurrency < 1:
            raise ValueError(
                f"HypernodesEngine: max_concurrency must be >= 1, got {max_concurrency}"
            )
        self.max_workers = max_workers
        self.max_concurrency = max_concurrency
        self.cache = cache
        self.services = Services(cache=cache)
        # a map whose items run at once in this process: batch_size nodes group their calls
        self._grouping = replace(self.services, concurrent_items=True)
        self.callbacks = callback_list(callbacks, "HypernodesEngine")
        self._given = {
            "node": node_executor if isinstance(node_executor, Executor) else None,
            "map": map_executor if isinstance(map_executor, Executor) else None,
        }
        self._owned: dict[str, Executor] = {}
        self._runners: dict[tuple[str, int], tuple[RunPlan, Services, Any]] = {}

    # -- the Engine protocol -----------------------------------------------------------------
    # `cache` and `callbacks` come from the pipeline (`Pipeline(cache=..., callbacks=...)`):
    # its cache replaces the engine's, its callbacks are fired after the engine's. `on_error`
    # is the call's, for the nodes that do not set their own (results.py).

    def run(
        self,
        plan: RunPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Values:
        services = self._services(plan, cache, callbacks, on_error)
        return self._item_runner(plan, services)(dict(inputs))

    def map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> list[Values]:
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        if self.map_executor == "async":
            return run_coroutine(self._amap(plan, inputs, services))
        with observed_map(services.events, plan.n_items):
            if self.map_executor == "parallel":
                return map_parallel(self._pool("map"), self._workers(), plan, inputs, services)
            run_item = self._item_runner(plan.item, services)
            spec = (inputs, plan.map_over, plan.map_mode)
            if self.map_executor == "threaded":
                window = self._window()
                return map_threaded(self._pool("map"), run_item, *spec, window, plan.n_items or 0)
            return map_items(run_item, *spec)

    def iter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Iterator[tuple[int, Values]]:
        """`(index, outputs)` per item as soon as it is done (in order when sequential)."""
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        if self.map_executor == "async":
            return stream_from_loop(self._astream(plan, inputs, services))
        return observed_stream(self._stream(plan, inputs, services), services.events, plan.n_items)

    async def aiter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> AsyncIterator[tuple[int, Values]]:
        """`iter_map` for async callers; the async executor streams on the caller's loop."""
        if self.map_executor == "async":
            services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
            stream = self._astream(plan, inputs, services)
        else:
            stream = stream_in_thread(self.iter_map(plan, inputs, cache, callbacks, on_error))
        async for entry in stream:
            yield entry

    async def arun(
        self,
        plan: RunPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Values:
        """`run` for async callers: async work runs on the caller's event loop."""
        if self.node_executor == "async" or plan.is_async:
            services = self._services(plan, cache, callbacks, on_error)
            return await self._async_runner(plan, services)(dict(inputs))
        return await asyncio.to_thread(self.run, plan, inputs, cache, callbacks, on_error)

    async def amap(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> list[Values]:
        """`map` for async callers: with the async executor, on the caller's event loop."""
        if self.map_executor == "async":
            services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
            return await self._amap(plan, inputs, services)
        return await asyncio.to_thread(self.map, plan, inputs, cache, callbacks, on_error)

    # -- resources -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the thread and process pools this engine started (not ones it was given)."""
        owned, self._owned = self._owned, {}
        self._runners.clear()  # they hold the pools being shut down
        for pool in owned.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HypernodesEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"HypernodesEngine(node_executor={self.node_executor!r}, "
            f"map_executor={self.map_executor!r}, max_workers={self.max_workers}, "
            f"max_concurrency={self.max_concurrency})"
        )

    # -- compiling plans into runners ------------------------------------------------------------

    def _services(
        self, plan: RunPlan, cache: Any, callbacks: Any, on_error: str, mapping: bool = False
    ) -> Services:
        """The services of one call: the engine's own unless the pipeline brings a cache,
        either brings callbacks or the call sets on_error (then the runners are compiled
        for this call only). Items run at once (`concurrent_items`) only in a map on the
        async or threaded executor: `run` is one item, the sequential executor runs items
        one by one and so does each process of the parallel one."""
        grouping = mapping and self.map_executor in ("async", "threaded")
        every = [*self.callbacks, *(callbacks or ())]
        if cache is None and not every and on_error == "raise":
            return self._grouping if grouping else self.services
        events = Events.start(every, plan, type(self).__name__, "SeqEngine")
        cache = cache if cache is not None else self.cache
        return Services(cache, events, (), on_error, concurrent_items=grouping)

    def _item_runner(self, plan: RunPlan, services: Services) -> RunItem:
        """A synchronous function running one item with the node executor."""
        if self.node_executor == "async":
            arun = self._async_runner(plan, services)
            return lambda values, index=None: run_coroutine(arun(values, index))
        return self._kept("sync", plan, services, self._compile_sync)

    def _compile_sync(self, plan: RunPlan, services: Services) -> RunItem:
        if self.node_executor == "threaded":
            return compile_threaded(plan, self._pool("node"), services)
        return compile_run(plan, services)

    def _async_runner(self, plan: RunPlan, services: Services) -> ARunItem:
        """Kept per plan, so what the runner learned (which sync nodes are quick enough to
        run on the loop) carries over to the next call."""
        return self._kept("async", plan, services, self._compile_async)

    def _compile_async(self, plan: RunPlan, services: Services) -> ARunItem:
        concurrent_nodes = self.node_executor != "sequential"
        return compile_arun(
            plan, concurrent_nodes, self._pool("io"), self.max_concurrency, services
        )

    def _kept(self, kind: str, plan: RunPlan, services: Services, compile: Any) -> Any:
        """`compile(plan, services)`, kept per plan for the engine's own services (a
        `run()` per item would otherwise compile its plan every time: 3 us a node)."""
        own = services is self.services or services is self._grouping
        kept = self._runners.get((kind, id(plan)))
        if own and kept is not None and kept[0] is plan and kept[1] is services:
            return kept[2]
        runner = compile(plan, services)
        if own:
            if len(self._runners) >= _KEPT_RUNNERS:
                self._runners.clear()
            self._runners[(kind, id(plan))] = (plan, services, runner)
        return runner

    async def _amap(self, plan: MapPlan, inputs: Values, services: Services) -> list[Values]:
        with observed_map(services.events, plan.n_items):
            return await amap_items(
                self._async_runner(plan.item, services),
                inputs,
                plan.map_over,
                plan.map_mode,
                plan.n_items,
                max_concurrency=self.max_concurrency,
            )

    def _astream(
        self, plan: MapPlan, inputs: Values, services: Services
    ) -> AsyncIterator[tuple[int, Values]]:
        arun_item = self._async_runner(plan.item, services)
        spec = (inputs, plan.map_over, plan.map_mode)
        stream = astream_items(arun_item, *spec, max_concurrency=self.max_concurrency)
        return aobserved_stream(stream, services.events, plan.n_items)

    def _stream(
        self, plan: MapPlan, inputs: Values, services: Services
    ) -> Iterator[tuple[int, Values]]:
        if self.map_executor == "parallel":
            return iter_parallel(self._pool("map"), self._workers(), plan, inputs, services)
        run_item = self._item_runner(plan.item, services)
        spec = (inputs, plan.map_over, plan.map_mode)
        if self.map_executor == "threaded":
            return stream_threaded(self._pool("map"), run_item, *spec, self._window())
        return stream_items(run_item, *spec)

    def _window(self) -> int:
        """Items in flight on the threaded map executor: enough that waiting for the next
        one to finish is rare (each wait costs tens of microseconds), few enough that a
        long map holds a window of futures, not one per item."""
        return max(_MIN_WINDOW, 4 * self._workers())

    def _workers(self) -> int:
        return self.max_workers or os.cpu_count() or 1

    def _pool(self, role: str) -> Executor:
        given = self._given.get(role)
        if given is not None:
            return given
        if role not in self._owned:
            self._owned[role] = self._new_pool(role)
        return self._owned[role]

    def _new_pool(self, role: str) -> Executor:
        if role == "map" and self.map_executor == "parallel":
            # spawn: forking a process that runs threads (our event loop) is unsafe
            context = multiprocessing.get_context("spawn")
            return ProcessPoolExecutor(self._workers(), mp_context=context)
        if role == "io":
            size = self.max_workers or min(self.max_concurrency, _MAX_IO_THREADS)
            return ThreadPoolExecutor(size, thread_name_prefix="hypernodes-io")
        return ThreadPoolExecutor(self._workers(), thread_name_prefix=f"hypernodes-{role}")


def _kind(role: str, choice: str | Executor, allowed: tuple[str, ...]) -> str:
    """The executor kind a string or an Executor instance stands for."""
    if isinstance(choice, ProcessPoolExecutor):
        if "parallel" not in allowed:
            raise ValueError(
                f"HypernodesEngine: {role} cannot be a process pool; nodes of one item share "
                "values in memory. Use a ThreadPoolExecutor, or pass it as map_executor"
            )
        return "parallel"
    if isinstance(choice, Executor):
        return "threaded"
    if choice not in allowed:
        raise ValueError(
            f"HypernodesEngine: unknown {role} {choice!r}; expected one of {list(allowed)} "
            "or a concurrent.futures.Executor"
        )
    return choice


SeqEngine = HypernodesEngine
"""HyperNodes 0.4's name for the sequential engine."""
