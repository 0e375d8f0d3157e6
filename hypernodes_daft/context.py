"""The execution context a node can read while it runs: its name, the pipeline path and the
map item index.

    from hypernodes_daft import current_node, node

    @node(output_name="y")
    def slow(x: int) -> int:
        where = current_node()   # NodeContext(node_name='slow', pipeline_path=('pipeline',),
        return x                 #             item_index=2)  (None outside a node)

The node runtime enters a node's scope around every call, and the map executors an item's
scope around every item. Both live in ContextVars: asyncio tasks and `copy_context().run`
inherit them; the engines carry them into their worker threads themselves.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeContext", "current_node", "item_scope", "node_context"]


@dataclass(frozen=True)
class NodeContext:
    """Where the running node call is: its name, the pipeline path, the map item index."""

    node_name: str
    pipeline_path: tuple[str, ...] = ()
    item_index: int | None = None


# The node call running (a NodeContext without item index: the runtime makes one per node
# at compile time, so entering a call allocates nothing) and the map item it works on.
CURRENT_NODE: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar(
    "hypernodes_daft_current_node", default=None
)
CURRENT_ITEM: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "hypernodes_daft_current_item", default=None
)


def current_node() -> NodeContext | None:
    """The node call running in this thread or asyncio task, or None outside a node."""
    node = CURRENT_NODE.get()
    if node is None or node.item_index is not None:
        return node
    index = CURRENT_ITEM.get()
    return node if index is None else NodeContext(node.node_name, node.pipeline_path, index)


def current_item() -> int | None:
    """The index of the map item being run here, or None outside a map item."""
    return CURRENT_ITEM.get()


class _Scope:
    # a class rather than @contextmanager: it wraps every node call, so keep it cheap
    __slots__ = ("_var", "_value", "_token")

    def __init__(self, var: contextvars.ContextVar[Any], value: Any) -> None:
        self._var = var
        self._value = value
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Any:
        self._token = self._var.set(self._value)
        return self._value

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


def node_context(
    node_name: str, pipeline_path: Sequence[str] = (), item_index: int | None = None
) -> _Scope:
    """`with node_context("embed", ("outer",), 3): ...` makes `current_node()` see it."""
    return _Scope(CURRENT_NODE, NodeContext(node_name, tuple(pipeline_path), item_index))


def item_scope(index: int) -> _Scope:
    """`with item_scope(3): ...`: the nodes called inside run for map item 3."""
    return _Scope(CURRENT_ITEM, index)
