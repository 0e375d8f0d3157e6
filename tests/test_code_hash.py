"""A node's cache key covers the user code it reaches: editing a helper re-runs the nodes
that call it (and what depends on them), and only those. Each run is a new process, as
when a user edits a file and runs the script again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypernodes_daft import node
from hypernodes_daft._hashing import reached_code

HELPERS = """
def normalize(v):
    return _inner(v) * 2


def _inner(v):
    return v + 1


class Scaler:
    factor = 10

    def apply(self, v):
        return v * self.factor


def scale(v):
    return Scaler().apply(v)
"""

SCRIPT = """
import json
import sys

import helpers
from helpers import scale
from hypernodes_daft import DiskCache, Pipeline, node

CALLS = []


@node(output_name="a")
def uses_module_attribute(x):
    CALLS.append("uses_module_attribute")
    return helpers.normalize(x)


@node(output_name="b")
def uses_imported_name(a):
    CALLS.append("uses_imported_name")
    return scale(a)


@node(output_name="c")
def uses_helper_defined_below(x):
    CALLS.append("uses_helper_defined_below")
    return local_helper(x)


@node(output_name="d")
def uses_the_standard_library(x):
    CALLS.append("uses_the_standard_library")
    return json.dumps(x)


def local_helper(v):
    return v + 1


nodes = [uses_module_attribute, uses_imported_name, uses_helper_defined_below,
         uses_the_standard_library]
pipeline = Pipeline(nodes=nodes, cache=DiskCache(sys.argv[1]))
outputs = pipeline.run(inputs={"x": 3})
print(json.dumps({"calls": CALLS, "outputs": outputs}))
"""


def run_script(tmp_path: Path) -> tuple[set[str], dict]:
    done = subprocess.run(
        [sys.executable, "main.py", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return set(result["calls"]), result["outputs"]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "main.py").write_text(SCRIPT)
    return tmp_path


ALL = {
    "uses_module_attribute",
    "uses_imported_name",
    "uses_helper_defined_below",
    "uses_the_standard_library",
}


def test_editing_a_helper_reruns_exactly_its_callers_and_their_descendants(project):
    assert run_script(project) == (ALL, {"a": 8, "b": 80, "c": 4, "d": "3"})
    assert run_script(project)[0] == set()  # nothing changed: every node from the cache

    # a helper reached through another helper of a user module (`helpers.normalize`)
    edit(project / "helpers.py", "return v + 1", "return v + 2")
    calls, outputs = run_script(project)
    assert calls == {"uses_module_attribute", "uses_imported_name"}
    assert outputs["a"] == 10 and outputs["b"] == 100

    # a method of a class the imported helper uses
    edit(project / "helpers.py", "factor = 10", "factor = 100")
    calls, outputs = run_script(project)
    assert calls == {"uses_imported_name"} and outputs["b"] == 1000

    # a helper of the script itself, defined below the node that calls it
    edit(project / "main.py", "    return v + 1\n", "    return v + 5\n")
    calls, outputs = run_script(project)
    assert calls == {"uses_helper_defined_below"} and outputs["c"] == 8


def test_the_standard_library_and_installed_packages_are_not_walked():
    import textwrap as stdlib_module

    import pyarrow

    @node(output_name="y")
    def uses_libraries(x: str) -> str:
        return stdlib_module.dedent(x) + str(pyarrow.array([1]).type)

    assert reached_code(uses_libraries.func) == []


def test_a_node_keeps_its_fingerprint_in_another_process(tmp_path):
    """A worker may not read the source the driver read (here the script is gone, as on
    a cluster node without the user's files): the fingerprint travels with the node, so
    cache keys agree in every process."""
    script = tmp_path / "make_node.py"
    script.write_text(
        "import sys, cloudpickle\n"
        "from hypernodes_daft import node\n"
        "@node(output_name='y')\n"
        "def double(x):\n"
        "    return x * 2\n"
        "open(sys.argv[1], 'wb').write(cloudpickle.dumps(double))\n"
        "print(double.code_hash)\n"
    )
    blob = tmp_path / "node.pickle"
    made = subprocess.run(
        [sys.executable, str(script), str(blob)], capture_output=True, text=True, check=True
    )
    script.unlink()
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import cloudpickle; print(cloudpickle.loads(open({str(blob)!r}, 'rb').read())"
            ".code_hash)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert read.stdout.strip() == made.stdout.strip() != ""
