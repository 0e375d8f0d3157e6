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
from dataclasses import fields
from typing import Any, Protocol, runtime_checkable

from ._hashing import hash_code
from .options import NodeOptions
from .results import ERROR_FIELD

OutputName = str | tuple[str, ...]


@runtime_checkable
class HyperNode(Protocol):
    """What a Pipeline accepts in `nodes` (besides a nested Pipeline), and what the graph and
    the planner read of it: HyperNodes 0.4's attributes, plus `output_names` (the outputs
    as a tuple) and `optional_args` (the inputs it can do without)."""

    name: str | None
    cache: bool

    @property
    def root_args(self) -> tuple[str, ...]: ...

    @property
    def output_name(self) -> OutputName: ...

    @property
    def output_names(self) -> tuple[str, ...]: ...

    @property
    def optional_args(self) -> frozenset[str]: ...

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
    `output_name=("a", "b")` splits a returned tuple into two outputs. The other keyword
    arguments are the node's `NodeOptions`.
    """

    def __init__(
        self, func: Callable[..., Any], output_name: OutputName, cache: bool = True, **options: Any
    ):
        if not callable(func):
            raise TypeError(f"Node needs a callable, got {func!r}")
        self.func = func
        self.name: str = getattr(func, "__name__", type(func).__name__)
        self.options = _options(self.name, cache=cache, **options)
        self._output_name = output_name
        self.output_names = normalize_output_name(output_name, f"node '{self.name}'")
        self._root_args, self.defaults = _parameters(func, self.name)
        self.is_async = _is_async(func)
        self._code_hash: str | None = None  # on first use: helpers defined below it count
        functools.update_wrapper(self, func)

    @property
    def cache(self) -> bool:
        """Whether the node's results are cached (HyperNodes 0.4's attribute)."""
        return self.options.cache

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
        """The fingerprint of the node's code and of the user code it reaches (the cache
        key's part that changes when the code does), computed once, on first use."""
        if self._code_hash is None:
            self._code_hash = hash_code(self.func)
        return self._code_hash

    def __getstate__(self) -> dict[str, Any]:
        # the fingerprint travels: another process may not read the same source (a
        # function of __main__ arrives as bytecode), and keys must agree everywhere
        return {**self.__dict__, "_code_hash": self.code_hash}

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


def node(output_name: OutputName | Callable[..., Any] | None = None, **options: Any) -> Any:
    """Turn a function into a `Node`: `@node`, `@node()`, `@node(output_name="y")`.

    Without `output_name` the function's name is the output name. The other keyword
    arguments are `NodeOptions` (cache, batch, max_concurrency, retries, backoff, retry_on,
    timeout, breaker, rate_limit, on_error, batch_size, batch_delay, cpus, gpus, memory,
    resources, native, priority, cost_per_call): see its docstring.

        @node(output_name=("quotient", "remainder"), retries=3)
        def divide(a: int, b: int) -> tuple[int, int]:
            return divmod(a, b)
    """
    if callable(output_name):  # bare @node, or node(func, retries=3): the same options
        return Node(output_name, output_name.__name__, **options)

    def decorate(func: Callable[..., Any]) -> Node:
        return Node(func, output_name or func.__name__, **options)

    return decorate


def _options(name: str, **options: Any) -> NodeOptions:
    known = [f.name for f in fields(NodeOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"node '{name}': unknown option(s) {unknown}; the options are: {', '.join(known)}"
        )
    return NodeOptions(**options).checked(name)


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
