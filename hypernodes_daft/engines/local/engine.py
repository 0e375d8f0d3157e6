"""`HypernodesEngine`: runs plans on this machine, with one executor for the nodes of an item
and one for the items of a map (executors.py), chosen once when the engine is made.

    engine = HypernodesEngine()                            # sequential: easy to debug
    engine = HypernodesEngine(map_executor="async")        # I/O: 100 items in flight
    with HypernodesEngine(map_executor="parallel") as engine:   # CPU: all cores
        pipeline.map(inputs={"n": [30] * 8}, map_over="n", engine=engine)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import loky

from ...exceptions import WorkerDiedError, wrap_error
from ...plan import MapPlan, RunPlan, iter_rows, make_item
from ...runtime.arrow_calls import call_over_rows
from ...runtime.dispatch import callback_list
from ...runtime.events import Events
from ...runtime.item_order import Priority
from ...runtime.items import may_settle
from ...runtime.node_call import Services, Values, check_cache
from .executors import MAP_EXECUTORS, NODE_EXECUTORS, Compile
from .parquet import write_results
from .streaming import Streamed

_MAX_IO_THREADS = 256
_KEPT_RUNNERS = 32


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

    reads_datasets = False  # Pipeline.map reads dataset columns into lists for it

    def __init__(
        self,
        node_executor: str | Executor = "sequential",
        map_executor: str | Executor = "sequential",
        max_workers: int | None = None,
        max_concurrency: int = 100,
        cache: Any = None,
        callbacks: list[Any] | None = None,
    ):
        self.node_executor = _kind("node_executor", node_executor, tuple(NODE_EXECUTORS))
        self.map_executor = _kind("map_executor", map_executor, tuple(MAP_EXECUTORS))
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
        self.callbacks = callback_list(callbacks, type(self).__name__)
        self._given = {
            "node": node_executor if isinstance(node_executor, Executor) else None,
            "map": map_executor if isinstance(map_executor, Executor) else None,
        }
        self._owned: dict[str, Executor] = {}
        self._runners: dict[tuple[str, int], tuple[RunPlan, Services, Any]] = {}
        # the executors, chosen once: every call goes through these two objects
        self._workers = max_workers or os.cpu_count() or 1
        self._nodes = NODE_EXECUTORS[self.node_executor](self._kept, self._pool, max_concurrency)
        self._maps = MAP_EXECUTORS[self.map_executor](
            self._nodes, self._pool, self._workers, max_concurrency
        )

    # -- the Engine protocol -----------------------------------------------------------------
    # `cache` and `callbacks` come from the pipeline (`Pipeline(cache=..., callbacks=...)`):
    # its cache replaces the engine's, its callbacks are fired after the engine's. `on_error`
    # is the call's, for the nodes that do not set their own (results.py). `priority` (maps
    # only): which items start first (runtime/item_order.py); the executors read it from
    # the plan (`MapPlan.priority`).

    def run(
        self,
        plan: RunPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Values:
        services = self._services(plan, cache, callbacks, on_error)
        return self._nodes.runner(plan, services)(dict(inputs))

    def map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> list[Values]:
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        if _one_batch(plan, services):
            return _map_in_one_call(plan, inputs)
        return self._maps.map(_by_priority(plan, priority), inputs, services)

    def iter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> Iterator[Streamed]:
        """`(index, outputs)` per item as soon as it is done (in order when sequential)."""
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        return self._maps.iter_map(_by_priority(plan, priority), inputs, services)

    async def aiter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> AsyncIterator[Streamed]:
        """`iter_map` for async callers; the async executor streams on the caller's loop."""
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        async for entry in self._maps.aiter_map(_by_priority(plan, priority), inputs, services):
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
        services = self._services(plan, cache, callbacks, on_error)
        return await self._nodes.caller_runner(plan, services)(dict(inputs))

    async def amap(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> list[Values]:
        """`map` for async callers: with the async executor, on the caller's event loop."""
        services = self._services(plan.item, cache, callbacks, on_error, mapping=True)
        return await self._maps.amap(_by_priority(plan, priority), inputs, services)

    def write_parquet(
        self,
        plan: MapPlan,
        inputs: Values,
        path: str,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
        **options: Any,
    ) -> list[str]:
        """Run the map and write the mapped inputs and the outputs as Parquet under `path`
        (`options` as `daft.DataFrame.write_parquet` takes them); returns the files written.
        As DaftEngine writes them: when failures may be kept, an `_error` struct column
        (null where the row succeeded; the failed rows' outputs are null), and the rows
        failed under on_error "skip" left out."""
        results = self.map(plan, inputs, cache, callbacks, on_error, priority)
        return write_results(plan, inputs, results, on_error, path, **options)

    # -- resources -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the thread and process pools this engine started (not ones it was given)."""
        owned, self._owned = self._owned, {}
        self._runners.clear()  # they hold the pools being shut down
        for pool in owned.values():
            _stop(pool)

    def __enter__(self) -> HypernodesEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(node_executor={self.node_executor!r}, "
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
        used = cache if cache is not None else self.cache
        check_cache(used)  # before any node runs
        grouping = mapping and self._maps.concurrent_items
        every = [*self.callbacks, *(callbacks or ())]
        if cache is None and not every and on_error == "raise":
            return self._grouping if grouping else self.services
        names = (type(self).__name__, "SeqEngine", "HypernodesEngine")
        events = Events.start(every, plan, *names, cache=used)
        return Services(used, events, (), on_error, concurrent_items=grouping)

    def _kept(self, kind: str, plan: RunPlan, services: Services, compile: Compile) -> Any:
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

    def _pool(self, role: str, broken: Executor | None = None) -> Executor:
        """The pool for `role`, started on first use. `broken`: a process pool a dead
        worker broke, shut down and replaced (a pool the user gave stays theirs to fix)."""
        given = self._given.get(role)
        if given is not None:
            if broken is given:
                raise WorkerDiedError(
                    f"HypernodesEngine: a worker of the {role} pool you gave died; the pool "
                    "is broken and only you can replace it"
                )
            return given
        if broken is not None and self._owned.get(role) is broken:
            del self._owned[role]
            _stop(broken, wait=False)
        if role not in self._owned:
            self._owned[role] = self._new_pool(role)
        return self._owned[role]

    def _new_pool(self, role: str) -> Executor:
        if role.partition(":")[0] == "map":  # threads, or processes for "parallel"
            size = role.partition(":")[2]  # "map:R": a pool of R for a model of R replicas
            return self._maps.new_pool(int(size) if size else None)
        if role == "io":
            size = self.max_workers or min(self.max_concurrency, _MAX_IO_THREADS)
            return ThreadPoolExecutor(size, thread_name_prefix="hypernodes-io")
        return ThreadPoolExecutor(self._workers, thread_name_prefix=f"hypernodes-{role}")


def _by_priority(plan: MapPlan, priority: Priority) -> MapPlan:
    """`plan` with its items started by `priority` (None: in index order, as planned).
    Sequential and async and threaded maps run items in priority order; a parallel map
    sends its chunks of consecutive items in order of their highest priority."""
    return plan if priority is None else replace(plan, priority=priority)


def _one_batch(plan: MapPlan, services: Services) -> bool:
    """Whether the map is HyperNodes 0.4's DualNode fast path: its one node has a batch
    function, and no cache, callbacks or tolerated failures need each item on its own."""
    steps = plan.item.steps
    return (
        len(steps) == 1
        and steps[0].options.arrow_function is not None
        and services.cache is None
        and services.events is None
        and not may_settle(plan.item, services.on_error)
    )


def _map_in_one_call(plan: MapPlan, inputs: Values) -> list[Values]:
    """Every item of the map in one call of its one node's batch function."""
    step = plan.item.steps[0]
    shared = {k: v for k, v in inputs.items() if k not in plan.map_over}
    rows = iter_rows(inputs, plan.map_over, plan.map_mode)
    items = (make_item(shared, plan.map_over, row) for row in rows)
    arguments = [{a: item[a] for a in step.args} for item in items]
    batch = step.options.arrow_function
    try:
        return call_over_rows(batch, step.label, step.outputs, arguments)
    except Exception as error:
        raise wrap_error(error, step.label, f"<{len(arguments)} items>") from error


def _stop(pool: Executor, wait: bool = True) -> None:
    """Shut `pool` down, dropping the work not started; not waiting: a broken process
    pool's workers are killed."""
    if isinstance(pool, loky.ProcessPoolExecutor):  # it takes no cancel_futures
        pool.shutdown(wait=wait, kill_workers=not wait)
    else:
        pool.shutdown(wait=wait, cancel_futures=True)


def _kind(role: str, choice: str | Executor, allowed: tuple[str, ...]) -> str:
    """The executor kind a string or an Executor instance stands for."""
    if isinstance(choice, (ProcessPoolExecutor, loky.ProcessPoolExecutor)):
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


class SeqEngine(HypernodesEngine):
    """HyperNodes 0.4's name for the local engine (sequential unless told otherwise): the
    same engine, named so in errors and reprs when the user made it by this name.

        engine = SeqEngine(cache=DiskCache(".cache"))
    """
