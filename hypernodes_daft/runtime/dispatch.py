"""The engine-facing side of callbacks: the dispatcher an engine fires hooks through, and
the `CallbackContext` the hooks receive.

    dispatcher = Callbacks(engine.callbacks)       # once per run: snapshots the hooks
    dispatcher.check_engine("HypernodesEngine", "SeqEngine")
    ctx = CallbackContext()
    ctx.push_pipeline("root")
    dispatcher.fire("on_node_end", "embed", {"embedded": 3}, 0.01, ctx)
    dispatcher.record_batch("embed", 512, 0.8, cached=0, errors=0, ctx=ctx)   # DaftEngine

Engines do not call the hooks one by one, nor does the node runtime: `runtime.events` does,
through one `Callbacks` per run. This module knows the hooks by name only; the base class
users subclass (`hypernodes_daft.callbacks.PipelineCallback`) marks its no-op hooks with
`default_hook`, so the dispatcher can skip them without importing the module that draws
progress bars (imports point down: callbacks -> runtime, never back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "ENGINE_HOOKS",
    "HOOKS",
    "CallbackContext",
    "Callbacks",
    "RowFailed",
    "callback_list",
    "default_hook",
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

# Aggregated events (ours, not 0.4's), for engines that see node calls and map items a
# batch at a time (DaftEngine) and for retries. A callback that implements `record_batch`
# or `advance_items` takes the aggregate instead of the per-row 0.4 hooks.
ENGINE_HOOKS = ("record_batch", "advance_items", "record_retry")


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
# Telling implemented hooks from the base class's no-ops
# --------------------------------------------------------------------------------------

# Set on the base class's hooks. A bound method reads its function's attributes, so an
# override (a new function) lacks the mark and a hook inherited unchanged has it.
_DEFAULT_MARK = "__hypernodes_default_hook__"

F = TypeVar("F", bound=Callable[..., Any])


def default_hook(function: F) -> F:
    """Mark a base-class hook as "not implemented": the dispatcher skips it, and for
    `record_batch`/`advance_items` falls back to the per-row 0.4 hooks."""
    setattr(function, _DEFAULT_MARK, True)
    return function


def _overridden(callback: Any, hook: str) -> Any:
    """The callback's bound hook, or None when it is missing or the base class's no-op."""
    method = getattr(callback, hook, None)
    if method is None:  # duck-typed callbacks may implement only some hooks
        return None
    if getattr(method, _DEFAULT_MARK, False):
        return None
    return method


class RowFailed(Exception):
    """Stands for a node's exception on a DaftEngine row that failed under on_error
    "skip"/"collect" (the row's `_error` record tells what it raised)."""


# --------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------


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
        return tuple(m for cb in self.callbacks if callable(m := _overridden(cb, name)))

    def _lacking(self, name: str) -> tuple[Any, ...]:
        return tuple(cb for cb in self.callbacks if not callable(_overridden(cb, name)))

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
            start, end, hit, on_error = (
                _overridden(callback, hook)
                for hook in ("on_node_start", "on_node_end", "on_node_cached", "on_error")
            )
            for row in range(rows):
                if start:
                    start(node_id, {}, ctx)
                if row >= rows - errors:  # the failed rows are counted last
                    if on_error:
                        on_error(node_id, RowFailed(f"node '{node_id}' failed on a row"), ctx)
                elif end:
                    end(node_id, {}, mean, ctx)
            for _ in range(cached if hit else 0):
                hit(node_id, "", ctx)

    def record_retry(self, node_id: str, n: int = 1) -> None:
        """The runtime retried calls of this node `n` more times; each callback's
        `record_retry(node_id)` is called once per retry."""
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


def callback_list(callbacks: Any, owner: str) -> list[Any]:
    """`callbacks=` as given to an engine or a pipeline: a list (or None), checked now so
    that a single callback passed bare fails here with a clear message, not at the run."""
    if callbacks is None:
        return []
    # "is a callback" by its hooks, not isinstance(PipelineCallback): the runtime does not
    # import the callbacks package, and a duck-typed callback passed bare is as wrong
    is_callback = any(hasattr(callbacks, hook) for hook in HOOKS)
    if is_callback or not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"{owner}: callbacks must be a list of callbacks, got {type(callbacks).__name__}"
            f" (write callbacks=[{type(callbacks).__name__}(...)])"
        )
    return list(callbacks)
