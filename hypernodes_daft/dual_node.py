"""`DualNode`: one node, two implementations: per item, and per batch of columns.

    def embed_one(text: str) -> float: ...            # one item: run, debugging
    def embed_batch(text: pa.Array) -> pa.Array: ...  # many: vectorised, one call

    embed = DualNode(output_name="vector", singular=embed_one, batch=embed_batch)

`run()`, and maps of pipelines with other nodes too, call `singular` per item on the local
engines, with the cache and callbacks of any node. A local map whose only node is the
DualNode calls `batch` once over every item (HyperNodes 0.4's fast path), unless a cache,
callbacks or on_error "skip"/"collect" need each item on its own. DaftEngine always
calls `batch`, once per Daft batch, with an Arrow array per argument (`@stateful` objects
stay scalars), as for `@node(batch=True)`; `singular` is never called there. `batch`
returns a pyarrow Array, a list or a numpy array with one value per row.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from ._hashing import hash_code
from .node import Node, OutputName

_SUFFIXES = ("_singular", "_single", "_one")


class DualNode(Node):
    """A node with a per-item function (`singular`) and a per-batch one (`batch`), as
    HyperNodes 0.4 has it; see the module docstring for which runs where.

        DualNode(output_name="score", singular=score_one, batch=score_many)
    """

    is_dual_node = True

    def __init__(
        self,
        output_name: OutputName,
        singular: Callable[..., Any],
        batch: Callable[..., Any],
        cache: bool = True,
    ):
        if not callable(batch):
            raise TypeError(f"DualNode: batch must be callable, got {batch!r}")
        super().__init__(singular, output_name, cache=cache, arrow_function=batch)
        self.singular = singular
        self.batch = batch
        self.name = _base_name(getattr(singular, "__name__", type(singular).__name__))

    @property
    def is_stateful(self) -> bool:
        """True when either function is a bound method (of a `@stateful` object, say)."""
        return inspect.ismethod(self.singular) or inspect.ismethod(self.batch)

    @property
    def instance(self) -> Any:
        """The object a bound `singular` (or else `batch`) belongs to, or None."""
        for func in (self.singular, self.batch):
            if inspect.ismethod(func):
                return func.__self__
        return None

    @property
    def code_hash(self) -> str:
        """Both functions' fingerprints (and the user code each reaches), combined."""
        if self._code_hash is None:
            both = f"{hash_code(self.singular)}:{hash_code(self.batch)}"
            self._code_hash = hashlib.sha256(both.encode()).hexdigest()
        return self._code_hash

    def __repr__(self) -> str:
        return f"DualNode(name={self.name}, output={self.output_name}, stateful={self.is_stateful})"


def _base_name(name: str) -> str:
    """`embed_one` -> `embed`: the name both functions share."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
