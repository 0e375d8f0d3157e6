"""Errors raised by hypernodes_daft.

Planning errors (`PlanningError` and its subclasses) are raised before any node runs and are
also `ValueError`s, as in HyperNodes 0.4. A node that raises produces an `ExecutionError`
that names the node and the map item, chains the original exception as ``__cause__`` and is
still an instance of the original exception's type::

    try:
        pipeline.map(inputs={"x": [1, 0]}, map_over="x")
    except ZeroDivisionError as err:   # also an ExecutionError
        print(err.node_name, err.item_index)
"""

from __future__ import annotations

import functools
import reprlib
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class HyperNodesError(Exception):
    """Base class of every error hypernodes_daft raises itself."""


class PlanningError(HyperNodesError, ValueError):
    """A pipeline, its inputs or a call's arguments are invalid; nothing has run yet."""


class CycleError(PlanningError):
    """The nodes' dependencies form a cycle."""


class DependencyError(PlanningError):
    """An input nobody provides, or two nodes producing one output name."""


class WorkerDiedError(HyperNodesError, BrokenProcessPool):
    """A worker process of `map_executor="parallel"` died while running an item (a crash in
    native code, `os._exit`, a signal, the out-of-memory killer). Also a
    `BrokenProcessPool`, which is what a process pool raises for it."""


_summary = reprlib.Repr()
_summary.maxstring = 60
_summary.maxother = 60
_summary.maxlist = 5
_summary.maxdict = 5


def summarize_inputs(inputs: dict[str, Any]) -> str:
    """One short line showing a node's input values, for error messages."""
    return ", ".join(f"{name}={_summary.repr(value)}" for name, value in inputs.items())


class ExecutionError(HyperNodesError):
    """A node raised while running.

    `path` locates the failure from the outermost level inward: node names and map item
    indices, e.g. ``[3, "embed", 1, "tokenize"]`` for node `tokenize` on item 1 of a mapped
    nested pipeline `embed`, itself on item 3 of the outer map. `node_name` is the innermost
    node, `item_index` the outermost map item (None outside a map), `inputs` a short summary
    of the failing node's input values, `on_error` the failing node's policy ("raise", or
    "skip"/"collect": the map records the failure and goes on).
    """

    def __init__(
        self,
        original: BaseException,
        node_name: str,
        inputs: str = "",
        path: list[str | int] | None = None,
        on_error: str = "raise",
    ) -> None:
        # not super(): in the combined type that would be the original type's __init__
        BaseException.__init__(self, *original.args)
        self.original = original
        self.node_name = node_name
        self.inputs = inputs
        self.path = path if path is not None else [node_name]
        self.on_error = on_error

    @property
    def item_index(self) -> int | None:
        return self.path[0] if isinstance(self.path[0], int) else None

    def located(self, *outer: str | int) -> ExecutionError:
        """The same error, located one or more levels further out."""
        path = [*outer, *self.path]
        return wrap_error(self.original, self.node_name, self.inputs, path, self.on_error)

    def __str__(self) -> str:
        where = " > ".join(
            f"item {step}" if isinstance(step, int) else f"node '{step}'" for step in self.path
        )
        message = f"{where} raised {type(self.original).__name__}: {self.original}"
        return f"{message} (inputs: {self.inputs})" if self.inputs else message

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.original, self.node_name, self.inputs, self.path, self.on_error)
        return (wrap_error, args)


@functools.lru_cache(maxsize=256)
def _error_type_for(original_type: type[BaseException]) -> type[ExecutionError]:
    """An ExecutionError subclass that is also `original_type`, so old `except` clauses match."""
    if issubclass(original_type, ExecutionError) or not issubclass(original_type, Exception):
        return ExecutionError
    try:
        return type(
            f"ExecutionError[{original_type.__name__}]",
            (ExecutionError, original_type),
            {"__module__": __name__},
        )
    except TypeError:  # an exception type whose C layout cannot be combined
        return ExecutionError


def wrap_error(
    original: BaseException,
    node_name: str,
    inputs: str = "",
    path: list[str | int] | None = None,
    on_error: str = "raise",
) -> ExecutionError:
    """Build the ExecutionError for `original` raised by `node_name`."""
    error_type = _error_type_for(type(original))
    error = _blank(error_type)
    if error_type is not ExecutionError:  # `except QuotaError as e: e.limit` keeps working
        error.__dict__.update(getattr(original, "__dict__", {}))
    ExecutionError.__init__(error, original, node_name, inputs, path, on_error)
    error.__cause__ = original
    return error


def _blank(error_type: type[ExecutionError]) -> ExecutionError:
    """An instance made without calling the original type's __init__ (its arguments are
    unknown); OSError and its kin (ConnectionError, TimeoutError) need their own __new__."""
    try:
        return error_type.__new__(error_type)
    except TypeError:  # a __new__ that requires arguments
        return BaseException.__new__(error_type)
