"""`Node` and the `@node` decorator: a plain function with named outputs.

@node(output_name="total")
def add(x: int, y: int = 1) -> int:
    return x + y

add(2, 3)            # still a plain function: 5
add.root_args        # ('x', 'y')
add.output_names     # ('total',)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._hashing import hash_code
from ._limits import ClusterLimit
from .results import ERROR_FIELD, check_on_error

OutputName = str | tuple[str, ...]


@runtime_checkable
class HyperNode(Protocol):
    """What a Pipeline accepts in `nodes` (besides a nested Pipeline)."""

    name: str | None
    cache: bool

    @property
    def root_args(self) -> tuple[str, ...]: ...

    @property
    def output_name(self) -> OutputName: ...

    @property
    def code_hash(self) -> str: ...


def normalize_output_name(output_name: Any, owner: str) -> tuple[str, ...]:
    """The output names as a tuple, after checking they are non-empty distinct strings."""
    names = (output_name,) if isinstance(output_name, str) else output_name
    if (
        not isinstance(names, tuple)
        or not names
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise TypeError(
            f"{owner}: output_name must be a non-empty string or a tuple of them, "
            f"got {output_name!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: output_name {output_name!r} repeats a name")
    if ERROR_FIELD in names:
        raise ValueError(
            f"{owner}: output_name {ERROR_FIELD!r} is reserved for the error records of "
            "failed items (on_error='collect'); choose another name"
        )
    return names


class Node:
    """A function whose parameters are inputs, by name, and whose result is named outputs.

    `Node(func, output_name="y")` is what `@node(output_name="y")` builds. A tuple
    `output_name=("a", "b")` splits a returned tuple into two outputs.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        output_name: OutputName,
        cache: bool = True,
        batch: bool = False,
        max_concurrency: int | ClusterLimit | None = None,
        retries: int = 0,
        backoff: float = 0.1,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        breaker: Any = None,
        rate_limit: float | None = None,
        on_error: str | None = None,
        batch_size: int | None = None,
        batch_delay: float = 0.05,
    ):
        if not callable(func):
            raise TypeError(f"Node needs a callable, got {func!r}")
        self.func = func
        self.name: str = getattr(func, "__name__", type(func).__name__)
        self.cache = cache
        self.batch = batch
        if not isinstance(max_concurrency, ClusterLimit):
            _positive_or_none(max_concurrency, "max_concurrency (or a ClusterLimit)", func)
        self.max_concurrency = max_concurrency
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(
                f"node '{func.__name__}': retries must be an int >= 0, got {retries!r}"
            )
        if timeout is not None and timeout <= 0:
            raise ValueError(
                f"node '{func.__name__}': timeout must be > 0 seconds, got {timeout!r}"
            )
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.retry_on = tuple(retry_on)
        self.breaker = breaker
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"node '{self.name}': rate_limit must be > 0 calls/s")
        self.rate_limit = rate_limit
        if on_error is not None:
            check_on_error(on_error, f"node '{self.name}'")
        self.on_error = on_error
        self.batch_size = _positive_or_none(batch_size, "batch_size", func)
        if batch_delay < 0:
            raise ValueError(f"node '{self.name}': batch_delay must be >= 0 seconds")
        self.batch_delay = batch_delay
        if self.batch_size is not None and batch:
            raise ValueError(
                f"node '{self.name}': batch=True (Arrow arrays per Daft batch) and batch_size "
                "(lists of concurrent items) are two ways of batching; choose one"
            )
        self._output_name = output_name
        self.output_names = normalize_output_name(output_name, f"node '{self.name}'")
        self._root_args, self.defaults = _parameters(func, self.name)
        self.is_async = _is_async(func)
        self._code_hash = hash_code(func)
        functools.update_wrapper(self, func)

    @property
    def output_name(self) -> OutputName:
        return self._output_name

    @property
    def root_args(self) -> tuple[str, ...]:
        """Every parameter, in signature order (those with defaults too)."""
        return self._root_args

    @property
    def optional_args(self) -> frozenset[str]:
        """Parameters the node can run without: they have a default value."""
        return frozenset(self.defaults)

    @property
    def code_hash(self) -> str:
        return self._code_hash

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Node({self.name}, output={self._output_name})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return (self.name, self._output_name) == (other.name, other._output_name)

    def __hash__(self) -> int:
        return hash((self.name, self._output_name))


def node(
    output_name: OutputName | Callable[..., Any] | None = None,
    cache: bool = True,
    batch: bool = False,
    max_concurrency: int | ClusterLimit | None = None,
    retries: int = 0,
    backoff: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    timeout: float | None = None,
    breaker: Any = None,
    rate_limit: float | None = None,
    on_error: str | None = None,
    batch_size: int | None = None,
    batch_delay: float = 0.05,
) -> Any:
    """Turn a function into a `Node`: `@node`, `@node()`, `@node(output_name="y")`.

    Without `output_name` the function's name is the output name. `batch=True` marks a
    function over whole columns: it receives pyarrow Arrays (one value per item; `@stateful`
    objects stay scalars) and returns an array, list or numpy array of the same length.
    `max_concurrency` bounds the calls of the node in flight at once, across all items of a
    map, in one process (on Daft/Ray: per worker process; `ClusterLimit(N)`: across the
    whole Ray cluster). `retries` re-calls the node when
    it raises one of `retry_on`, waiting `backoff * 2**attempt` seconds plus jitter;
    `timeout` fails a call after that many seconds (an async call is cancelled). A
    `breaker=CircuitBreaker(failures, cooldown)` makes calls fail fast while a service is down;
    `rate_limit` caps call starts per second (per process). `on_error` ("raise", "skip" or
    "collect"; default: the run's) decides what a failure of this node does to its item:
    stop the map, or record it and go on (see results.py). `batch_size` makes a function
    over lists serve concurrent items: up to `batch_size` calls waiting at most
    `batch_delay` seconds are grouped into one call (see _batching.py).

        @node(output_name=("quotient", "remainder"))
        def divide(a: int, b: int) -> tuple[int, int]:
            return divmod(a, b)
    """
    options = {
        "cache": cache,
        "batch": batch,
        "max_concurrency": max_concurrency,
        "retries": retries,
        "backoff": backoff,
        "retry_on": retry_on,
        "timeout": timeout,
        "breaker": breaker,
        "rate_limit": rate_limit,
        "on_error": on_error,
        "batch_size": batch_size,
        "batch_delay": batch_delay,
    }
    if callable(output_name):  # bare @node, or node(func, retries=3): the same options
        return Node(output_name, output_name.__name__, **options)

    def decorate(func: Callable[..., Any]) -> Node:
        return Node(func, output_name or func.__name__, **options)

    return decorate


def _parameters(func: Callable[..., Any], name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as err:
        raise TypeError(f"node '{name}': cannot read the function's signature ({err})") from err
    unsupported = {
        inspect.Parameter.VAR_POSITIONAL: "*args",
        inspect.Parameter.VAR_KEYWORD: "**kwargs",
        inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    }
    for param in signature.parameters.values():
        if param.kind in unsupported:
            raise TypeError(
                f"node '{name}': parameter '{param.name}' is {unsupported[param.kind]}; "
                "a node's inputs are matched by name, so give each one a plain parameter"
            )
    params = tuple(signature.parameters)
    defaults = {
        p.name: p.default
        for p in signature.parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return params, defaults


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with `async def __call__`
    )


def _positive_or_none(value: int | None, what: str, func: Callable[..., Any]) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        name = getattr(func, "__name__", repr(func))
        raise ValueError(f"node '{name}': {what} must be a positive int or None, got {value!r}")
    return value
