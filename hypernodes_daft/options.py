"""`NodeOptions`: how the runtime calls a node, as `@node` was told, in one frozen record.

    @node(output_name="reply", retries=3, timeout=10.0, max_concurrency=8)
    async def ask(prompt: str) -> str: ...

    ask.options.retries                    # 3
    plan.steps[0].options.max_concurrency  # 8: every engine reads a step's options

Plain data, shared by authoring (node.py makes them), planning (each plan step carries
its node's) and the runtime (which acts on them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from .resources import Resources
from .results import check_on_error


@runtime_checkable
class SharedLimit(Protocol):
    """A concurrency bound several nodes can share, given as `max_concurrency`:
    `ClusterLimit(N)` (runtime/limits.py) bounds calls across a whole Ray cluster."""

    limit: int

    def bound(self, func: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        """`func` holding one of the bound's slots for each call. A node with a priority
        other than 0 calls `bound(func, is_async, priority)`: waiting calls go first by
        `priority` plus their map item's (`runtime.priority.item_priority()`)."""
        ...


@dataclass(frozen=True)
class NodeOptions:
    """How the runtime calls a node: every option of `@node`, with its default, in one place.

    Checked once, when the node is made (`checked`); every engine reads them from here
    (`step.options` in a plan).

    - `cache`: look up and store the node's results in the engine's cache.
    - `batch`: the function takes whole columns (pyarrow Arrays; `@stateful` objects stay
      scalars) and returns one value per row: an Arrow call (runtime/arrow_calls.py).
    - `max_concurrency`: calls in flight at once in one process (on Daft/Ray: per worker
      process); `ClusterLimit(N)`: across the whole Ray cluster.
    - `retries`, `backoff`, `retry_on`: re-call on one of `retry_on`, waiting
      `backoff * 2**attempt` seconds plus jitter. `timeout`: fail a call after that many
      seconds (an async call is cancelled). `breaker`: a `CircuitBreaker` shared by nodes
      calling one service. `rate_limit`: call starts per second (per process).
    - `on_error`: "raise", "skip" or "collect" for this node (None: the run's).
    - `batch_size`, `batch_delay`: request grouping (runtime/grouping.py): the function
      takes lists; up to `batch_size` concurrent calls waiting at most `batch_delay`
      seconds go out as one call.
    - `arrow_function`: the node's column-wise twin (a `DualNode`'s `batch`): DaftEngine
      calls it once per batch with Arrow arrays, as for `batch=True`, while the local
      engines call the node's own function per item.
    - `cpus`, `gpus`, `memory` (bytes, or a string like "4GiB"), `resources` (custom Ray
      resources, e.g. {"model_host": 1}): what one call needs (`request`, resources.py).
      DaftEngine asks Daft and Ray for them and places the node's function where they are;
      the local engines run at most as many calls at once as this machine holds.
    - `native`: DaftEngine may run the node's body as Daft expressions when it can and
      they give Python's results (engines/daft/native.py); False keeps it in Python.
    - `priority`: who goes first when calls wait for a slot (`max_concurrency`, a shared
      limit, `rate_limit`): higher first, added to the map item's priority; equal
      priorities keep arrival order (runtime/priority.py).
    - `cost_per_call`: money one call costs (e.g. 0.002 dollars), for `Pipeline.estimate`.
    """

    cache: bool = True
    batch: bool = False
    max_concurrency: int | SharedLimit | None = None
    retries: int = 0
    backoff: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    breaker: Any = None
    rate_limit: float | None = None
    on_error: str | None = None
    batch_size: int | None = None
    batch_delay: float = 0.05
    arrow_function: Callable[..., Any] | None = None
    cpus: float | None = None
    gpus: float | None = None
    memory: int | str | None = None
    resources: dict[str, float] | None = None
    native: bool = True
    priority: float = 0
    cost_per_call: float | None = None

    @property
    def request(self) -> Resources:
        """What one call of the node needs (empty: nothing said)."""
        custom = tuple(sorted((self.resources or {}).items()))
        memory = self.memory if isinstance(self.memory, int) else None
        return Resources(self.cpus, self.gpus, memory, custom)

    def checked(self, name: str) -> NodeOptions:
        """These options, after checking each one; errors name node `name`."""
        owner = f"node '{name}'"
        if not isinstance(self.max_concurrency, SharedLimit):
            _positive_or_none(self.max_concurrency, "max_concurrency (or a ClusterLimit)", owner)
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"{owner}: retries must be an int >= 0, got {self.retries!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"{owner}: timeout must be > 0 seconds, got {self.timeout!r}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"{owner}: rate_limit must be > 0 calls/s")
        if self.on_error is not None:
            check_on_error(self.on_error, owner)
        if not isinstance(self.native, bool):
            raise ValueError(f"{owner}: native must be True or False, got {self.native!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, (int, float)):
            raise ValueError(f"{owner}: priority must be a number, got {self.priority!r}")
        if self.cost_per_call is not None and (
            isinstance(self.cost_per_call, bool)
            or not isinstance(self.cost_per_call, (int, float))
            or self.cost_per_call < 0
        ):
            raise ValueError(
                f"{owner}: cost_per_call must be a number >= 0, got {self.cost_per_call!r}"
            )
        _positive_or_none(self.batch_size, "batch_size", owner)
        if self.batch_delay < 0:
            raise ValueError(f"{owner}: batch_delay must be >= 0 seconds")
        if self.batch_size is not None and self.batch:
            raise ValueError(
                f"{owner}: batch=True (Arrow arrays per Daft batch) and batch_size "
                "(lists of concurrent items) are two ways of batching; choose one"
            )
        request = Resources.of(owner, self.cpus, self.gpus, self.memory, self.resources)
        return replace(
            self,
            retry_on=tuple(self.retry_on),
            cpus=request.cpus,
            gpus=request.gpus,
            memory=request.memory,
            resources=dict(request.custom) or None,
        )


DEFAULT_OPTIONS = NodeOptions()


def options_of(node: Any) -> NodeOptions:
    """A node's options; a node of another kind (a HyperNode of the user's) has the
    defaults, with its `cache` flag."""
    options = getattr(node, "options", None)
    if isinstance(options, NodeOptions):
        return options
    return replace(DEFAULT_OPTIONS, cache=bool(getattr(node, "cache", True)))


def _positive_or_none(value: int | None, what: str, owner: str) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{owner}: {what} must be a positive int or None, got {value!r}")
    return value
