"""The dependency graph of a pipeline's nodes, wired by names. Pure: nothing runs here.

graph = build_graph([load, clean, score])
graph.root_args               # ['path']: inputs no node produces
graph.available_output_names  # ['cleaned', 'data', 'score']
graph.get_required_nodes(["cleaned"])   # [load, clean]: `score` is pruned
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from .exceptions import CycleError, DependencyError


def node_label(node: Any) -> str:
    """How errors and plans name a node: its name, or its repr when it has none."""
    return node.name if node.name is not None else repr(node)


@dataclass(frozen=True, eq=False)
class Graph:
    """The nodes of one pipeline and how they depend on each other.

    Attribute names follow HyperNodes 0.4's `GraphResult`. `execution_order` is a
    topological order where ties go alphabetically by node name, as in 0.4.
    """

    nodes: tuple[Any, ...]
    execution_order: list[Any]
    output_to_node: dict[str, Any]
    dependencies: dict[Any, list[Any]]
    root_args: list[str]
    available_output_names: list[str]
    consumers: dict[str, list[Any]]
    _digraph: nx.DiGraph

    @property
    def required_outputs(self) -> dict[Any, list[str]]:
        """For each node, the outputs of it that other nodes consume."""
        used: dict[Any, list[str]] = {n: [] for n in self.execution_order}
        for name, producer in self.output_to_node.items():
            if self.consumers.get(name):
                used[producer].append(name)
        return used

    def get_required_nodes(self, output_names: Iterable[str] | None = None) -> list[Any]:
        """The nodes needed to compute `output_names` (all nodes for None), in execution order."""
        if output_names is None:
            return list(self.execution_order)
        index = {n: i for i, n in enumerate(self.nodes)}
        needed: set[int] = set()
        for name in output_names:
            producer = index[self.output_to_node[name]]
            needed.add(producer)
            needed |= nx.ancestors(self._digraph, producer)
        return [n for n in self.execution_order if index[n] in needed]

    def generations(self, nodes: Sequence[Any]) -> list[list[Any]]:
        """`nodes` grouped into levels; the nodes of one level do not depend on each other."""
        index = {n: i for i, n in enumerate(self.nodes)}
        order = {n: i for i, n in enumerate(self.execution_order)}
        sub = self._digraph.subgraph(index[n] for n in nodes)
        return [
            sorted((self.nodes[i] for i in level), key=order.__getitem__)
            for level in nx.topological_generations(sub)
        ]


def build_graph(nodes: Sequence[Any]) -> Graph:
    """Wire `nodes` by name and check the result; raises DependencyError or CycleError."""
    output_to_node = _producers(nodes)
    digraph = nx.DiGraph()
    digraph.add_nodes_from(range(len(nodes)))
    index = {id(n): i for i, n in enumerate(nodes)}
    consumers: dict[str, list[Any]] = {}
    dependencies: dict[Any, list[Any]] = {}
    for i, consumer in enumerate(nodes):
        deps: list[Any] = []
        for arg in consumer.root_args:
            consumers.setdefault(arg, []).append(consumer)
            producer = output_to_node.get(arg)
            if producer is not None and producer not in deps:
                deps.append(producer)
                digraph.add_edge(index[id(producer)], i)
        dependencies[consumer] = deps
    _check_acyclic(digraph, nodes)
    order = nx.lexicographical_topological_sort(digraph, key=lambda i: (nodes[i].name or "", i))
    return Graph(
        nodes=tuple(nodes),
        execution_order=[nodes[i] for i in order],
        output_to_node=output_to_node,
        dependencies=dependencies,
        root_args=sorted(arg for arg in consumers if arg not in output_to_node),
        available_output_names=sorted(output_to_node),
        consumers=consumers,
        _digraph=digraph,
    )


def _producers(nodes: Sequence[Any]) -> dict[str, Any]:
    output_to_node: dict[str, Any] = {}
    for n in nodes:
        for name in n.output_names:
            if name in output_to_node:
                raise DependencyError(
                    f"Multiple nodes produce output '{name}': "
                    f"{node_label(output_to_node[name])} and {node_label(n)}"
                )
            output_to_node[name] = n
    return output_to_node


def _check_acyclic(digraph: nx.DiGraph, nodes: Sequence[Any]) -> None:
    try:
        cycle = nx.find_cycle(digraph)
    except nx.NetworkXNoCycle:
        return
    names = [node_label(nodes[u]) for u, _ in cycle] + [node_label(nodes[cycle[0][0]])]
    raise CycleError(f"Cycle detected in pipeline: {' -> '.join(names)}")
