"""The order a map's items start in: by their priority (`Pipeline.map(..., priority=...)`),
highest first, in index order among equals; results keep their item's index.

    items, run_item = start_order(run_item, inputs, ("x",), "zip", priority="urgency")
    for index, item in items:           # the most urgent item first
        results[index] = run_item(item, index)

`priority` is the name of an item input (a mapped column, or a shared input) or a
function of the item's inputs returning a number. `run_item` comes back wrapped so that
every node call of an item waits with the item's priority (runtime/priority.py), and so
do the items of a map nested in it (they inherit it). Without a priority both come back
as before: items in index order, `run_item` itself.

A prioritized map computes every item's priority before the first starts, so it holds
its rows (one tuple each) rather than drawing them lazily.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..plan import iter_items, iter_rows, make_item
from .priority import item_priority_reset, item_priority_set

Values = dict[str, Any]
Priority = str | Callable[[Values], Any] | None
Indexed = Iterator[tuple[int, Values]]


def start_order(
    run_item: Any, inputs: Values, map_over: Sequence[str], map_mode: str, priority: Priority
) -> tuple[Indexed, Any]:
    """`(index, item)` pairs in the order items start, and `run_item` (sync or async)
    running each with its item's priority."""
    if priority is None:
        return enumerate(iter_items(inputs, map_over, map_mode)), run_item
    shared = {k: v for k, v in inputs.items() if k not in map_over}
    rows = list(iter_rows(inputs, map_over, map_mode))
    priorities = item_priorities(shared, map_over, rows, priority)
    order = _by_priority(priorities)
    items = ((i, make_item(shared, map_over, rows[i])) for i in order)
    return items, with_item_priorities(run_item, priorities)


def inputs_in_start_order(
    inputs: Values, map_over: Sequence[str], map_mode: str, priority: Priority
) -> tuple[Values, list[int]]:
    """The map's `inputs` with its mapped lists holding the rows in start order (to be
    zipped, whatever `map_mode` was), and the item index of each position: for an engine
    that runs rows in the order it is given them (DaftEngine)."""
    shared = {k: v for k, v in inputs.items() if k not in map_over}
    rows = list(iter_rows(inputs, map_over, map_mode))
    order = _by_priority(item_priorities(shared, map_over, rows, priority))
    columns = {name: [rows[i][at] for i in order] for at, name in enumerate(map_over)}
    return {**shared, **columns}, order


def _by_priority(priorities: list[float]) -> list[int]:
    """Item indices, highest priority first; a stable sort keeps index order among equals."""
    return sorted(range(len(priorities)), key=lambda i: -priorities[i])


def item_priorities(
    shared: Values, map_over: Sequence[str], rows: list[tuple[Any, ...]], priority: Priority
) -> list[float]:
    """Each row's priority, checked to be a number."""
    if isinstance(priority, str):
        if priority in map_over:
            at = list(map_over).index(priority)
            values: Iterator[Any] = (row[at] for row in rows)
        else:  # a shared input: every item alike
            values = (shared[priority] for _ in rows)
    else:
        values = (priority(make_item(shared, map_over, row)) for row in rows)
    return [_number(value, index, priority) for index, value in enumerate(values)]


def _number(value: Any, index: int, priority: Priority) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        source = f"{priority!r}" if isinstance(priority, str) else "the priority function"
        raise ValueError(
            f"map priority: item {index} has priority {value!r} (from {source}); "
            "a priority must be a number (higher starts first)"
        )
    return float(value)


def with_item_priorities(run_item: Any, priorities: list[float]) -> Any:
    """`run_item(item, index)` with item `index`'s priority set for the calls it makes."""
    if inspect.iscoroutinefunction(run_item):

        async def arun_prioritized(item: Values, index: int) -> Values:
            token = item_priority_set(priorities[index])
            try:
                return await run_item(item, index)
            finally:
                item_priority_reset(token)

        return arun_prioritized

    def run_prioritized(item: Values, index: int) -> Values:
        token = item_priority_set(priorities[index])
        try:
            return run_item(item, index)
        finally:
            item_priority_reset(token)

    return run_prioritized
