"""What the node runtime tells the callbacks of one execution, in HyperNodes 0.4's order.

    events = Events.start(callbacks, plan, "HypernodesEngine")   # None without callbacks
    started = events.map_start(n) ... events.map_end(started)

An engine makes one `Events` per `run`/`map`/`iter_map` call; the node runtime fires node
hooks through it, the item runners item hooks (`runtime.items`), and a nested
pipeline gets a child with a new context, as in 0.4. Process pools record the hooks in the
worker (`RecordingEvents`) and replay them in the driver; Daft functions report per batch
(`record_batch`). The hooks reach the callbacks through the dispatcher of `runtime.dispatch`:
this layer never imports `hypernodes_daft.callbacks` (progress bars, metrics).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from .context import current_item
from .dispatch import CallbackContext, Callbacks

Values = dict[str, Any]


class Events:
    """The callbacks of one execution of one (inner) pipeline, and its CallbackContext."""

    __slots__ = ("sink", "plan", "ctx", "pipeline_id", "path", "children")

    def __init__(self, sink: Any, plan: Any, path: tuple[str, ...] = (), cache: Any = None):
        self.sink = sink  # a Callbacks, or a list in a worker process
        self.plan = plan
        self.pipeline_id: str = plan.pipeline_id
        self.path = path  # labels of the nested steps leading here, for replays
        self.children: dict[str, Events] = {}
        self.ctx = CallbackContext()
        self.ctx.push_pipeline(plan.pipeline_id)
        self.ctx.set_pipeline_metadata(
            plan.pipeline_id,
            {
                "total_nodes": len(plan.steps),
                "pipeline_name": plan.name,
                "node_ids": [s.label for s in plan.steps],
            },
        )
        if cache is not None:  # MetricsCallback reports the cache's hits, misses and size
            self.ctx.set("cache", cache)
            self.ctx.set("cached_nodes", [s.label for s in plan.steps if s.options.cache])

    @classmethod
    def start(
        cls, callbacks: list[Any], plan: Any, *engine_names: str, cache: Any = None
    ) -> Events | None:
        """The events of a new execution (using `cache`), or None without callbacks
        (nothing is fired). Raises ValueError when a callback's `supported_engines`
        excludes `engine_names`."""
        if not callbacks:
            return None
        dispatcher = Callbacks(callbacks)
        dispatcher.check_engine(*engine_names)
        return cls(dispatcher, plan, cache=cache)

    def child(self, label: str) -> Events:
        """The events of the runs of nested step `label`: a new context (0.4), the same sink."""
        child = self.children.get(label)
        if child is None:
            step = next(s for s in self.plan.steps if s.label == label)
            inner = step.nested.item
            cache = self.ctx.get("cache")
            child = type(self)(self.sink, inner, (*self.path, label), cache)
            self.children[label] = child
        return child

    def fire(self, hook: str, *args: Any) -> None:
        self.sink.fire(hook, *args, self.ctx)

    # -- nodes ------------------------------------------------------------------------------

    def node_start(self, label: str, args: tuple[str, ...], values: Values) -> float:
        self.fire("on_node_start", label, {a: values[a] for a in args if a in values})
        return time.perf_counter()

    def node_end(self, label: str, outputs: Values, started: float) -> None:
        self.fire("on_node_end", label, outputs, time.perf_counter() - started)

    def node_cached(self, label: str, key: str) -> None:
        self.fire("on_node_cached", label, key)
        index = current_item()
        if index is not None:
            self.fire("on_map_item_cached", index, key)

    def node_error(self, label: str, error: BaseException) -> None:
        self.fire("on_error", label, error)

    def node_retry(self, label: str, n: int = 1) -> None:
        """A call of the node is about to be retried (`n` retries, from a Daft batch)."""
        self.sink.record_retry(label, n)

    def nested(self, hook: str, child: Events, *args: Any) -> None:
        """on_nested_pipeline_start/end(parent id, child id, ...)."""
        self.fire(hook, self.pipeline_id, child.pipeline_id, *args)

    # -- items and maps ---------------------------------------------------------------------

    def item_start(self, index: int | None, inputs: Values) -> float:
        if index is not None:
            self.ctx.set("_map_item_index", index)
            self.fire("on_map_item_start", index)
        self.fire("on_pipeline_start", self.pipeline_id, dict(inputs))
        return time.perf_counter()

    def item_end(self, index: int | None, outputs: Values, started: float) -> None:
        duration = time.perf_counter() - started
        self.fire("on_pipeline_end", self.pipeline_id, outputs, duration)
        if index is not None:
            self.fire("on_map_item_end", index, duration)

    def map_start(self, n_items: int | None) -> float:
        self.ctx.set("_in_map", True)
        self.ctx.set("_map_total_items", n_items)
        self.fire("on_map_start", n_items)
        return time.perf_counter()

    def map_end(self, started: float) -> None:
        self.fire("on_map_end", time.perf_counter() - started)
        self.ctx.set("_in_map", False)

    # -- aggregated and replayed events ------------------------------------------------------

    def record_batch(
        self,
        node_id: str,
        rows: int,
        seconds: float,
        cached: int,
        errors: int = 0,
        retried: int = 0,
    ) -> None:
        """A batch of a node's calls (DaftEngine): aggregates, or 0.4 hooks per row."""
        self.sink.record_batch(node_id, rows, seconds, cached, errors, self.ctx)
        if retried:
            self.node_retry(node_id, retried)

    def items_done(self, first: int, n: int, seconds: float) -> None:
        """Items `first` .. `first + n - 1` of a map finished (DaftEngine, per partition)."""
        self.sink.advance_items(n, 0, self.ctx, first, seconds)

    def replay(self, records: list[tuple[tuple[str, ...], str, tuple[Any, ...]]]) -> None:
        """Fire the hooks `RecordingEvents` kept in a worker process, on the right contexts."""
        for path, hook, args in records:
            events = self
            for label in path:
                events = events.child(label)
            if hook == _RETRY:
                events.node_retry(*args)
            else:
                events.fire(hook, *args)


@contextmanager
def observed_map(events: Events | None, n_items: int | None) -> Iterator[None]:
    """on_map_start before the block, on_map_end after it unless it failed (0.4)."""
    if events is None:
        yield
        return
    started = events.map_start(n_items)
    yield
    events.map_end(started)


def observed_stream(
    stream: Iterator[Any], events: Events | None, n_items: int | None
) -> Iterator[Any]:
    """`stream` between on_map_start (at the first `next`) and on_map_end (when exhausted)."""
    with observed_map(events, n_items):
        yield from stream


async def aobserved_stream(
    stream: AsyncIterator[Any], events: Events | None, n_items: int | None
) -> AsyncIterator[Any]:
    """`observed_stream` for async iterators."""
    with observed_map(events, n_items):
        async for entry in stream:
            yield entry


_RETRY = "record_retry"  # a recorded retry (not a 0.4 hook)

# Hooks whose dict arguments stay in the worker: node inputs and outputs can be large.
_WITHOUT_VALUES = frozenset(
    {"on_node_start", "on_node_end", "on_pipeline_start", "on_pipeline_end"}
)


class RecordingEvents(Events):
    """Events in a worker process: each hook call is appended to `sink` (a list) with the
    path of its pipeline, for the driver to `replay`; node and pipeline values are left out."""

    __slots__ = ()

    def node_retry(self, label: str, n: int = 1) -> None:
        self.sink.append((self.path, _RETRY, (label, n)))

    def fire(self, hook: str, *args: Any) -> None:
        if hook in _WITHOUT_VALUES:
            args = tuple({} if isinstance(a, dict) else a for a in args)
        self.sink.append((self.path, hook, args))
