"""Drawing the DAG: plain-data description, Graphviz source, the pure-Python SVG."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from hypernodes_daft import Pipeline, node
from hypernodes_daft.visualize import describe, layered_svg, to_dot


@node(output_name="words")
def split(text: str) -> list[str]:
    return text.split()


@node(output_name="n")
def count(items: list[str]) -> int:
    return len(items)


@node(output_name="score")
def score(n: int, words: list[str], weight: float = 1.0) -> float:
    return n * weight + len(words)


def nested_pipeline() -> Pipeline:
    inner = Pipeline(nodes=[count], name="counting")
    counting = inner.as_node(input_mapping={"words": "items"}, name="counting")
    return Pipeline(nodes=[split, counting, score], name="outer")


def test_description_has_inputs_nodes_and_named_edges():
    drawing = describe(nested_pipeline())
    kinds = {box.id: box.kind for box in drawing.boxes}
    assert kinds == {
        "input:text": "input",
        "split": "node",
        "counting": "pipeline",
        "input:weight": "input",
        "score": "node",
    }
    assert ("split", "counting", "words") in drawing.edges
    assert ("counting", "score", "n") in drawing.edges


def test_depth_2_expands_a_nested_pipeline_into_a_cluster():
    drawing = describe(nested_pipeline(), depth=2)
    inner = [box for box in drawing.boxes if box.cluster == ("counting",)]
    assert [box.id for box in inner] == ["counting/count"]
    assert ("split", "counting/count", "items") in drawing.edges  # the inner name
    assert ("counting/count", "score", "n") in drawing.edges
    assert 'subgraph "cluster_counting"' in to_dot(nested_pipeline(), depth=2)


def test_fallback_svg_is_well_formed_and_names_every_box():
    drawing = describe(nested_pipeline(), depth=None)
    svg = layered_svg(drawing)
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert texts == {"text", "split", "counting/count", "weight", "score"}
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) == len(drawing.edges)


def test_visualize_writes_the_svg_file(tmp_path):
    target = tmp_path / "dag.svg"
    no_dot = shutil.which("dot") is None
    with pytest.warns(UserWarning, match="dot") if no_dot else contextlib.nullcontext():
        svg = nested_pipeline().visualize(str(target))
    assert target.read_text() == svg.data and svg._repr_svg_() == svg.data
    ET.fromstring(svg.data)


def test_unknown_engine_is_an_error():
    with pytest.raises(ValueError, match="unknown engine"):
        nested_pipeline().visualize(engine="matplotlib")


def test_cli_inspect_draws_the_graph(tmp_path):
    (tmp_path / "p.py").write_text(
        "from hypernodes_daft import Pipeline, node\n"
        "@node(output_name='y')\n"
        "def f(x: int) -> int:\n"
        "    return x\n"
        "pipeline = Pipeline(nodes=[f])\n"
    )
    command = [sys.executable, "-m", "hypernodes_daft.cli", "inspect", "p.py:pipeline"]
    done = subprocess.run(
        [*command, "--graph", "g.svg"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert ET.fromstring((tmp_path / "g.svg").read_text()) is not None
