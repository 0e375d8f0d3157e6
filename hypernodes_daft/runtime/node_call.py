"""One node call: the part of the runtime every engine shares (docs/architecture.md).

    node = PreparedNode(step, lineage, services)   # once per plan: cache, checks, policy
    call = NodeCall(step, lineage, services)        # the local executors: one item's call
    call(values)          # reads the step's args from `values`, writes its outputs into it
    await call.acall(values)

`PreparedNode` holds what every call of a plan step shares and is the only place where a
call meets the cache (lookup, in-flight dedup, store), the output checks and the error
policy; `NodeCall` calls it for one item of the local executors, the Daft runners
(engines/daft/column_call.py) for the rows of a batch. A call goes:

    how, found = node.begin(key)     # HIT: the stored result; WAIT: an identical call's
                                     # future; CALL: this call computes `key`
    outputs = node.end(key, result)  # checked, then stored and handed to the waiting calls
    node.abandon(key, error)         # failed: the waiting calls get the failure
    raise node.failure(error, arguments)   # wrapped with the node, its inputs, its policy
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..cache import key_or_none
from ..exceptions import ExecutionError, summarize_inputs, wrap_error
from ..plan import Step
from .arrow_calls import one_row
from .cancel import RunCancelled, raise_if_cancelled
from .context import NodeContext, node_frame
from .events import Events
from .grouping import grouper_for
from .limits import local_bound
from .loop import run_coroutine
from .resilience import resilient

Values = dict[str, Any]
RunItem = Callable[..., Values]  # (values, index=None) -> outputs: see item_runner
MapItems = Callable[..., Any]  # (run_item, inputs, map_over, map_mode, n_items) -> results


@dataclass(frozen=True)
class Services:
    """What node calls use besides their inputs: the engine's cache (None: no cache), the
    callbacks of this execution (None: none), the path of the pipeline being run (empty:
    the pipeline called, not a nested one), the run's on_error, for the nodes that do
    not set their own, and whether items of a map run at once in this process
    (`concurrent_items`: then `batch_size` nodes wait up to `batch_delay` for calls to
    group; otherwise, items running one after another, each call goes at once)."""

    cache: Any = None
    events: Events | None = None
    path: tuple[str, ...] = ()
    on_error: str = "raise"
    concurrent_items: bool = False

    @property
    def top(self) -> bool:
        """The services of the pipeline called: its items settle failures (`settled`)."""
        return not self.path

    def nested(self, step: Step) -> Services:
        """The services of a nested step's inner pipeline."""
        assert step.nested is not None
        events = self.events.child(step.label) if self.events else None
        return replace(self, events=events, path=(*self.path, step.label))


NO_SERVICES = Services()


HIT, WAIT, CALL = "hit", "wait", "call"  # how a call with a cache key goes (`begin`)


class InFlight:
    """The calls of one node being computed, by cache key, so that an identical call made
    meanwhile (another item or row with the same arguments) waits for the first one's
    outcome instead of calling again. Thread-safe; a concurrent Future serves sync callers
    and any event loop alike (`asyncio.wrap_future`)."""

    def __init__(self) -> None:
        self._running: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()

    def join(self, key: str) -> concurrent.futures.Future[Any] | None:
        """The future of the call computing `key`, or None: the caller computes it now."""
        with self._lock:
            running = self._running.get(key)
            if running is None:
                self._running[key] = concurrent.futures.Future()
            return running

    def finish(self, key: str, result: Any = None, error: BaseException | None = None) -> None:
        """The outcome of `key`, for the calls waiting on it (done once; later: no-op)."""
        with self._lock:
            running = self._running.pop(key, None)
        if running is None:
            return
        if error is None:
            running.set_result(result)
        else:
            running.set_exception(error)

    def __getstate__(self) -> dict[str, Any]:  # another process has its own calls
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


def lookup(cache: Any, key: str) -> tuple[bool, Any]:
    """(found, value); a HyperNodes 0.4 style cache (only `get`) misses on None."""
    if hasattr(cache, "lookup"):
        return cache.lookup(key)
    value = cache.get(key)
    return value is not None, value


def lookup_many(cache: Any, keys: list[str]) -> list[tuple[bool, Any]]:
    """`lookup` of each key, at once where the cache can (an object store's requests)."""
    if hasattr(cache, "lookup_many"):
        return cache.lookup_many(keys)
    return [lookup(cache, key) for key in keys]


def check_cache(cache: Any) -> None:
    """Before any node runs: a cache whose storage does not answer raises one clear error
    (DiskCache.check), instead of a failure per call."""
    if cache is not None and hasattr(cache, "check"):
        cache.check()


class PreparedNode:
    """A plan step's plain node, prepared once per plan for every call of it: its options,
    its cache (None: not cached) and lineage, the identical calls in flight, its error
    policy, and the callbacks' events (None on Daft workers: they report per batch).

    Engines call it per item (`NodeCall`) or per row of a batch (the Daft runners); a rule
    about calls (store only what passed the output checks; an identical call waits for the
    first; a failure is the waiting calls' failure too) lives here once.
    """

    __slots__ = (
        *("label", "args", "outputs", "single", "is_async", "options", "func"),
        *("cache", "remote", "lineage", "inflight", "on_error", "events"),
    )

    def __init__(self, step: Step, lineage: str = "", services: Services = NO_SERVICES):
        self.label = step.label
        self.args = step.args
        self.outputs = step.outputs
        self.single = step.outputs[0] if len(step.outputs) == 1 else None
        self.is_async = step.is_async
        self.options = step.options
        self.func = step.node.func  # the user's function, before any wrapping
        self.cache = services.cache if step.options.cache else None
        # an object store answers in milliseconds: its requests go off the event loop
        self.remote = bool(getattr(self.cache, "remote", False))
        self.lineage = lineage
        self.inflight = InFlight()
        self.on_error = step.options.on_error or services.on_error
        self.events = services.events

    def resilient(
        self,
        func: Callable[..., Any] | None = None,
        limit: Any = None,
        per_item: Callable[..., Any] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> Callable[..., Any]:
        """`func` (default: the node's) with the node's timeout, breaker, `limit`, rate limit,
        request grouping (`per_item`) and retries: resilience.resilient."""
        func = func or self.func
        is_async = self.is_async if func is self.func else inspect.iscoroutinefunction(func)
        return resilient(func, self.options, is_async, limit, per_item, on_retry)

    def key(self, arguments: Values) -> str | None:
        """The cache key of a call with these arguments; None without a cache, or when an
        argument has no stable hash (that call is not cached; one warning per node)."""
        if self.cache is None:
            return None
        return key_or_none(self.label, self.lineage, arguments)

    def begin(self, key: str | None) -> tuple[str, Any]:
        """How the call with `key` goes: (HIT, the stored result); (WAIT, the future of the
        identical call computing it); or (CALL, None): this call computes it, then `end`s or
        `abandon`s it. Without a key: always CALL."""
        if key is None:
            return CALL, None
        return self._begun(key, lookup(self.cache, key))

    def begin_many(self, keys: list[str]) -> list[tuple[str, Any]]:
        """`begin` of each key, the cache looked up for all of them at once."""
        return list(map(self._begun, keys, lookup_many(self.cache, keys)))

    async def abegin(self, key: str | None) -> tuple[str, Any]:
        """`begin` from a coroutine: an object store's lookup runs off the event loop."""
        if key is None or not self.remote:
            return self.begin(key)
        return await asyncio.wrap_future(self.cache.submit(self.begin, key))

    def _begun(self, key: str, looked_up: tuple[bool, Any]) -> tuple[str, Any]:
        found, result = looked_up
        if found:
            self.hit(key)
            return HIT, result
        running = self.inflight.join(key)
        return (CALL, None) if running is None else (WAIT, running)

    def end(self, key: str | None, result: Any, writes: list[Any] | None = None) -> Any:
        """The call computing `key` returned `result`: checked against the node's outputs,
        then stored and handed to the identical calls waiting. A result that fails the
        check raises ValueError, and is their failure too; it is never stored. With
        `writes`, an object store's write is started and its future added there (the
        caller waits for them), else the write is done before this returns."""
        try:
            self.check(result)
        except ValueError as error:
            self.abandon(key, error)
            raise
        if key is not None:
            if writes is not None and self.remote:
                writes.append(self.cache.put_soon(key, result))
            else:
                self.cache.put(key, result)
            self.inflight.finish(key, result)
        return result

    async def aend(self, key: str | None, result: Any) -> Any:
        """`end` from a coroutine: an object store's write runs off the event loop."""
        if key is None or not self.remote:
            return self.end(key, result)
        return await asyncio.wrap_future(self.cache.submit(self.end, key, result))

    def abandon(self, key: str | None, error: BaseException) -> None:
        """The call computing `key` failed (or was interrupted): the waiting calls get
        `error`. A no-op once `key` ended."""
        if key is not None:
            self.inflight.finish(key, error=error)

    def shared(self, key: str, running: concurrent.futures.Future[Any]) -> Any:
        """The result of the identical call `running` (done), a cache hit for the callbacks;
        its failure is raised, as this call's own."""
        result = running.result()
        self.hit(key)
        return result

    def hit(self, key: str) -> None:
        if self.events is not None:
            self.events.node_cached(self.label, key)

    def check(self, result: Any) -> None:
        """A node with several outputs returns a tuple or list of that many values."""
        if self.single is not None:
            return
        outputs = self.outputs
        if not isinstance(result, (tuple, list)) or len(result) != len(outputs):
            got = f"{len(result)} values" if isinstance(result, (tuple, list)) else repr(result)
            raise ValueError(f"node declares {len(outputs)} outputs {outputs} but returned {got}")

    def failure(self, error: Exception, arguments: Values) -> ExecutionError:
        """`error` of a call with `arguments`, wrapped: it names the node and the inputs, and
        carries the node's on_error. Fires on_error for the callbacks."""
        if self.events is not None:
            self.events.node_error(self.label, error)
        return wrap_error(error, self.label, summarize_inputs(arguments), None, self.on_error)


class NodeCall:
    """Calls a plain node for one item of the local executors: its keyword arguments from
    the item's values, the call (with the node's resilience), its outputs into the values.
    With a cache or callbacks, through `PreparedNode.begin`/`end`; without, straight."""

    __slots__ = (
        *("node", "func", "args", "outputs", "single", "is_async", "events", "observed"),
        "context",
    )

    def __init__(self, step: Step, lineage: str = "", services: Services = NO_SERVICES):
        node = self.node = PreparedNode(step, lineage, services)
        func = node.func
        if node.options.batch:  # an Arrow function, called here with one-row arrays
            func = one_row(func, node.label, len(node.outputs))
        per_item = grouper_for(
            node.options, step.node.root_args, node.label, node.is_async, services.concurrent_items
        )
        events, label = node.events, node.label
        on_retry = None if events is None else (lambda: events.node_retry(label))
        limit = local_bound(node.options, node.label)
        self.func = node.resilient(func, limit, per_item, on_retry)
        self.args, self.outputs, self.single = node.args, node.outputs, node.single
        self.is_async = node.is_async
        self.events = events
        self.observed = node.cache is not None or events is not None  # else: just call
        self.context = NodeContext(label, services.path)

    def __call__(self, values: Values) -> None:
        # current_node() finds this frame on the stack (context.node_frame): nothing to set
        raise_if_cancelled()
        if not self.observed:
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = run_coroutine(result)
                self._write(values, result)
            except RunCancelled:  # a run inside the node was cancelled with this one
                raise
            except Exception as error:
                raise self.node.failure(error, self._given(values)) from error
            return
        node = self.node
        key = node.key(self._arguments(values))
        how, found = node.begin(key)
        if how is not CALL:
            return self._write_found(values, how, key, found)
        try:
            started = self._started(values)
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = run_coroutine(result)
                self._write(values, node.end(key, result))
            except RunCancelled:
                raise
            except Exception as error:
                node.abandon(key, error)
                raise node.failure(error, self._given(values)) from error
            self._finished(result, started)
        finally:
            node.abandon(key, _ABANDONED)  # interrupted: the waiting calls go on

    async def acall(self, values: Values) -> None:
        """Call from a coroutine, awaiting an async node natively. (The async executor runs
        sync nodes off the loop itself, in worker threads.)"""
        raise_if_cancelled()
        if not self.observed:
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = await result
                self._write(values, result)
            except RunCancelled:
                raise
            except Exception as error:
                raise self.node.failure(error, self._given(values)) from error
            return
        node = self.node
        key = node.key(self._arguments(values))
        how, found = await node.abegin(key)
        if how is WAIT:
            await asyncio.wait([asyncio.wrap_future(found)])  # done or failed: `shared` tells
        if how is not CALL:
            return self._write_found(values, how, key, found)
        try:
            started = self._started(values)
            try:
                result = self.func(**self._arguments(values))
                if self.is_async:
                    result = await result
                self._write(values, await node.aend(key, result))
            except RunCancelled:
                raise
            except Exception as error:
                node.abandon(key, error)
                raise node.failure(error, self._given(values)) from error
            self._finished(result, started)
        finally:
            node.abandon(key, _ABANDONED)

    def _write_found(self, values: Values, how: str, key: Any, found: Any) -> None:
        """A hit's stored result, or the outcome of the identical call waited for."""
        if how is HIT:
            return self._write(values, found)
        try:
            self._write(values, self.node.shared(key, found))
        except Exception as error:
            raise self.node.failure(error, self._given(values)) from error

    def _started(self, values: Values) -> float:
        return (
            0.0
            if self.events is None
            else self.events.node_start(self.node.label, self.args, values)
        )

    def _finished(self, result: Any, started: float) -> None:
        if self.events is not None:
            name = self.single if self.single is not None else self.outputs
            self.events.node_end(self.node.label, {name: result}, started)

    def _arguments(self, values: Values) -> Values:
        # a method, not a comprehension in the call: a comprehension would make `values` a
        # closure cell of the (async) call's frame, an object per call held while it waits
        return {a: values[a] for a in self.args}

    def _given(self, values: Values) -> Values:
        # rebuilt on failure, not kept during the call: a dict per call alive across an
        # await costs garbage-collector time on large async maps
        return {a: values[a] for a in self.args if a in values}

    def _write(self, values: Values, result: Any) -> None:
        if self.single is not None:
            values[self.single] = result
            return
        self.node.check(result)
        values.update(zip(self.outputs, result, strict=False))


node_frame(NodeCall.__call__)
node_frame(NodeCall.acall)


_ABANDONED = RuntimeError("an identical call of this node was interrupted before it finished")
