"""The protocol every engine implements: what `Pipeline` calls, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..plan import MapPlan, RunPlan

Values = dict[str, Any]
Streamed = tuple[int, Values]  # (item index, the item's outputs)


@runtime_checkable
class Engine(Protocol):
    """Executes plans. `Pipeline` validates and plans, then calls these with the inputs
    already merged with the pipeline's bindings, and with the call's options:

    - `cache`: the pipeline's cache, which replaces the engine's own (None: the engine's);
    - `callbacks`: the pipeline's callbacks, fired after the engine's own;
    - `on_error`: "raise", "skip" or "collect", for the nodes that do not set their own. A
      failed item's result is `{"_error": ErrorRecord}` (results.py); under "skip" the
      engine still returns it, and `Pipeline` leaves it out;
    - `priority` (the maps only; passed only when the call gives one): which items go
      first, the name of an item input holding a number or a function of an item's
      inputs returning one (`Pipeline` has checked which). Higher first; equal ones keep
      index order; results keep item order. An item's priority is added to its nodes'
      `@node(priority=...)` where calls wait for a slot or a rate-limit turn
      (runtime/priority.py, runtime/item_order.py). An engine that cannot honour it
      raises an error saying so; it never ignores it.

    `map` and `amap` return one output dict per item, in order (an engine may return a lazy
    frame instead when asked to, as `DaftEngine(collect=False)` does); the streams yield
    `(index, outputs)` per item as it is done.

    A map runs inside `Pipeline`'s cancellation scope (runtime/cancel.py): the engine finds
    the run's token with `cancel.current()` where the map is called. Once the token is
    cancelled (Ctrl-C, SIGTERM, the map's `deadline`), the engine starts no new call, cancels
    its async calls in flight, and returns what finished with each unfinished item as
    `token.record(index)` under on_error "collect" (else raises `token.error()`).
    """

    reads_datasets: bool
    """True: the dataset columns among a map's inputs (`read_parquet`) reach the engine
    unread; False: `Pipeline` reads them into lists first."""

    def run(
        self,
        plan: RunPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> Any:
        """Run one item; return the plan's outputs."""
        ...

    def map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
        priority: Any = None,
    ) -> Any:
        """Run every item of the map; return one output dict per item, in order."""
        ...

    def iter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
        priority: Any = None,
    ) -> Iterator[Streamed]:
        """`(index, outputs)` per item as soon as it is done, without holding every result."""
        ...

    def aiter_map(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
        priority: Any = None,
    ) -> AsyncIterator[Streamed]:
        """`iter_map` for async callers."""
        ...

    async def arun(
        self,
        plan: RunPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> Any:
        """`run` for async callers."""
        ...

    async def amap(
        self,
        plan: MapPlan,
        inputs: Values,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
        priority: Any = None,
    ) -> Any:
        """`map` for async callers."""
        ...

    def write_parquet(
        self,
        plan: MapPlan,
        inputs: Values,
        path: str,
        cache: Any = None,
        callbacks: Sequence[Any] | None = None,
        on_error: str = "raise",
        priority: Any = None,
        **options: Any,
    ) -> list[str]:
        """Run the map and write the mapped inputs and the outputs as Parquet under `path`,
        with an `_error` struct column (`results.error_arrow_type()`) when failures may be
        kept, and without the rows failed under on_error "skip"; return the files written.
        `options` are the writer's (e.g. `write_mode="overwrite"`)."""
        ...
