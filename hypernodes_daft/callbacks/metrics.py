"""Metrics: `MetricsCallback` counts calls, cache hits, errors, retries, latencies and the
calls in flight, per node, and prints them as a Markdown table.

    from hypernodes_daft import HypernodesEngine, Pipeline, node
    from hypernodes_daft.callbacks import MetricsCallback

    @node(output_name="doubled")
    def double(x: int) -> int:
        return 2 * x

    metrics = MetricsCallback()                 # otel=True: an OpenTelemetry span per call
    engine = HypernodesEngine(map_executor="threaded", callbacks=[metrics])
    Pipeline(nodes=[double], engine=engine).map(inputs={"x": [1, 2, 3]}, map_over="x")
    metrics.summary()["double"]["calls"]        # 3; latencies ("p50", "p95"...) in seconds
    print(metrics.table())                      # calls, cache hits, p50/p95/max, in-flight peak
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

from ..resources import format_bytes
from ..runtime.dispatch import CallbackContext
from .base import PipelineCallback
from .telemetry import NodeSpans

__all__ = ["MetricsCallback"]


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
        self._otel = NodeSpans(tracer_provider) if otel else None
        self._cache: Any = None  # the cache of the runs seen, and their cached nodes
        self._cached_nodes: set[str] = set()

    def on_pipeline_start(self, pipeline_id: str, inputs: dict, ctx: CallbackContext) -> None:
        self._note_cache(ctx)

    def on_map_start(self, total_items: int, ctx: CallbackContext) -> None:
        self._note_cache(ctx)

    def _note_cache(self, ctx: CallbackContext) -> None:
        cache = ctx.get("cache")
        if cache is not None:
            with self._lock:
                self._cache = cache
                self._cached_nodes.update(ctx.get("cached_nodes", ()))

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

    def cache_summary(self) -> dict[str, Any] | None:
        """{location, hits, misses, entries, bytes} of the cache the runs used (None: no
        cache). Hits and misses are the calls of cached nodes found stored or made, over
        the runs seen; entries and bytes are the cache's now, listed from its storage
        (a cache without `info()`, such as MemoryCache, gives its `len` and no bytes)."""
        with self._lock:
            cache, cached = self._cache, set(self._cached_nodes)
            counted = [s for name, s in self._nodes.items() if name in cached]
        if cache is None:
            return None
        info = cache.info() if hasattr(cache, "info") else None
        return {
            "location": getattr(cache, "location", type(cache).__name__),
            "hits": sum(s.cached for s in counted),
            "misses": sum(s.calls for s in counted),
            "entries": info.entries if info else len(cache),
            "bytes": info.bytes if info else None,
        }

    def table(self) -> str:
        """The summary as a Markdown table (latencies in milliseconds), then the cache's
        hits, misses and size when the runs used one."""
        header = ["node", "calls", "cached", "errors", "retries", "p50 ms", "p95 ms", "max ms"]
        rows = [[*header, "total s", "in-flight peak"]]
        for name, m in self.summary().items():
            counts = [str(m[k]) for k in ("calls", "cached", "errors", "retries")]
            times = [_ms(m[k]) for k in ("p50", "p95", "max")]
            total = "-" if m["total"] is None else f"{m['total']:.3f}"
            rows.append([name, *counts, *times, total, str(m["in_flight_peak"])])
        text = _markdown(rows) + f"\n\noverall in-flight peak: {self.in_flight_peak}"
        cache = self.cache_summary()
        if cache is not None:
            size = "" if cache["bytes"] is None else f", {format_bytes(cache['bytes'])}"
            text += (
                f"\ncache {cache['location']}: {cache['hits']} hits, {cache['misses']} "
                f"misses; {cache['entries']} entries{size}"
            )
        return text

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
