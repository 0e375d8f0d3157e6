"""Drawing a pipeline's DAG.

    pipeline.visualize()                      # in Jupyter: the SVG, shown inline
    pipeline.visualize("dag.svg", depth=2)    # nested pipelines expanded one level
    print(to_dot(pipeline))                   # Graphviz source

`describe` turns a pipeline into plain data (boxes, edges, clusters); `to_dot` renders it as
Graphviz source, drawn by Graphviz's `dot` when it is installed. Without `dot`, a simple
layered SVG is drawn in pure Python, with a hint on how to get the full layout.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import networkx as nx


@dataclass(frozen=True)
class Box:
    id: str
    label: str
    kind: str  # "input" | "node" | "pipeline"
    cluster: tuple[str, ...] = ()  # the nested pipelines it sits in, outermost first


@dataclass
class Drawing:
    """A pipeline's DAG as plain data."""

    boxes: list[Box] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, value name)


def describe(pipeline: Any, depth: int | None = 1) -> Drawing:
    """The boxes and edges of `pipeline`; nested pipelines expanded `depth - 1` levels
    (`None`: all)."""
    drawing = Drawing()
    _walk(pipeline, drawing, (), depth, scope={})
    return drawing


def to_dot(pipeline: Any, depth: int | None = 1, orient: str = "TB") -> str:
    """Graphviz source of the DAG."""
    drawing = describe(pipeline, depth)
    lines = [f"digraph {_quote(pipeline.label)} {{", f"  rankdir={orient};", "  compound=true;"]
    lines.append('  node [fontname="Helvetica", fontsize=12];')
    clusters: dict[tuple[str, ...], list[Box]] = {}
    for box in drawing.boxes:
        clusters.setdefault(box.cluster, []).append(box)
    for cluster in sorted(clusters, key=len):
        indent = "  " * (len(cluster) + 1)
        if cluster:
            lines.append(f"{indent[:-2]}subgraph {_quote('cluster_' + '/'.join(cluster))} {{")
            lines.append(f'{indent}label={_quote(cluster[-1])}; style="rounded,dashed";')
        for box in clusters[cluster]:
            shape = "ellipse" if box.kind == "input" else "box"
            style = ', style="rounded,filled", fillcolor="#e0f2fe"' if box.kind != "input" else ""
            lines.append(
                f"{indent}{_quote(box.id)} [label={_quote(box.label)}, shape={shape}{style}];"
            )
        if cluster:
            lines.append(f"{indent[:-2]}}}")
    for source, target, name in drawing.edges:
        lines.append(f"  {_quote(source)} -> {_quote(target)} [label={_quote(name)}];")
    lines.append("}")
    return "\n".join(lines)


def visualize(
    pipeline: Any,
    filename: str | None = None,
    engine: str = "graphviz",
    depth: int | None = 1,
    orient: str = "TB",
    **options: Any,
) -> SVG:
    """The DAG as SVG (shown inline in Jupyter); written to `filename` when given."""
    if engine != "graphviz":
        raise ValueError(f"visualize: unknown engine {engine!r}; expected 'graphviz'")
    if shutil.which("dot"):
        import graphviz

        svg = graphviz.Source(to_dot(pipeline, depth, orient)).pipe(format="svg").decode()
    else:
        warnings.warn(
            "Graphviz's `dot` program was not found: drew a simple layered SVG instead. "
            "Install Graphviz (e.g. `apt install graphviz` or `brew install graphviz`) for the "
            "full layout",
            stacklevel=2,
        )
        svg = layered_svg(describe(pipeline, depth))
    if filename:
        Path(filename).write_text(svg)
    return SVG(svg)


@dataclass(frozen=True)
class SVG:
    """SVG text that Jupyter displays."""

    data: str

    def _repr_svg_(self) -> str:
        return self.data


def layered_svg(drawing: Drawing) -> str:
    """A pure-Python drawing: one row per topological generation, edges as straight lines."""
    graph = nx.DiGraph()
    graph.add_nodes_from(box.id for box in drawing.boxes)
    graph.add_edges_from((source, target) for source, target, _ in drawing.edges)
    boxes = {box.id: box for box in drawing.boxes}
    width, height, gap_x, gap_y = 170, 36, 30, 60
    position: dict[str, tuple[int, int]] = {}
    rows = list(nx.topological_generations(graph))
    for row, ids in enumerate(rows):
        for column, box_id in enumerate(sorted(ids)):
            position[box_id] = (20 + column * (width + gap_x), 20 + row * (height + gap_y))
    total_width = 40 + max(len(ids) for ids in rows) * (width + gap_x) if rows else 100
    total_height = 40 + len(rows) * (height + gap_y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" height="{total_height}" '
        'font-family="Helvetica" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for source, target, name in drawing.edges:
        (x1, y1), (x2, y2) = position[source], position[target]
        parts.append(
            f'<line x1="{x1 + width // 2}" y1="{y1 + height}" x2="{x2 + width // 2}" y2="{y2}" '
            f'stroke="#1e293b" marker-end="url(#arrow)"><title>{escape(name)}</title></line>'
        )
    for box_id, (x, y) in position.items():
        box = boxes[box_id]
        radius = height // 2 if box.kind == "input" else 6
        fill = "#ffffff" if box.kind == "input" else "#e0f2fe"
        where = "/".join(box.cluster)
        label = f"{where}/{box.label}" if where else box.label
        parts.append(
            f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="{radius}" '
            f'fill="{fill}" stroke="#1e293b"/>'
            f'<text x="{x + width // 2}" y="{y + height // 2 + 4}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _walk(
    pipeline: Any,
    drawing: Drawing,
    cluster: tuple[str, ...],
    depth: int | None,
    scope: dict[str, str],
) -> dict[str, str]:
    """Add `pipeline`'s boxes and edges; returns output name -> the box that produces it."""
    scope = dict(scope)
    prefix = "/".join(cluster)
    for node in pipeline.graph.execution_order:
        sources = {arg: _source(arg, scope, drawing, cluster) for arg in node.root_args}
        inner = getattr(node, "pipeline", None)
        expand = inner is not None and (depth is None or depth > 1)
        if expand:
            inner_scope = {node._inner_of.get(a, a): s for a, s in sources.items()}
            label = getattr(node, "name", None) or inner.label
            inner_depth = None if depth is None else depth - 1
            produced = _walk(inner, drawing, (*cluster, label), inner_depth, inner_scope)
            for outer in node.output_names:
                scope[outer] = produced[node._inner_output_of.get(outer, outer)]
            continue
        name = getattr(node, "name", None) or type(node).__name__
        box_id = f"{prefix}/{name}" if prefix else name
        kind = "pipeline" if inner is not None else "node"
        drawing.boxes.append(Box(box_id, name, kind, cluster))
        drawing.edges.extend((source, box_id, arg) for arg, source in sources.items())
        scope.update(dict.fromkeys(node.output_names, box_id))
    return scope


def _source(arg: str, scope: dict[str, str], drawing: Drawing, cluster: tuple[str, ...]) -> str:
    """The box producing `arg`, adding an input box the first time an input is read."""
    if arg not in scope:
        prefix = "/".join(cluster)
        box_id = f"{prefix}/input:{arg}" if prefix else f"input:{arg}"
        drawing.boxes.append(Box(box_id, arg, "input", cluster))
        scope[arg] = box_id
    return scope[arg]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
