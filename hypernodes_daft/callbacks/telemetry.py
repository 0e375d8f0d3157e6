"""OpenTelemetry spans: `TelemetryCallback` (HyperNodes 0.4's tracing callback) and the
per-call spans of `MetricsCallback(otel=True)`.

    from opentelemetry.sdk.trace import TracerProvider   # or logfire.configure()
    from hypernodes_daft.telemetry import TelemetryCallback

    telemetry = TelemetryCallback(tracer_provider=TracerProvider())
    pipeline = Pipeline(nodes=[...], engine=HypernodesEngine(callbacks=[telemetry]))
    pipeline.map(inputs={"x": [1, 2]}, map_over="x")
    telemetry.span_data              # one dict per span, for your own charts
    telemetry.get_waterfall_chart()  # a Plotly figure (needs plotly)

Spans nest as the hooks do: `map_operation` > `map_item[i]` > `pipeline:<id>` >
`node:<id>`, a nested pipeline's spans under the node that runs it. Each span opens under
the innermost span still open in the same thread or asyncio task, so concurrent items keep
their own trees. The OpenTelemetry API is imported only when spans are asked for: it is an
optional dependency (`pip install 'hypernodes_daft[telemetry]'`), and without an SDK (or
logfire, which installs one) its spans go nowhere.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from typing import Any

from ..runtime.context import current_node
from ..runtime.dispatch import CallbackContext
from .base import PipelineCallback

__all__ = ["NodeSpans", "Spans", "TelemetryCallback"]

_EXTRA = "pip install 'hypernodes_daft[telemetry]'"
_TEXT_LIMIT = 500  # inputs and outputs as span attributes, cut as 0.4 cuts them

# Open spans of this thread / asyncio task, innermost last: (owner, key, span, start in ns).
_OPEN: contextvars.ContextVar[tuple[tuple[int, Any, Any, int], ...]] = contextvars.ContextVar(
    "hypernodes_daft_open_spans", default=()
)
_owners = itertools.count()


class Spans:
    """Spans opened and closed by hooks: `open(key, name)` starts one under the innermost
    span this object has open in the calling context (else under `fallback`), `close(key)`
    ends the innermost one with that key (one opened in another context when this context
    has none: an end hook fired elsewhere)."""

    def __init__(self, tracer_provider: Any = None, needed_by: str = "TelemetryCallback"):
        try:
            from opentelemetry import trace
        except ImportError as error:
            raise ImportError(
                f"{needed_by} needs the OpenTelemetry API: {_EXTRA} (or pip install "
                "opentelemetry-api, and an SDK/exporter to see the spans)"
            ) from error
        self._trace = trace
        self._tracer = trace.get_tracer("hypernodes_daft", tracer_provider=tracer_provider)
        self._owner = next(_owners)
        self._lock = threading.Lock()
        self._open: dict[Any, list[tuple[Any, int]]] = {}  # key -> open (span, start)
        self.fallback: Any = None  # the parent of spans opened where none is open

    def open(self, key: Any, name: str, attributes: dict[str, Any]) -> Any:
        parent = self._innermost() or self.fallback
        context = None if parent is None else self._trace.set_span_in_context(parent)
        start = time.time_ns()
        span = self._tracer.start_span(
            name, context=context, attributes=attributes, start_time=start
        )
        with self._lock:
            self._open.setdefault(key, []).append((span, start))
        _OPEN.set((*_OPEN.get(), (self._owner, key, span, start)))
        return span

    def close(
        self,
        key: Any,
        attributes: dict[str, Any] | None = None,
        error: BaseException | None = None,
        seconds: float | None = None,
    ) -> bool:
        """End the span of `key`; `seconds`, when known, is its length (hooks replayed
        from worker processes fire start and end together). False: none was open."""
        found = self._pop(key)
        if found is None:
            return False
        span, start = found
        span.set_attributes(attributes or {})
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end(end_time=None if seconds is None else start + int(seconds * 1e9))
        return True

    def annotate(self, key: Any, attributes: dict[str, Any]) -> None:
        """Set attributes on the open span of `key`, if there is one."""
        for owner, found_key, span, _ in reversed(_OPEN.get()):
            if owner == self._owner and found_key == key:
                span.set_attributes(attributes)
                return

    def closed(self, name: str, attributes: dict[str, Any], seconds: float = 0.0) -> None:
        """A span that ended just now, after `seconds`: a cache hit, a batch of calls."""
        parent = self._innermost() or self.fallback
        context = None if parent is None else self._trace.set_span_in_context(parent)
        end = time.time_ns()
        span = self._tracer.start_span(
            name, context=context, attributes=attributes, start_time=end - int(seconds * 1e9)
        )
        span.end(end_time=end)

    def _innermost(self) -> Any:
        for owner, _, span, _ in reversed(_OPEN.get()):
            if owner == self._owner:
                return span
        return None

    def _pop(self, key: Any) -> tuple[Any, int] | None:
        stack = _OPEN.get()
        for i in range(len(stack) - 1, -1, -1):
            owner, found_key, span, start = stack[i]
            if owner == self._owner and found_key == key:
                _OPEN.set(stack[:i] + stack[i + 1 :])
                with self._lock:
                    self._open[key].remove((span, start))
                return span, start
        with self._lock:  # opened in another context: take the oldest open one
            opened = self._open.get(key)
            return opened.pop(0) if opened else None


class NodeSpans:
    """`MetricsCallback(otel=True)`: one span per node call, `node:<node_id>`, with the node
    id and map item index as attributes."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._spans = Spans(tracer_provider, "MetricsCallback(otel=True)")

    def start(self, node_id: str, ctx: CallbackContext) -> None:
        self._spans.open(node_id, f"node:{node_id}", _node_attributes(node_id, ctx))

    def end(self, node_id: str, error: BaseException | None) -> None:
        self._spans.close(node_id, error=error)

    def cached(self, node_id: str, ctx: CallbackContext) -> None:
        attributes = {**_node_attributes(node_id, ctx), "hypernodes.cached": True}
        self._spans.closed(f"node:{node_id}", attributes)

    def batch(self, node_id: str, rows: int, seconds: float, cached: int) -> None:
        attributes: dict[str, Any] = {"hypernodes.node_id": node_id, "hypernodes.rows": rows}
        if cached:
            attributes["hypernodes.cached_rows"] = cached
        self._spans.closed(f"node:{node_id}", attributes, seconds)


def _node_attributes(node_id: str, ctx: CallbackContext | None) -> dict[str, Any]:
    node = current_node()
    index = node.item_index if node is not None else None
    if index is None and ctx is not None:
        index = ctx.get("_map_item_index")
    attributes: dict[str, Any] = {"hypernodes.node_id": node_id}
    if index is not None:
        attributes["hypernodes.item_index"] = index
    return attributes


class TelemetryCallback(PipelineCallback):
    """HyperNodes 0.4's tracing callback: spans `pipeline:<id>`, `node:<id>`,
    `map_operation` and `map_item[i]` (see the module docstring), `span_data` for charts,
    and `get_waterfall_chart()`.

        telemetry = TelemetryCallback()          # after logfire.configure(), or any OTel SDK
        HypernodesEngine(callbacks=[telemetry])

    `tracer_provider`: where the spans go (default: OpenTelemetry's global one, which
    `logfire.configure()` sets). `logfire_instance`: a configured Logfire instance whose
    tracer provider to use, as in 0.4. `trace_map_items=False` leaves out the item spans.
    On DaftEngine, which reports a node's calls per batch, each batch is one `node:<id>`
    span (with `rows`) under `map_operation`, and items get no spans of their own.
    """

    def __init__(
        self,
        trace_map_items: bool = True,
        logfire_instance: Any = None,
        tracer_provider: Any = None,
    ):
        if tracer_provider is None and logfire_instance is not None:
            tracer_provider = logfire_instance.config.get_tracer_provider()
        self._spans = Spans(tracer_provider)
        self.trace_map_items = trace_map_items
        self.span_data: list[dict[str, Any]] = []
        self._map_started: list[float] = []

    # -- pipelines and nodes --------------------------------------------------------------

    def on_pipeline_start(self, pipeline_id: str, inputs: dict, ctx: CallbackContext) -> None:
        attributes = {"pipeline_id": pipeline_id, "depth": ctx.depth, "inputs": _text(inputs)}
        self._spans.open(("pipeline", pipeline_id), f"pipeline:{pipeline_id}", attributes)
        ctx.set(f"span_start:{pipeline_id}", time.time())

    def on_pipeline_end(
        self, pipeline_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        attributes = {"duration": duration, "outputs": _text(outputs)}
        self._spans.close(("pipeline", pipeline_id), attributes, seconds=duration)
        self._note(pipeline_id, ctx.get(f"span_start:{pipeline_id}"), duration, ctx, "pipeline")

    def on_node_start(self, node_id: str, inputs: dict, ctx: CallbackContext) -> None:
        attributes = {"node_id": node_id, "depth": ctx.depth}
        self._spans.open(("node", node_id), f"node:{node_id}", attributes)
        ctx.set(f"span_start:{node_id}", time.time())

    def on_node_end(
        self, node_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        attributes = {"duration": duration, "outputs": _text(outputs)}
        self._spans.close(("node", node_id), attributes, seconds=duration)
        self._note(node_id, ctx.get(f"span_start:{node_id}"), duration, ctx, "node")

    def on_node_cached(self, node_id: str, signature: str, ctx: CallbackContext) -> None:
        attributes = {"node_id": node_id, "depth": ctx.depth, "cached": True}
        self._spans.closed(f"node:{node_id}", {**attributes, "cache_signature": signature})
        # a hit takes no time; 1 ms keeps it visible in a chart, as in 0.4
        self._note(node_id, time.time(), 0.001, ctx, "node", cached=True)

    def on_error(self, node_id: str, error: Exception, ctx: CallbackContext) -> None:
        attributes = {"error": str(error), "error_type": type(error).__name__}
        self._spans.close(("node", node_id), attributes, error=error)

    # -- maps -------------------------------------------------------------------------------

    def on_map_start(self, total_items: int, ctx: CallbackContext) -> None:
        attributes = {"total_items": total_items, "depth": ctx.depth}
        # items may start in worker threads, where no span is open: they nest under it
        self._spans.fallback = self._spans.open(("map",), "map_operation", attributes)
        self._map_started.append(time.time())

    def on_map_item_start(self, item_index: int, ctx: CallbackContext) -> None:
        if self.trace_map_items:
            attributes = {"item_index": item_index, "depth": ctx.depth + 1}
            self._spans.open(("item", item_index), f"map_item[{item_index}]", attributes)

    def on_map_item_end(self, item_index: int, duration: float, ctx: CallbackContext) -> None:
        if self.trace_map_items:
            self._spans.close(("item", item_index), {"duration": duration}, seconds=duration)

    def on_map_item_cached(self, item_index: int, signature: str, ctx: CallbackContext) -> None:
        if self.trace_map_items:  # the item's span stays open: its end hook follows
            self._spans.annotate(("item", item_index), {"cached": True})

    def on_map_end(self, total_duration: float, ctx: CallbackContext) -> None:
        self._spans.close(("map",), {"total_duration": total_duration})
        self._spans.fallback = None
        started = self._map_started.pop() if self._map_started else None
        self._note("map_operation", started, total_duration, ctx, "map")

    # -- engines that report in bulk (DaftEngine) -----------------------------------------

    def record_batch(
        self, node_id: str, rows: int, seconds: float, cached: int = 0, errors: int = 0
    ) -> None:
        attributes = {"node_id": node_id, "rows": rows, "cached_rows": cached, "errors": errors}
        self._spans.closed(f"node:{node_id}", attributes, seconds)
        self.span_data.append(
            {
                "name": node_id,
                "start_time": time.time() - seconds,
                "duration": seconds,
                "depth": 1,
                "parent": None,
                "cached": cached > 0 and rows == 0,
                "type": "node",
                "rows": rows,
            }
        )

    def advance_items(self, n: int, cached: int = 0) -> None:
        """Items finished in bulk get no spans of their own (taking this hook keeps the
        engine from replaying per-item hooks for them)."""

    # -- charts -----------------------------------------------------------------------------

    def get_waterfall_chart(self) -> Any:
        """A Plotly figure of `span_data`: one bar per span, from its start, by depth."""
        try:
            import plotly.graph_objects as go
        except ImportError as error:
            raise ImportError(f"get_waterfall_chart needs plotly: {_EXTRA}") from error
        spans = sorted(self.span_data, key=lambda s: s["start_time"])
        origin = spans[0]["start_time"] if spans else 0.0
        labels = [f"{'  ' * s['depth']}{s['type']}: {s['name']}" for s in spans]
        figure = go.Figure(
            go.Bar(
                y=labels,
                x=[s["duration"] for s in spans],
                base=[s["start_time"] - origin for s in spans],
                orientation="h",
                marker_color=["#94a3b8" if s["cached"] else "#2563eb" for s in spans],
            )
        )
        figure.update_layout(xaxis_title="seconds", yaxis_autorange="reversed")
        return figure

    def _note(
        self,
        name: str,
        started: float | None,
        duration: float,
        ctx: CallbackContext,
        kind: str,
        cached: bool = False,
    ) -> None:
        parent = ctx.parent_pipeline_id if kind == "pipeline" else ctx.current_pipeline_id
        self.span_data.append(
            {
                "name": name,
                "start_time": started if started is not None else time.time() - duration,
                "duration": duration,
                "depth": ctx.depth,
                "parent": parent,
                "cached": cached,
                "type": kind,
            }
        )


def _text(values: Any) -> str:
    return str(values)[:_TEXT_LIMIT]
