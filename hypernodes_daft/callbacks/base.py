"""`PipelineCallback`: the base class of callbacks, with every hook an engine may call.

    from hypernodes_daft.callbacks import PipelineCallback

    class Printer(PipelineCallback):            # override only the hooks you need
        def on_node_end(self, node_id, outputs, duration, ctx):
            print(node_id, f"{duration:.3f}s")

        def record_batch(self, node_id, rows, seconds, cached=0, errors=0):
            print(node_id, rows, "rows")        # DaftEngine: one call per batch

The `on_*` hooks are HyperNodes 0.4's: same names, arguments and firing order. The three
others are ours, for events an engine sees in bulk: `record_batch` (a batch of a node's
calls), `advance_items` (map items finished) and `record_retry` (a call retried).

A hook left as inherited is "not implemented": the dispatcher does not call it, and a
callback that does not implement `record_batch` (`advance_items`) gets the per-row 0.4
hooks instead (on_node_start/on_node_end/on_error/on_node_cached, resp.
on_map_item_start/on_map_item_end). Callbacks need not subclass this class: any object
with some of these methods works (duck typing).
"""

from __future__ import annotations

from ..runtime.dispatch import CallbackContext, default_hook

__all__ = ["PipelineCallback"]


class PipelineCallback:
    """Base class of callbacks: every hook does nothing; override the ones you need.

    Names, arguments and firing order of the `on_*` hooks are HyperNodes 0.4's. An
    exception raised by a hook propagates to the caller of `run`/`map` (as in 0.4). Hooks
    may be called from several threads at once (threaded and async engines): guard
    shared state. `ctx` is the `CallbackContext` shared by the callbacks of one execution.
    """

    # -- HyperNodes 0.4 hooks -------------------------------------------------------------

    @default_hook
    def on_pipeline_start(self, pipeline_id: str, inputs: dict, ctx: CallbackContext) -> None:
        """A run of a pipeline (or one map item's run) starts with these inputs."""

    @default_hook
    def on_pipeline_end(
        self, pipeline_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        """A run ended with these outputs after `duration` seconds (not after an error)."""

    @default_hook
    def on_node_start(self, node_id: str, inputs: dict, ctx: CallbackContext) -> None:
        """A node is about to be called with these inputs (not on a cache hit)."""

    @default_hook
    def on_node_end(
        self, node_id: str, outputs: dict, duration: float, ctx: CallbackContext
    ) -> None:
        """A node's call returned these outputs after `duration` seconds."""

    @default_hook
    def on_node_cached(self, node_id: str, signature: str, ctx: CallbackContext) -> None:
        """A node's outputs came from the cache (`signature`: the cache key); no call."""

    @default_hook
    def on_error(self, node_id: str, error: Exception, ctx: CallbackContext) -> None:
        """A node's call raised `error` (after its retries); no end hook follows."""

    @default_hook
    def on_nested_pipeline_start(
        self, parent_id: str, child_pipeline_id: str, ctx: CallbackContext
    ) -> None:
        """A nested pipeline (`as_node`) starts inside `parent_id`; its own run hooks get a
        context of their own."""

    @default_hook
    def on_nested_pipeline_end(
        self, parent_id: str, child_pipeline_id: str, duration: float, ctx: CallbackContext
    ) -> None:
        """A nested pipeline ended after `duration` seconds."""

    @default_hook
    def on_map_start(self, total_items: int, ctx: CallbackContext) -> None:
        """A map over `total_items` items starts (None when the count is not known)."""

    @default_hook
    def on_map_item_start(self, item_index: int, ctx: CallbackContext) -> None:
        """Item `item_index` of a map starts."""

    @default_hook
    def on_map_item_end(self, item_index: int, duration: float, ctx: CallbackContext) -> None:
        """Item `item_index` finished after `duration` seconds."""

    @default_hook
    def on_map_item_cached(self, item_index: int, signature: str, ctx: CallbackContext) -> None:
        """A node of item `item_index` hit the cache (fired after on_node_cached, once per
        hit: an item may fire it several times, and on_map_item_end as well)."""

    @default_hook
    def on_map_end(self, total_duration: float, ctx: CallbackContext) -> None:
        """The map ended after `total_duration` seconds (not after an error)."""

    # -- aggregated events (ours) ---------------------------------------------------------

    @default_hook
    def record_batch(
        self, node_id: str, rows: int, seconds: float, cached: int = 0, errors: int = 0
    ) -> None:
        """A batch of a node's calls (DaftEngine): `rows` calls took `seconds` in all,
        `errors` of them failed (under on_error "skip"/"collect"), and `cached` rows
        besides were cache hits. No `ctx`: a batch belongs to no single item.

        Implement it to take batches whole; left as inherited, the callback gets 0.4's
        hooks per row instead (on_node_start + on_node_end at the mean duration, or
        on_node_start + on_error for a failed row, and on_node_cached per hit)."""

    @default_hook
    def advance_items(self, n: int, cached: int = 0) -> None:
        """`n` more map items finished, `cached` of them with a cache hit (DaftEngine
        reports items a partition at a time).

        Implement it to take items in bulk; left as inherited, the callback gets
        on_map_item_start + on_map_item_end per item instead."""

    @default_hook
    def record_retry(self, node_id: str) -> None:
        """A call of this node is retried once more (called once per retry, on every
        engine). No per-row fallback: 0.4 had no retry hook."""

    @property
    def supported_engines(self) -> list[str] | None:
        """Engine class names this callback works with; None or [] means every engine."""
        return None
