"""The execution context a node can read while it runs: its name, the pipeline path and the
map item index.

    from hypernodes_daft import current_node, node

    @node(output_name="y")
    def slow(x: int) -> int:
        where = current_node()   # NodeContext(node_name='slow', pipeline_path=('pipeline',),
        return x                 #             item_index=2)  (None outside a node)

It is read from the call stack, when asked: the node runtime's call (a frame registered
with `node_frame`) holds the running node's context, an item runner's frame (registered
with `item_frame`) the item's `index`. So running a node costs nothing for it: no object
and no ContextVar per item or per call, which 10,000 async items in flight would turn
into garbage-collector time. Where the stack cannot tell, a scope in a ContextVar does
(asyncio tasks and `copy_context().run` inherit it): a worker thread or task running some
nodes of an item (`run_in_branch`, `in_branch`), a Daft batch (`node_context`).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

__all__ = ["NodeContext", "current_item", "current_node", "node_context"]


@dataclass(frozen=True)
class NodeContext:
    """Where the running node call is: its name, the pipeline path, the map item index."""

    node_name: str
    pipeline_path: tuple[str, ...] = ()
    item_index: int | None = None


class Where:
    """A scope set where the call stack cannot tell: the node running and the map item."""

    __slots__ = ("node", "item")

    def __init__(self, node: NodeContext | None = None, item: int | None = None):
        self.node = node
        self.item = item


CURRENT: contextvars.ContextVar[Where | None] = contextvars.ContextVar(
    "hypernodes_daft_where", default=None
)

_NODE_FRAMES: set[CodeType] = set()  # their frames' `self.context` is the running node
_ITEM_FRAMES: set[CodeType] = set()  # their frames' `index` is the map item (None: a run)


def node_frame(function: Any) -> None:
    """Register `function` as a node call: while it runs, `self.context` is the node's."""
    _NODE_FRAMES.add(function.__code__)


def item_frame(function: Any) -> None:
    """Register `function` as an item runner: while it runs, its `index` is the item's."""
    _ITEM_FRAMES.add(function.__code__)


def current_node() -> NodeContext | None:
    """The node call running in this thread or asyncio task, or None outside a node."""
    where = CURRENT.get()
    node, item = _from_stack(sys._getframe(1), find_node=True)
    if where is not None:
        node = where.node or node
        item = item if item is not None else where.item
    if node is None or item is None or node.item_index is not None:
        return node
    return NodeContext(node.node_name, node.pipeline_path, item)


def current_item() -> int | None:
    """The index of the map item being run here, or None outside a map item."""
    _, item = _from_stack(sys._getframe(1), find_node=False)
    if item is None:
        where = CURRENT.get()
        item = None if where is None else where.item
    return item


def _from_stack(frame: Any, find_node: bool) -> tuple[NodeContext | None, int | None]:
    """The innermost node call and map item on the stack from `frame` outward (a nested
    pipeline's item is inside its outer item: the innermost is the one running)."""
    node = None
    while frame is not None:
        code = frame.f_code
        if find_node and node is None and code in _NODE_FRAMES:
            node = frame.f_locals["self"].context
        elif code in _ITEM_FRAMES:
            index = frame.f_locals.get("index")
            if index is not None:
                return node, index
        frame = frame.f_back
    return node, None


def run_in_branch(item: int | None, func: Any, *args: Any) -> Any:
    """`func(*args)` for map item `item` in a thread of its own (a concurrent branch of the
    item: `pool.submit(copy_context().run, run_in_branch, current_item(), f, x)`)."""
    CURRENT.set(Where(None, item))
    return func(*args)


async def in_branch(awaitable: Any, item: int | None) -> Any:
    """`run_in_branch` for a coroutine run as a task of its own (gather)."""
    CURRENT.set(Where(None, item))
    return await awaitable


class _Scope:
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
