"""Execution plans: which nodes one call runs, in which order, fed by which names.

Plans are plain data, built before anything runs, so every planning error (a missing input,
an unknown output, a bad map_over) surfaces before the first node is called. Engines only
execute plans.

    >>> plan = pipeline.plan(inputs={"x": 1}, output_name="y")
    >>> print(plan)
    RunPlan 'demo': inputs [x] -> outputs [y]
      1. double(x) -> [doubled]
      2. add_one(doubled) -> [y]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .dataset import Column, dataset_of
from .exceptions import DependencyError, PlanningError
from .graph import Graph, node_label
from .options import DEFAULT_OPTIONS, NodeOptions, options_of

MAP_MODES = ("zip", "product")


@dataclass(frozen=True)
class NestedPlan:
    """How a nested pipeline step feeds and runs its inner pipeline."""

    item: RunPlan
    rename_in: tuple[tuple[str, str], ...]  # (outer name, inner name) for each argument
    rename_out: tuple[tuple[str, str], ...]  # (inner name, outer name) for each output
    bound: Mapping[str, Any]  # the inner pipeline's bound inputs
    map_over: tuple[str, ...] = ()  # inner names; empty when the inner pipeline runs once
    map_mode: str = "zip"

    def inner_values(self, outer: Mapping[str, Any], bound_as: Any = None) -> dict[str, Any]:
        """The inner pipeline's inputs, by inner name: its bound inputs (each passed through
        `bound_as` when given), then the step's arguments found in `outer`, renamed."""
        inner = (
            dict(self.bound)
            if bound_as is None
            else {k: bound_as(v) for k, v in self.bound.items()}
        )
        inner.update({i: outer[o] for o, i in self.rename_in if o in outer})
        return inner


@dataclass(frozen=True)
class Step:
    """One node of a plan: read `args` from the values, write `outputs`."""

    node: Any
    label: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    nested: NestedPlan | None = None
    options: NodeOptions = DEFAULT_OPTIONS  # a plain node's (a nested step has the defaults)

    @property
    def is_async(self) -> bool:
        if self.nested is not None:
            return self.nested.item.is_async
        return bool(getattr(self.node, "is_async", False))

    @property
    def positional(self) -> bool:
        """Its args are its node's first parameters, in order: the function can take them
        positionally (else by name: keyword-only parameters, a skipped default)."""
        return self.args == tuple(self.node.root_args[: len(self.args)])

    def __str__(self) -> str:
        return f"{self.label}({', '.join(self.args)}) -> [{', '.join(self.outputs)}]"


@dataclass(frozen=True)
class RunPlan:
    """The plan for running a pipeline once (or for one item of a map)."""

    name: str
    steps: tuple[Step, ...]
    generations: tuple[
        tuple[int, ...], ...
    ]  # indices into `steps`; a level's steps are independent
    inputs: tuple[str, ...]  # the input names the steps read
    outputs: tuple[str, ...]  # keys of the result dict, in execution order
    pipeline_id: str = ""  # the pipeline's `id`, as callbacks name it
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", any(s.is_async for s in self.steps))

    def __str__(self) -> str:
        return "\n".join(self._lines(""))

    def _lines(self, indent: str) -> list[str]:
        head = f"{indent}RunPlan '{self.name}': inputs [{', '.join(self.inputs)}]"
        lines = [f"{head} -> outputs [{', '.join(self.outputs)}]"]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{indent}  {number}. {step}")
            if step.nested is not None:
                mapped = step.nested.map_over
                if mapped:
                    lines.append(
                        f"{indent}     map over [{', '.join(mapped)}] ({step.nested.map_mode}):"
                    )
                lines.extend(step.nested.item._lines(indent + "     "))
        return lines


@dataclass(frozen=True)
class MapPlan:
    """The plan for a map: the per-item plan and how items are formed from the inputs."""

    item: RunPlan
    map_over: tuple[str, ...]
    map_mode: str
    n_items: int | None  # None: the rows of a dataset, counted when it is read
    # which items start first: an item input's name or a function of an item's inputs
    # (`Pipeline.map(..., priority=...)`; runtime/item_order.py); None: index order
    priority: Any = None

    def __str__(self) -> str:
        count = "dataset rows" if self.n_items is None else f"{self.n_items} items"
        head = f"MapPlan: {count}, {self.map_mode} over [{', '.join(self.map_over)}]"
        return f"{head}\n{self.item}"


def requested_outputs(graph: Graph, output_name: Any, label: str) -> list[str] | None:
    """`output_name` as a list of names (None: every output), checked against the graph."""
    if output_name is None:
        return None
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    unknown = [n for n in names if n not in graph.output_to_node]
    if unknown:
        raise PlanningError(
            f"Output name(s) {unknown} not found in pipeline '{label}'. "
            f"Available outputs: {graph.available_output_names}"
        )
    return names


def plan_run(
    graph: Graph, label: str, available: frozenset[str], output_name: Any, pipeline_id: str = ""
) -> RunPlan:
    """Plan one run of `graph` given the names of the inputs that will be available."""
    requested = requested_outputs(graph, output_name, label)
    nodes = graph.get_required_nodes(requested)
    _check_inputs(graph, label, nodes, available)
    consumed = {arg for n in nodes for arg in n.root_args}
    steps = tuple(_step(graph, n, available, consumed, requested) for n in nodes)
    position = {id(n): i for i, n in enumerate(nodes)}
    generations = tuple(tuple(position[id(n)] for n in level) for level in graph.generations(nodes))
    outputs = requested if requested is not None else [o for s in steps for o in s.outputs]
    reads = sorted({a for s in steps for a in s.args if a not in graph.output_to_node})
    return RunPlan(label, steps, generations, tuple(reads), tuple(outputs), pipeline_id)


def _partly_consumed(node: Any, consumed: set[str]) -> set[str] | None:
    """The outputs of `node` other nodes consume, when they consume some but not all."""
    used = consumed & set(node.output_names)
    return used if 0 < len(used) < len(node.output_names) else None


def _step(
    graph: Graph, node: Any, available: frozenset[str], consumed: set[str], requested: Any
) -> Step:
    args = tuple(a for a in node.root_args if a in graph.output_to_node or a in available)
    if not hasattr(node, "plan_nested"):  # a plain node computes all its outputs at once
        return Step(node, node_label(node), args, node.output_names, options=options_of(node))
    # A nested pipeline computes, as in HyperNodes 0.4 when no output is asked for, only
    # the outputs other nodes consume when they consume some but not all (the inner nodes
    # feeding only the others then do not run), in name order; otherwise all of them
    # (None). Outputs asked for by name are computed too.
    partly = _partly_consumed(node, consumed)
    wanted = partly if requested is None else consumed | set(requested)
    outputs = None if wanted is None else tuple(o for o in node.output_names if o in wanted)
    nested = node.plan_nested(frozenset(args), outputs, by_name=partly is not None)
    outputs = tuple(outer for _, outer in nested.rename_out)
    return Step(node, node_label(node), args, outputs, nested)


def _check_inputs(graph: Graph, label: str, nodes: list[Any], available: frozenset[str]) -> None:
    missing: dict[str, list[str]] = {}
    for n in nodes:
        optional = n.optional_args
        for arg in n.root_args:
            if arg not in graph.output_to_node and arg not in available and arg not in optional:
                missing.setdefault(arg, []).append(node_label(n))
    if missing:
        details = "; ".join(
            f"'{arg}' (needed by {', '.join(needers)})" for arg, needers in missing.items()
        )
        raise DependencyError(
            f"Missing required input(s) {sorted(missing)} for pipeline '{label}': {details}. "
            "Pass them in inputs= or bind them with .bind()."
        )


def check_map_inputs(
    label: str, inputs: Mapping[str, Any], map_over: Sequence[str], map_mode: str
) -> int | None:
    """Validate the mapped inputs of a map call and return the number of items (None for
    dataset columns, whose rows are counted when read)."""
    if map_mode not in MAP_MODES:
        raise PlanningError(
            f"{label}: unknown map_mode {map_mode!r}; expected one of {list(MAP_MODES)}"
        )
    if not map_over:
        raise PlanningError(f"{label}: map_over names no input to map over")
    lengths: dict[str, int] = {}
    for name in map_over:
        if name not in inputs:
            raise PlanningError(
                f"{label}: Parameter '{name}' in map_over not found in inputs "
                f"(inputs given: {sorted(inputs)})"
            )
        value = inputs[name]
        if isinstance(value, Column):
            continue
        if not isinstance(value, list):
            raise PlanningError(
                f"{label}: Parameter '{name}' is in map_over but value is not a list "
                f"(got {type(value).__name__}); pass a list, e.g. list(values)"
            )
        lengths[name] = len(value)
    if dataset_of(inputs, tuple(map_over), label) is not None:
        return None  # rows of a dataset: counted when it is read
    if map_mode == "zip":
        if len(set(lengths.values())) > 1:
            raise PlanningError(
                f"{label}: In zip mode, all lists must have the same length. Got lengths: {lengths}"
            )
        return next(iter(lengths.values()))
    count = 1
    for length in lengths.values():
        count *= length
    return count


def product_order(names: Sequence[str], keys: Sequence[str]) -> tuple[str, ...]:
    """The mapped names in the order of the inputs' keys, which fixes the product's order
    (the last one varies fastest), as in HyperNodes 0.4."""
    position = {key: i for i, key in enumerate(keys)}
    return tuple(sorted(names, key=position.__getitem__))


def normalize_map_over(map_over: Any, label: str) -> tuple[str, ...]:
    if map_over is None:
        raise TypeError(f"{label}: map() needs map_over=, the name(s) of the list inputs to map")
    names = (map_over,) if isinstance(map_over, str) else tuple(map_over)
    if len(set(names)) != len(names):
        raise PlanningError(f"{label}: map_over {list(names)} names an input twice")
    return names


def iter_items(
    inputs: Mapping[str, Any], map_over: Sequence[str], map_mode: str
) -> Iterator[dict[str, Any]]:
    """The input dict of each map item, in order; unmapped inputs are shared by all items."""
    shared = {k: v for k, v in inputs.items() if k not in map_over}
    for row in iter_rows(inputs, map_over, map_mode):
        yield make_item(shared, map_over, row)


def iter_rows(
    inputs: Mapping[str, Any], map_over: Sequence[str], map_mode: str
) -> Iterator[tuple[Any, ...]]:
    """The mapped values of each item, in order, as tuples aligned with `map_over`."""
    columns = [inputs[name] for name in map_over]
    return zip(*columns, strict=False) if map_mode == "zip" else itertools.product(*columns)


def make_item(shared: Mapping[str, Any], map_over: Sequence[str], row: tuple[Any, ...]) -> dict:
    """One item's inputs: the shared inputs plus this row's mapped values."""
    item = dict(shared)
    item.update(zip(map_over, row, strict=False))
    return item


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))
