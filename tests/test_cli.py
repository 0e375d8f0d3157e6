"""The `hypernodes-daft` command, run as a real process on real Parquet files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

PIPELINE = """
from hypernodes_daft import Pipeline, node

@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x

@node(output_name="labelled")
def label(doubled: int, prefix: str = "n") -> str:
    return f"{prefix}{doubled}"

pipeline = Pipeline(nodes=[double, label])
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pipe.py").write_text(textwrap.dedent(PIPELINE))
    data = tmp_path / "data"
    data.mkdir()
    for part in range(3):
        ids = list(range(part * 10, part * 10 + 10))
        pq.write_table(pa.table({"id": ids, "x": [i * 3 for i in ids]}), data / f"{part}.parquet")
    return tmp_path


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hypernodes_daft.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_run_maps_over_the_dataset_and_writes_parquet(project, engine):
    done = cli(
        "run", "pipe.py:pipeline", "--input", "data/*.parquet", "--output", "out",
        "--set", "prefix=v", "--engine", engine, cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rows:     30" in done.stdout and "mapped:   x" in done.stdout
    table = pq.read_table(project / "out").sort_by("x")
    assert table["x"].to_pylist() == [i * 3 for i in range(30)]
    assert table["doubled"].to_pylist() == [i * 6 for i in range(30)]
    assert table["labelled"].to_pylist() == [f"v{i * 6}" for i in range(30)]


def test_run_with_a_cache_computes_nothing_the_second_time(project):
    args = ["run", "pipe.py:pipeline", "--input", "data", "--output", "out", "--cache", "c"]
    assert cli(*args, cwd=project).returncode == 0
    entries = sorted(p.name for p in (project / "c").glob("*/*.pkl"))
    assert len(entries) == 60  # 30 rows x 2 nodes
    assert cli(*args, cwd=project).returncode == 0
    assert sorted(p.name for p in (project / "c").glob("*/*.pkl")) == entries


def test_inspect_prints_nodes_inputs_and_outputs(project):
    done = cli("inspect", "pipe.py:pipeline", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "inputs:  prefix, x" in done.stdout
    assert "double(x) -> doubled" in done.stdout and "label(doubled, prefix)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nofile.py:pipeline", "--input", "data", "--output", "o"], "no such file"),
        (["run", "pipe.py:missing", "--input", "data", "--output", "o"], "no attribute"),
        (["run", "pipe.py:pipeline", "--input", "data", "--output", "o", "--map-over", "y"],
         "not columns of the dataset"),
        (["run", "pipe.py:pipeline", "--input", "data", "--output", "o", "--set", "oops"],
         "name=value"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_a_nonzero_exit(project, args, message):
    done = cli(*args, cwd=project)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(project):
    args = ["run", "pipe.py:missing", "--input", "data", "--output", "o", "--debug"]
    assert "Traceback" in cli(*args, cwd=project).stderr


def test_missing_input_column_is_named(project):
    (project / "needs.py").write_text(
        "from hypernodes_daft import Pipeline, node\n"
        "@node(output_name='y')\n"
        "def f(x: int, z: int) -> int:\n"
        "    return x + z\n"
        "pipeline = Pipeline(nodes=[f])\n"
    )
    done = cli("run", "needs.py:pipeline", "--input", "data", "--output", "o", cwd=project)
    assert done.returncode == 1 and "the pipeline needs ['z']" in done.stderr


def test_console_script_is_installed():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("hypernodes-daft") == "hypernodes_daft.cli:main"


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_run_shows_progress_and_a_per_node_summary_with_cache_hits(project, engine):
    args = ("run", "pipe.py:pipeline", "--input", "data/*.parquet", "--output", "out",
            "--engine", engine, "--cache", "cache")  # fmt: skip
    first = cli(*args, cwd=project)
    assert first.returncode == 0, first.stderr
    assert "items" in first.stderr and "double" in first.stderr  # the progress bars
    second = cli(*args, cwd=project)
    assert second.returncode == 0, second.stderr
    rows = {
        cells[0]: cells[1:3]
        for line in second.stdout.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    assert rows["double"] == ["0", "30"] and rows["label"] == ["0", "30"], second.stdout
    quiet = cli(*args, "--no-progress", cwd=project)
    assert quiet.returncode == 0 and "items" not in quiet.stderr


def test_a_column_of_the_wrong_type_is_one_line_before_anything_runs(project):
    strings = project / "strings"
    strings.mkdir()
    pq.write_table(pa.table({"x": ["a", "b"]}), strings / "part.parquet")
    done = cli("run", "pipe.py:pipeline", "--input", "strings", "--output", "o", cwd=project)
    assert done.returncode == 1
    assert "column 'x' holds String values, but node 'double' takes x: int" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (project / "o").exists()
