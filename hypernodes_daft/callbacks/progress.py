"""Progress bars: `ProgressCallback` (tqdm) and `report_progress`, a node's own sub-bar.

    from hypernodes_daft import HypernodesEngine, Pipeline, node
    from hypernodes_daft.callbacks import ProgressCallback, report_progress

    @node(output_name="y")
    def slow(x: int) -> int:
        for step in range(10):
            report_progress(step + 1, 10)       # a sub-bar under the item bars
        return x

    engine = HypernodesEngine(callbacks=[ProgressCallback()])
    Pipeline(nodes=[slow], engine=engine).map(inputs={"x": [1, 2, 3]}, map_over="x")

One bar counts the map's items (or a run's nodes), one more per node counts its calls and
cache hits. Events of nested pipelines count on the node bars only. DaftEngine reports
per batch (`record_batch`, `advance_items`) rather than per row.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import IO, Any

from ..runtime.context import NodeContext, current_node
from ..runtime.dispatch import CallbackContext
from .base import PipelineCallback

__all__ = ["ProgressCallback", "report_progress"]

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
        """A batch of a node's calls: its `rows` and `cached` hits advance the node's bar
        (implemented, so DaftEngine does not replay each row as 0.4 hooks)."""
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
