"""OpenTelemetry spans for `MetricsCallback(otel=True)`: one span `node:<node_id>` per node
call, with the node id and the map item index as attributes.

    spans = NodeSpans(tracer_provider)          # raises ImportError without opentelemetry-api
    spans.start("embed", ctx)                   # in on_node_start
    spans.end("embed", error=None)              # in on_node_end / on_error
    spans.batch("embed", rows=512, seconds=0.8, cached=0)   # a DaftEngine batch

The OpenTelemetry API is imported only when spans are asked for: it is an optional
dependency, and without an SDK its spans go nowhere.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

from ..runtime.context import current_node
from ..runtime.dispatch import CallbackContext

__all__ = ["NodeSpans"]

# Open spans of this thread / asyncio task, innermost last: start and end hooks of one call
# run in the same context, also when an async engine interleaves calls on one thread.
_OPEN_SPANS: contextvars.ContextVar[tuple[tuple[int, str, Any], ...]] = contextvars.ContextVar(
    "hypernodes_daft_open_spans", default=()
)


class NodeSpans:
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
