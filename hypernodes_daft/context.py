"""The execution context a node can read while it runs: its name, the pipeline path and the
map item index.

    from hypernodes_daft import current_node, node

    @node(output_name="y")
    def slow(x: int) -> int:
        where = current_node()   # NodeContext(node_name='slow', pipeline_path=('pipeline',),
        return x                 #             item_index=2)  (None outside a node)

The map executors enter an item's scope around every item, and the node runtime marks
the running node in it. The scope lives in a ContextVar: asyncio tasks and
`copy_context().run` inherit it; the engines carry it into their worker threads and give
concurrent branches of one item a scope of their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeContext", "current_item", "current_node", "item_scope", "node_context"]


@dataclass(frozen=True)
class NodeContext:
    """Where the running node call is: its name, the pipeline path, the map item index."""

    node_name: str
    pipeline_path: tuple[str, ...] = ()
    item_index: int | None = None


class Where:
    """Where this thread or task is: the node running (None between nodes) and the map
    item. One per item (or per concurrent branch of an item), changed in place as its nodes
    run: setting a ContextVar per node call costs an allocation, which 10,000 async items
    in flight turn into garbage-collector time."""

    __slots__ = ("node", "item")

    def __init__(self, node: NodeContext | None = None, item: int | None = None):
        self.node = node
        self.item = item


CURRENT: contextvars.ContextVar[Where | None] = contextvars.ContextVar(
    "hypernodes_daft_where", default=None
)


def current_node() -> NodeContext | None:
    """The node call running in this thread or asyncio task, or None outside a node."""
    where = CURRENT.get()
    if where is None or where.node is None:
        return None
    node = where.node
    if where.item is None or node.item_index is not None:
        return node
    return NodeContext(node.node_name, node.pipeline_path, where.item)


def current_item() -> int | None:
    """The index of the map item being run here, or None outside a map item."""
    where = CURRENT.get()
    return None if where is None else where.item


def branch() -> Where:
    """A Where of its own for a concurrent branch of the current item (another thread or
    task running some of its nodes), to be set in that branch: `CURRENT.set(branch())`."""
    where = CURRENT.get()
    return Where(None, None if where is None else where.item)


def run_in_branch(func: Any, *args: Any) -> Any:
    """`func(*args)` in a scope of its own: for a concurrent branch of an item, called
    inside a copied context (`pool.submit(copy_context().run, run_in_branch, f, x)`)."""
    CURRENT.set(branch())
    return func(*args)


async def in_branch(awaitable: Any) -> Any:
    """`run_in_branch` for a coroutine run as a task of its own (gather)."""
    CURRENT.set(branch())
    return await awaitable


class _Scope:
    # a class rather than @contextmanager: entered once per item, so keep it cheap
    __slots__ = ("_where", "_token")

    def __init__(self, where: Where) -> None:
        self._where = where
        self._token: contextvars.Token | None = None

    def __enter__(self) -> NodeContext | None:
        self._token = CURRENT.set(self._where)
        return self._where.node

    def __exit__(self, *exc: object) -> None:
        CURRENT.reset(self._token)


def node_context(
    node_name: str, pipeline_path: Sequence[str] = (), item_index: int | None = None
) -> _Scope:
    """`with node_context("embed", ("outer",), 3): ...` makes `current_node()` see it."""
    return _Scope(Where(NodeContext(node_name, tuple(pipeline_path), item_index), item_index))


def item_scope(index: int | None) -> _Scope:
    """`with item_scope(3): ...`: the nodes called inside run for map item 3 (None: for
    no map item)."""
    return _Scope(Where(None, index))
