"""map_executor="parallel" as users run it: from a plain script without a main guard, from
`python -c`, from stdin and with `python -m`; and when a worker process dies mid-map."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from hypernodes_daft import HypernodesEngine, Pipeline, WorkerDiedError, node

# A 0.4-style script: no `if __name__ == "__main__":`. A closure over a module global, a
# nested pipeline and a DiskCache all travel to the workers; the body notes each run of it.
SCRIPT = """
import json, sys
from hypernodes_daft import DiskCache, HypernodesEngine, Pipeline, node

with open(sys.argv[1] if len(sys.argv) > 1 else {marks!r}, "a") as marks:
    marks.write("body ran\\n")

factor = 3
scale = lambda value: value * factor

@node(output_name="y")
def double(x: int) -> int:
    return x * 2

@node(output_name="z")
def scaled(y: int) -> int:
    return scale(y)

inner = Pipeline(nodes=[scaled], name="inner")
engine = HypernodesEngine(map_executor="parallel", max_workers=2)
pipeline = Pipeline(nodes=[double, inner.as_node()], engine=engine, cache=DiskCache({cache!r}))
print(json.dumps(list(pipeline.map(inputs={{"x": [1, 2, 3, 4, 5]}}, map_over="x"))))
"""

EXPECTED = [{"y": 2 * x, "z": 6 * x} for x in [1, 2, 3, 4, 5]]


def run_python(args: list[str], tmp_path: Path, stdin: str | None = None) -> list[dict]:
    done = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["file", "-c", "stdin", "-m"])
def test_a_script_without_a_main_guard_maps_in_parallel_and_runs_once(tmp_path, how):
    """Each worker is a fresh interpreter that never imports the user's main module: the
    script's body runs once (multiprocessing's spawn re-ran it in every worker, then failed
    with BrokenProcessPool in its bootstrapping phase), and the results are right, twice
    (the second run from the cache)."""
    marks = tmp_path / "marks.txt"
    source = SCRIPT.format(marks=str(marks), cache=str(tmp_path / "cache"))
    (tmp_path / "user_script.py").write_text(source)
    args = {
        "file": ["user_script.py"],
        "-c": ["-c", source],
        "stdin": ["-"],
        "-m": ["-m", "user_script"],
    }[how]
    stdin = source if how == "stdin" else None
    for run in (1, 2):
        assert run_python(args, tmp_path, stdin) == EXPECTED
        assert marks.read_text().splitlines() == ["body ran"] * run


def die_on_five(x: int, how: str) -> int:
    if x == 5:
        if how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


@pytest.fixture
def crashing():
    crash = node(output_name="y")(die_on_five)
    with HypernodesEngine(map_executor="parallel", max_workers=2) as engine:
        yield Pipeline(nodes=[crash], engine=engine)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_dead_worker_is_named_by_its_item_and_the_next_map_works(crashing, how):
    with pytest.raises(WorkerDiedError) as raised:
        crashing.map(inputs={"x": list(range(12)), "how": how}, map_over="x")
    error = raised.value
    assert isinstance(error, BrokenProcessPool)  # what the pool itself raises
    assert error.item_index == 5
    assert "item 5" in str(error) and "x=5" in str(error)
    expected_code = "3" if how == "exit" else "SIGKILL"
    assert expected_code in str(error)
    again = crashing.map(inputs={"x": [1, 2, 3], "how": how}, map_over="x")
    assert again == [{"y": 10}, {"y": 20}, {"y": 30}]


def test_under_collect_a_dead_worker_costs_only_its_item(crashing):
    """The other items, those of the chunks lost with the worker included, are run again
    on a new pool and kept; the item that kills its worker is recorded."""
    xs = list(range(40))
    results = crashing.map(inputs={"x": xs, "how": "exit"}, map_over="x", on_error="collect")
    assert [r.index for r in results.errors] == [5]
    assert results.errors[0].error_type == "WorkerDiedError"
    assert results.ok == [{"y": 10 * x} for x in xs if x != 5]


def test_a_parallel_map_runs_in_a_jupyter_kernel(tmp_path):
    """Functions defined in a notebook cell travel to the workers, which never import the
    kernel's main module."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "from hypernodes_daft import HypernodesEngine, Pipeline, node\n"
        "@node(output_name='y')\n"
        "def square(x: int) -> int:\n"
        "    return x * x",
        "engine = HypernodesEngine(map_executor='parallel', max_workers=2)\n"
        "print(list(Pipeline(nodes=[square], engine=engine).map("
        "inputs={'x': [1, 2, 3]}, map_over='x')))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    printed = notebook.cells[1].outputs[0]["text"].strip()
    assert printed == "[{'y': 1}, {'y': 4}, {'y': 9}]"
