"""Callbacks: HyperNodes-0.4-compatible hooks, progress bars, metrics and a node's own context.

    from hypernodes_daft import Pipeline, SeqEngine, node
    from hypernodes_daft.callbacks import (
        MetricsCallback, PipelineCallback, ProgressCallback, current_node, report_progress,
    )

    class Printer(PipelineCallback):            # override only the hooks you need
        def on_node_end(self, node_id, outputs, duration, ctx):
            print(node_id, f"{duration:.3f}s")

    @node(output_name="y")
    def slow(x: int) -> int:
        where = current_node()                  # NodeContext(node_name='slow', ..., item_index=2)
        for step in range(10):
            report_progress(step + 1, 10)       # a sub-bar under the ProgressCallback
        return x

    metrics = MetricsCallback()
    engine = SeqEngine(callbacks=[ProgressCallback(), metrics, Printer()])
    Pipeline(nodes=[slow], engine=engine).map(inputs={"x": [1, 2, 3]}, map_over="x")
    print(metrics.table())                      # calls, cache hits, p50/p95/max, in-flight peak

Engines do not call the hooks one by one: they build a `Callbacks` dispatcher once per run
and call `fire("on_node_end", node_id, outputs, duration, ctx)`. As in 0.4, an exception
raised by a callback is not caught: it propagates and fails the run (a broken callback
should be seen, not silently disabled). Engines that see events per batch rather than per
row (DaftEngine) also call `Callbacks.record_batch` and `Callbacks.advance_items`, which
reach the callbacks defining `record_batch` / `advance_items` (the two built-ins do).
"""

from __future__ import annotations

import contextvars
import statistics
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from .runtime.context import NodeContext, current_node, node_context

__all__ = [
    "HOOKS",
    "CallbackContext",
    "Callbacks",
    "MetricsCallback",
    "NodeContext",
    "PipelineCallback",
    "ProgressCallback",
    "current_node",
    "node_context",
    "report_progress",
]

# The hooks of HyperNodes 0.4, in the order its docs list them.
HOOKS = (
    "on_pipeline_start",
    "on_pipeline_end",
    "on_node_start",
    "on_node_end",
    "on_node_cached",
    "on_error",
    "on_nested_pipeline_start",
    "on_nested_pipeline_end",
    "on_map_start",
    "on_map_item_start",
    "on_map_item_end",
    "on_map_item_cached",
    "on_map_end",
)


# --------------------------------------------------------------------------------------
# Context shared by the callbacks of one execution
# --------------------------------------------------------------------------------------


class CallbackContext:
    """State shared by every callback of one execution, as in HyperNodes 0.4.

    `data` is a plain dict (`set`/`get`); the engine keeps a stack of pipeline ids
    (`push_pipeline`/`pop_pipeline`), so `depth` is 1 while the root pipeline runs.
    Mutations take a lock because hooks may fire from several threads at once.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._stack: list[str] = []
        self._lock = threading.RLock()

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def setdefault(self, key: str, default: Any) -> Any:
        """Atomic get-or-create, for state that several threads may create at once."""
        with self._lock:
            return self.data.setdefault(key, default)

    def push_pipeline(self, pipeline_id: str) -> None:
        with self._lock:
            self._stack.append(pipeline_id)

    def pop_pipeline(self) -> str:
        with self._lock:
            return self._stack.pop()

    def get_pipeline_metadata(self, pipeline_id: str) -> dict[str, Any]:
        """{"total_nodes", "pipeline_name", "node_ids"} as set by the engine, else {}."""
        return self.data.get(f"_pipeline_metadata:{pipeline_id}", {})

    def set_pipeline_metadata(self, pipeline_id: str, metadata: dict[str, Any]) -> None:
        self.set(f"_pipeline_metadata:{pipeline_id}", metadata)

    @property
    def depth(self) -> int:
        return len(self._stack)

    @property
    def current_pipeline_id(self) -> str | None:
        with self._lock:
            return self._stack[-1] if self._stack else None

    @property
    def parent_pipeline_id(self) -> str | None:
        with self._lock:
            return self._stack[-2] if len(self._stack) >= 2 else None

    @property
    def hierarchy_path(self) -> list[str]:
        with self._lock:
            return list(self._stack)

    def __getstate__(self) -> dict[str, Any]:
        # a lock does not pickle; a copy sent elsewhere gets a fresh one
        return {"data": self.data, "_stack": self._stack}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


# --------------------------------------------------------------------------------------
# The 0.4 hooks
# --------------------------------------------------------------------------------------


class PipelineCallback:
    """Base class of callbacks: every hook does nothing; override the ones you need.

    Names, arguments and firing order are HyperNodes 0.4's. An exception raised by a hook
    propagates to the caller of `run`/`map` (as in 0.4). Hooks may be called from several
    threads at once (threaded and async engines): guard shared state.
    """

    def on_pipeline_start(self, pipeline_id: str, inputs: dict, ctx: CallbackContext) -> None:
        pass

    def on_pipeline_end(
        self, pipeline_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        pass

    def on_node_start(self, node_id: str, inputs: dict, ctx: CallbackContext) -> None:
        pass

    def on_node_end(
        self, node_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        pass

    def on_node_cached(self, node_id: str, signature: str, ctx: CallbackContext) -> None:
        pass

    def on_error(self, node_id: str, error: Exception, ctx: CallbackContext) -> None:
        pass

    def on_nested_pipeline_start(
        self, parent_id: str, child_pipeline_id: str, ctx: CallbackContext
    ) -> None:
        pass

    def on_nested_pipeline_end(
        self, parent_id: str, child_pipeline_id: str, duration: float, ctx: CallbackContext
    ) -> None:
        pass

    def on_map_start(self, total_items: int, ctx: CallbackContext) -> None:
        pass

    def on_map_item_start(self, item_index: int, ctx: CallbackContext) -> None:
        pass

    def on_map_item_end(self, item_index: int, duration: float, ctx: CallbackContext) -> None:
        pass

    def on_map_item_cached(self, item_index: int, signature: str, ctx: CallbackContext) -> None:
        pass

    def on_map_end(self, total_duration: float, ctx: CallbackContext) -> None:
        pass

    @property
    def supported_engines(self) -> list[str] | None:
        """Engine class names this callback works with; None or [] means every engine."""
        return None


# --------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------


class RowFailed(Exception):
    """Stands for a node's exception on a DaftEngine row that failed under on_error
    "skip"/"collect" (the row's `_error` record tells what it raised)."""


def _overridden(callback: Any, hook: str) -> Any:
    """The callback's bound hook, or None when it is missing or the base class's no-op."""
    method = getattr(callback, hook, None)
    if method is None:  # duck-typed callbacks may implement only some hooks
        return None
    if getattr(method, "__func__", None) is getattr(PipelineCallback, hook):
        return None
    return method


class Callbacks:
    """What engines call: `fire(hook, *args)` calls the hook on each callback in list order.

    Hooks left as the base class's no-op are skipped, and `wants(hook)` says whether any
    callback implements a hook, so an engine can skip building expensive arguments.
    Exceptions from callbacks propagate (0.4 behaviour). Build one per run: it snapshots
    the bound methods.
    """

    def __init__(self, callbacks: Iterable[Any] | None = None) -> None:
        self.callbacks: tuple[Any, ...] = tuple(callbacks or ())
        self._hooks: dict[str, tuple[Any, ...]] = {
            hook: tuple(m for cb in self.callbacks if (m := _overridden(cb, hook)))
            for hook in HOOKS
        }
        self._batch_sinks = self._having("record_batch")
        self._item_sinks = self._having("advance_items")
        self._retry_sinks = self._having("record_retry")
        # callbacks that take no aggregates get the 0.4 hooks once per row instead
        self._per_row_nodes = self._lacking("record_batch")
        self._per_row_items = self._lacking("advance_items")

    def _having(self, name: str) -> tuple[Any, ...]:
        return tuple(
            getattr(cb, name) for cb in self.callbacks if callable(getattr(cb, name, None))
        )

    def _lacking(self, name: str) -> tuple[Any, ...]:
        return tuple(cb for cb in self.callbacks if not callable(getattr(cb, name, None)))

    @property
    def empty(self) -> bool:
        """True when there is no callback at all: engines skip every callback-related step."""
        return not self.callbacks

    def __len__(self) -> int:
        return len(self.callbacks)

    def wants(self, hook: str) -> bool:
        return bool(self._methods(hook))

    def fire(self, hook: str, *args: Any) -> None:
        for method in self._methods(hook):
            method(*args)

    def _methods(self, hook: str) -> tuple[Any, ...]:
        try:
            return self._hooks[hook]
        except KeyError:  # a typo in an engine must not silently drop events
            raise ValueError(f"unknown callback hook {hook!r}; hooks are {HOOKS}") from None

    def check_engine(self, engine_name: str, *aliases: str) -> None:
        """Raise ValueError (before anything runs) when a callback excludes this engine
        (known as `engine_name` or one of `aliases`, e.g. 0.4's "SeqEngine")."""
        names = {engine_name, *aliases}
        for callback in self.callbacks:
            supported = getattr(callback, "supported_engines", None)
            if supported and names.isdisjoint(supported):
                raise ValueError(
                    f"Callback {type(callback).__name__} is not compatible with engine "
                    f"{engine_name}. Supported engines: {supported}"
                )

    @property
    def wants_batches(self) -> bool:
        """Whether any callback takes aggregated node events (`record_batch`)."""
        return bool(self._batch_sinks)

    def record_batch(
        self,
        node_id: str,
        rows: int,
        seconds: float,
        cached: int = 0,
        errors: int = 0,
        ctx: CallbackContext | None = None,
    ) -> None:
        """Aggregated node events: `rows` calls took `seconds` in all, `cached` hits besides.

        With `ctx`, callbacks without `record_batch` get 0.4's hooks per row instead:
        on_node_start + on_node_end (empty inputs and outputs, the mean duration) for each
        computed row, on_node_start + on_error for each of the `errors` rows that failed
        (recorded under on_error "skip"/"collect": the exception stayed with its worker, a
        `RowFailed` stands in), on_node_cached (empty signature) for each hit.
        """
        for sink in self._batch_sinks:
            sink(node_id, rows, seconds, cached, errors)
        if ctx is None:
            return
        mean = seconds / rows if rows else 0.0
        for callback in self._per_row_nodes:
            start, end, hit, failed = (
                _overridden(callback, hook)
                for hook in ("on_node_start", "on_node_end", "on_node_cached", "on_error")
            )
            for row in range(rows):
                if start:
                    start(node_id, {}, ctx)
                if row >= rows - errors:
                    if failed:
                        failed(node_id, RowFailed(f"node '{node_id}' failed on a row"), ctx)
                elif end:
                    end(node_id, {}, mean, ctx)
            for _ in range(cached if hit else 0):
                hit(node_id, "", ctx)

    def record_retry(self, node_id: str, n: int = 1) -> None:
        """The runtime retried calls of this node `n` more times (for the callbacks that
        count retries, as MetricsCallback does: `record_retry(node_id)`)."""
        for sink in self._retry_sinks:
            for _ in range(n):
                sink(node_id)

    def advance_items(
        self,
        n: int,
        cached: int = 0,
        ctx: CallbackContext | None = None,
        first: int = 0,
        seconds: float = 0.0,
    ) -> None:
        """Aggregated map progress: `n` more items finished (`cached` of them with a hit).

        With `ctx`, callbacks without `advance_items` get on_map_item_start and
        on_map_item_end for items `first` .. `first + n - 1` (at the mean duration).
        """
        for sink in self._item_sinks:
            sink(n, cached)
        if ctx is None:
            return
        mean = seconds / n if n else 0.0
        for callback in self._per_row_items:
            start, end = (
                _overridden(callback, hook) for hook in ("on_map_item_start", "on_map_item_end")
            )
            for index in range(first, first + n):
                if start:
                    start(index, ctx)
                if end:
                    end(index, mean, ctx)


# ProgressCallbacks with an open session; report_progress forwards to them. Weak, so a
# callback whose run died without closing its bars does not live forever.
_ACTIVE_PROGRESS: weakref.WeakSet[ProgressCallback] = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()


def report_progress(done: int, total: int | None = None) -> None:
    """Called by a long node: `done` units of `total` are finished (absolute, not a delta).

    Shown as a sub-bar by every ProgressCallback of a run in progress in this process; a
    no-op when there is none (nor on a Ray/Daft worker process, whose callbacks live on
    the driver).
    """
    if not _ACTIVE_PROGRESS:  # the common case must cost next to nothing
        return
    with _ACTIVE_LOCK:
        active = list(_ACTIVE_PROGRESS)
    node = current_node()
    for progress in active:
        progress._report(node, done, total)


# --------------------------------------------------------------------------------------
# Progress bars
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    """The bars of one top-level run or map (opened by its first start hook)."""

    ctx: CallbackContext
    depth: int
    kind: str  # "map" or "run"
    total: int | None
    desc: str
    main: Any
    started: float = field(default_factory=time.perf_counter)
    cached_items: set[int] = field(default_factory=set)
    extra_cached_items: int = 0
    node_cached: dict[str, int] = field(default_factory=dict)
    sub_bars: dict[NodeContext | None, Any] = field(default_factory=dict)


class ProgressCallback(PipelineCallback):
    """tqdm progress bars: one for the map items (or the nodes of a run) and one per node.

    The first `on_map_start`/`on_pipeline_start` opens a session; events of nested
    pipelines (another context, or a deeper depth) count on the per-node bars only; the
    session's own `on_map_end`/`on_pipeline_end`/`on_error` closes every bar. Node bars
    count `on_node_end` + `on_node_cached` and show cache hits in the postfix. Uses
    `tqdm.auto` (a widget in Jupyter, text elsewhere) unless `tqdm_class` is given.
    """

    def __init__(
        self,
        enable: bool = True,
        leave: bool = True,
        file: IO[str] | None = None,
        tqdm_class: Any = None,
    ) -> None:
        self.enable = enable
        self.leave = leave
        self._file = file
        self._tqdm = tqdm_class or (_auto_tqdm() if enable else None)
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._failed: weakref.WeakSet[CallbackContext] = weakref.WeakSet()
        # the last session's bars stay readable after it closed (tests, notebooks)
        self.main_bar: Any = None
        self.node_bars: dict[str, Any] = {}

    # -- hooks --------------------------------------------------------------------------

    def on_pipeline_start(self, pipeline_id: str, inputs: dict, ctx: CallbackContext) -> None:
        # an item of a map whose session is gone (it failed) must not open a new one
        if not self.enable or ctx.get("_in_map"):
            return
        meta = ctx.get_pipeline_metadata(pipeline_id)
        name = str(meta.get("pipeline_name", pipeline_id))
        self._open(ctx, "run", meta.get("total_nodes") or None, name)

    def on_pipeline_end(
        self, pipeline_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        if self.enable:
            with self._lock:
                if self._top(ctx, "run"):
                    self._close(failed=False)

    def on_map_start(self, total_items: int, ctx: CallbackContext) -> None:
        if self.enable:
            self._open(ctx, "map", total_items, "items")

    def on_map_item_end(self, item_index: int, duration: float, ctx: CallbackContext) -> None:
        if self.enable:
            with self._lock:
                if self._top(ctx, "map"):
                    self._session.main.update(1)

    def on_map_item_cached(self, item_index: int, signature: str, ctx: CallbackContext) -> None:
        # 0.4 fires this per cache hit inside an item, and on_map_item_end as well: count
        # the item once as "cached" here, and advance the bar on on_map_item_end only
        if self.enable:
            with self._lock:
                if self._top(ctx, "map"):
                    self._session.cached_items.add(item_index)
                    self._show_cached_items()

    def on_map_end(self, total_duration: float, ctx: CallbackContext) -> None:
        if self.enable:
            with self._lock:
                if self._top(ctx, "map"):
                    self._close(failed=False)

    def on_node_start(self, node_id: str, inputs: dict, ctx: CallbackContext) -> None:
        if self.enable:
            with self._lock:
                if self._session is not None:
                    self._node_bar(node_id, self._top(ctx))  # visible while it runs

    def on_node_end(
        self, node_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        if self.enable:
            self._close_sub_bar(node_id)
            self._count(node_id, 1, 0, ctx)

    def on_node_cached(self, node_id: str, signature: str, ctx: CallbackContext) -> None:
        if self.enable:
            self._count(node_id, 0, 1, ctx)

    def on_error(self, node_id: str, error: Exception, ctx: CallbackContext) -> None:
        if not self.enable:
            return
        self._close_sub_bar(node_id)
        with self._lock:
            if self._session is None:
                return
            self._node_bar(node_id, self._top(ctx)).set_description(f"{node_id} ✗", refresh=False)
            if self._top(ctx):
                self._close(failed=True)  # no end hook follows an error (0.4)

    # -- aggregated events (DaftEngine reports per batch) ---------------------------------

    def advance(self, node_id: str, calls: int = 0, cached: int = 0) -> None:
        """`calls` more computed calls and `cached` more hits of a top-level node."""
        if self.enable:
            with self._lock:
                if self._session is not None:
                    self._add(node_id, calls, cached, top=True)

    def advance_items(self, n: int, cached: int = 0) -> None:
        """`n` more map items finished, `cached` of them with a cache hit."""
        if self.enable:
            with self._lock:
                if self._session is not None and self._session.kind == "map":
                    self._session.main.update(n)
                    self._session.extra_cached_items += cached
                    self._show_cached_items()

    def record_batch(
        self, node_id: str, rows: int, seconds: float, cached: int = 0, errors: int = 0
    ) -> None:
        """The `Callbacks.record_batch` protocol: forwards to `advance`."""
        self.advance(node_id, rows, cached)

    def close(self) -> None:
        """Close the open bars, if any (a run interrupted outside the hooks' view)."""
        with self._lock:
            if self._session is not None:
                self._close(failed=True)

    @property
    def sub_bars(self) -> dict[NodeContext | None, Any]:
        """The open `report_progress` bars, by the reporting node's context."""
        with self._lock:
            return dict(self._session.sub_bars) if self._session else {}

    # -- internals (call with self._lock held unless said otherwise) ----------------------

    def _bar(self, desc: str, total: int | None, leave: bool) -> Any:
        return self._tqdm(desc=desc, total=total, leave=leave, file=self._file, dynamic_ncols=True)

    def _open(self, ctx: CallbackContext, kind: str, total: int | None, desc: str) -> None:
        with self._lock:
            if self._session is not None or ctx in self._failed:
                return
            main = self._bar(desc, total, self.leave)
            self._session = _Session(ctx, ctx.depth, kind, total, desc, main)
            self.main_bar, self.node_bars = main, {}
        with _ACTIVE_LOCK:
            _ACTIVE_PROGRESS.add(self)

    def _top(self, ctx: CallbackContext, kind: str | None = None) -> bool:
        """Whether an event comes from the session's own level (not a nested pipeline)."""
        s = self._session
        return (
            s is not None
            and ctx is s.ctx
            and ctx.depth <= s.depth
            and (kind is None or s.kind == kind)
        )

    def _node_bar(self, node_id: str, top: bool) -> Any:
        bar = self.node_bars.get(node_id)
        if bar is None:
            s = self._session
            # a top-level node runs once per map item (once in a run); nested ones: unknown
            total = (s.total if s.kind == "map" else 1) if top else None
            bar = self.node_bars[node_id] = self._bar(node_id, total, self.leave)
        return bar

    def _count(self, node_id: str, calls: int, cached: int, ctx: CallbackContext) -> None:
        with self._lock:
            if self._session is None:
                return
            top = self._top(ctx)
            self._add(node_id, calls, cached, top)
            if top and self._session.kind == "run":
                self._session.main.update(1)

    def _add(self, node_id: str, calls: int, cached: int, top: bool) -> None:
        bar = self._node_bar(node_id, top)
        if cached:
            hits = self._session.node_cached.get(node_id, 0) + cached
            self._session.node_cached[node_id] = hits
            bar.set_postfix_str(f"cached {hits}", refresh=False)
        bar.update(calls + cached)

    def _show_cached_items(self) -> None:
        s = self._session
        hits = len(s.cached_items) + s.extra_cached_items
        s.main.set_postfix_str(f"cached {hits}", refresh=False)

    def _report(self, node: NodeContext | None, done: int, total: int | None) -> None:
        """A node's own progress (report_progress): a sub-bar per node call."""
        with self._lock:
            s = self._session
            if s is None:
                return
            bar = s.sub_bars.get(node)
            if bar is None:
                bar = s.sub_bars[node] = self._bar(_describe(node), total, leave=False)
            if total is not None and bar.total != total:
                bar.reset(total=total)  # reset, not `.total =`: it also resizes a widget
            bar.update(done - bar.n)
            if total is not None and done >= total:
                s.sub_bars.pop(node).close()

    def _close_sub_bar(self, node_id: str) -> None:
        # node_end fires inside the node's call (or its Daft batch's node_context), so
        # this finds the finished call
        node = current_node()
        if node is None or node.node_name != node_id:
            return
        with self._lock:
            if self._session is not None and node in self._session.sub_bars:
                self._session.sub_bars.pop(node).close()

    def _close(self, failed: bool) -> None:
        s, self._session = self._session, None
        for bar in s.sub_bars.values():
            bar.close()
        if s.kind == "map" and not failed and s.total is not None:
            s.main.update(s.total - s.main.n)  # every item is done when the map ends
        seconds = time.perf_counter() - s.started
        mark = "✗" if failed else "✓"
        s.main.set_description(f"{s.desc} {mark} ({seconds:.2f}s)", refresh=False)
        s.main.close()  # first, so the finished bars are printed top to bottom
        for bar in self.node_bars.values():
            bar.close()
        if failed:
            self._failed.add(s.ctx)  # late events of this run must not open a new session
        with _ACTIVE_LOCK:
            _ACTIVE_PROGRESS.discard(self)


def _auto_tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        raise ImportError(
            "ProgressCallback needs tqdm: pip install 'tqdm>=4.66' (or pass enable=False)"
        ) from error
    return tqdm


def _describe(node: NodeContext | None) -> str:
    if node is None:
        return "progress"
    if node.item_index is None:
        return f"  {node.node_name}"
    return f"  {node.node_name}[{node.item_index}]"


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


@dataclass
class _NodeStats:
    calls: int = 0
    cached: int = 0
    errors: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    in_flight: int = 0
    in_flight_peak: int = 0


def _percentiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p95 and max; statistics.quantiles needs two points before Python 3.13."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], max(values)


class MetricsCallback(PipelineCallback):
    """Per node: calls, cache hits, errors, retries, latency p50/p95/max, in-flight peak.

    `calls` counts started calls (`on_node_start`, or the `rows` of `record_batch`),
    cache hits are not calls; latencies come from `on_node_end` (every one is kept).
    `in_flight_peak` is the most calls of a node running at once; the property of the same
    name is the peak over all nodes together. Counters accumulate across runs.
    With `otel=True`, each node call is also an OpenTelemetry span `node:<id>`.
    """

    def __init__(self, otel: bool = False, tracer_provider: Any = None) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, _NodeStats] = {}
        self._in_flight = 0
        self._in_flight_peak = 0
        self._otel = _OtelSpans(tracer_provider) if otel else None

    def _stats(self, node_id: str) -> _NodeStats:
        stats = self._nodes.get(node_id)
        if stats is None:
            stats = self._nodes[node_id] = _NodeStats()
        return stats

    def on_node_start(self, node_id: str, inputs: dict, ctx: CallbackContext) -> None:
        with self._lock:
            stats = self._stats(node_id)
            stats.calls += 1
            stats.in_flight += 1
            stats.in_flight_peak = max(stats.in_flight_peak, stats.in_flight)
            self._in_flight += 1
            self._in_flight_peak = max(self._in_flight_peak, self._in_flight)
        if self._otel:
            self._otel.start(node_id, ctx)

    def on_node_end(
        self, node_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        with self._lock:
            stats = self._stats(node_id)
            stats.latencies.append(duration)
            self._leave(stats)
        if self._otel:
            self._otel.end(node_id, None)

    def on_node_cached(self, node_id: str, signature: str, ctx: CallbackContext) -> None:
        with self._lock:
            self._stats(node_id).cached += 1
        if self._otel:
            self._otel.cached(node_id, ctx)

    def on_error(self, node_id: str, error: Exception, ctx: CallbackContext) -> None:
        with self._lock:
            stats = self._stats(node_id)
            stats.errors += 1
            self._leave(stats)
        if self._otel:
            self._otel.end(node_id, error)

    def _leave(self, stats: _NodeStats) -> None:
        # never below zero: an error may be reported for a call that never started
        if stats.in_flight > 0:
            stats.in_flight -= 1
            self._in_flight -= 1

    def record_retry(self, node_id: str) -> None:
        """The runtime retried a call of this node once more."""
        with self._lock:
            self._stats(node_id).retries += 1

    def record_batch(
        self, node_id: str, rows: int, seconds: float, cached: int = 0, errors: int = 0
    ) -> None:
        """Aggregated events: `rows` calls took `seconds` in all (each counted at the mean)."""
        with self._lock:
            stats = self._stats(node_id)
            stats.calls += rows
            stats.cached += cached
            stats.errors += errors
            if rows > 0:
                stats.latencies.extend([seconds / rows] * rows)
        if self._otel and rows > 0:
            self._otel.batch(node_id, rows, seconds, cached)

    @property
    def in_flight_peak(self) -> int:
        """The most node calls (all nodes together) running at once."""
        return self._in_flight_peak

    def summary(self) -> dict[str, dict[str, Any]]:
        """{node_id: {calls, cached, errors, retries, p50, p95, max, total, in_flight_peak}}.

        Latencies are in seconds (`total`: all the node's calls), None for a node that
        never completed a call.
        """
        with self._lock:
            nodes = {name: (s, list(s.latencies)) for name, s in self._nodes.items()}
        out = {}
        for name, (s, latencies) in nodes.items():
            p50, p95, top = _percentiles(latencies)
            out[name] = {
                "calls": s.calls,
                "cached": s.cached,
                "errors": s.errors,
                "retries": s.retries,
                "p50": p50,
                "p95": p95,
                "max": top,
                "total": sum(latencies) if latencies else None,
                "in_flight_peak": s.in_flight_peak,
            }
        return out

    def table(self) -> str:
        """The summary as a Markdown table (latencies in milliseconds)."""
        header = ["node", "calls", "cached", "errors", "retries", "p50 ms", "p95 ms", "max ms"]
        rows = [[*header, "total s", "in-flight peak"]]
        for name, m in self.summary().items():
            counts = [str(m[k]) for k in ("calls", "cached", "errors", "retries")]
            times = [_ms(m[k]) for k in ("p50", "p95", "max")]
            total = "-" if m["total"] is None else f"{m['total']:.3f}"
            rows.append([name, *counts, *times, total, str(m["in_flight_peak"])])
        return _markdown(rows) + f"\n\noverall in-flight peak: {self.in_flight_peak}"

    def __str__(self) -> str:
        return self.table()


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def _markdown(rows: list[list[str]]) -> str:
    """A Markdown table whose columns also line up as plain text (first column left)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def pad(i: int, cell: str) -> str:
        return cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(pad(i, c) for i, c in enumerate(cells)) + " |"

    rules = [":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(rows[0]), "|" + "|".join(rules) + "|", *map(line, rows[1:])])


# --------------------------------------------------------------------------------------
# OpenTelemetry spans (optional)
# --------------------------------------------------------------------------------------

# Open spans of this thread / asyncio task, innermost last: start and end hooks of one call
# run in the same context, also when an async engine interleaves calls on one thread.
_OPEN_SPANS: contextvars.ContextVar[tuple[tuple[int, str, Any], ...]] = contextvars.ContextVar(
    "hypernodes_daft_open_spans", default=()
)


class _OtelSpans:
    """One span per node call, `node:<node_id>`, with the node id and map item index."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as error:
            raise ImportError(
                "MetricsCallback(otel=True) needs the OpenTelemetry API: "
                "pip install opentelemetry-api (and an SDK/exporter to see the spans)"
            ) from error
        self._trace = trace
        self._tracer = trace.get_tracer("hypernodes_daft", tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        # every open span, by node, for an end hook fired in another context than its start
        self._open: dict[str, list[Any]] = {}

    def _attributes(self, node_id: str, ctx: CallbackContext | None) -> dict[str, Any]:
        node = current_node()
        index = node.item_index if node is not None else None
        if index is None and ctx is not None:
            index = ctx.get("_map_item_index")
        attributes: dict[str, Any] = {"hypernodes.node_id": node_id}
        if index is not None:
            attributes["hypernodes.item_index"] = index
        return attributes

    def start(self, node_id: str, ctx: CallbackContext) -> None:
        span = self._tracer.start_span(f"node:{node_id}", attributes=self._attributes(node_id, ctx))
        with self._lock:
            self._open.setdefault(node_id, []).append(span)
        _OPEN_SPANS.set((*_OPEN_SPANS.get(), (id(self), node_id, span)))

    def end(self, node_id: str, error: BaseException | None) -> None:
        span = self._pop(node_id)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            status = self._trace.Status(self._trace.StatusCode.ERROR, str(error))
            span.set_status(status)
        span.end()

    def _pop(self, node_id: str) -> Any:
        stack = _OPEN_SPANS.get()
        for i in range(len(stack) - 1, -1, -1):
            owner, name, span = stack[i]
            if owner == id(self) and name == node_id:
                _OPEN_SPANS.set(stack[:i] + stack[i + 1 :])
                with self._lock:
                    self._open[node_id].remove(span)
                return span
        with self._lock:  # started in another context: take the oldest open one
            spans = self._open.get(node_id)
            return spans.pop(0) if spans else None

    def cached(self, node_id: str, ctx: CallbackContext) -> None:
        attributes = {**self._attributes(node_id, ctx), "hypernodes.cached": True}
        self._tracer.start_span(f"node:{node_id}", attributes=attributes).end()

    def batch(self, node_id: str, rows: int, seconds: float, cached: int) -> None:
        end = time.time_ns()
        attributes = {"hypernodes.node_id": node_id, "hypernodes.rows": rows}
        if cached:
            attributes["hypernodes.cached_rows"] = cached
        span = self._tracer.start_span(
            f"node:{node_id}", attributes=attributes, start_time=end - int(seconds * 1e9)
        )
        span.end(end_time=end)


def callback_list(callbacks: Any, owner: str) -> list[Any]:
    """`callbacks=` as given to an engine or a pipeline: a list (or None), checked now so
    that a single callback passed bare fails here with a clear message, not at the run."""
    if callbacks is None:
        return []
    if isinstance(callbacks, PipelineCallback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"{owner}: callbacks must be a list of callbacks, got {type(callbacks).__name__}"
            f" (write callbacks=[{type(callbacks).__name__}(...)])"
        )
    return list(callbacks)
