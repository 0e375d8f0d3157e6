"""The `hypernodes-daft` command, run as a real process on real Parquet files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hypernodes_daft.cache import DiskCache, call_key
from hypernodes_daft.cli import main
from hypernodes_daft.resources import format_bytes

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


def test_inspect_shows_what_each_node_asks_for(tmp_path):
    (tmp_path / "models.py").write_text(
        textwrap.dedent(
            """
            from hypernodes_daft import Pipeline, node

            @node(output_name="vector", cpus=2, memory="1GiB", resources={"model_host": 1})
            def embed(text: str) -> list:
                return [len(text)]

            pipeline = Pipeline(nodes=[embed])
            """
        )
    )
    done = cli("inspect", "models.py:pipeline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "embed(text) -> vector  [cpus=2, memory=1GiB, model_host=1]" in done.stdout


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


FAILING = """
from hypernodes_daft import Pipeline, node

@node(output_name="checked")
def check(x: int) -> int:
    if x % 4 == 0:
        raise ValueError(f"x={x} is a multiple of 4")
    return x

@node(output_name="labelled")
def label(checked: int) -> str:
    return f"n{checked}"

pipeline = Pipeline(nodes=[check, label])
"""
FAILED = {i * 3 for i in range(30) if i * 3 % 4 == 0}  # x = 0, 12, ..., 84: 8 of 30 rows


def errors_column(stdout: str) -> dict[str, str]:
    """The summary table's errors column, per node."""
    header, *rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("| ") and not line.startswith("|:")
    ]
    return {row[0]: row[header.index("errors")] for row in rows}


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_on_error_collect_writes_every_row_with_the_failures_in_the_error_column(project, engine):
    (project / "failing.py").write_text(textwrap.dedent(FAILING))
    done = cli(
        "run", "failing.py:pipeline", "--input", "data", "--output", "out",
        "--engine", engine, "--on-error", "collect", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rows:     30" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last == "8 of 30 rows failed (node 'check': ValueError x8); see the _error column"
    assert errors_column(done.stdout) == {"check": "8", "label": "0"}
    rows = sorted(pq.read_table(project / "out").to_pylist(), key=lambda row: row["x"])
    assert [row["x"] for row in rows] == [i * 3 for i in range(30)]
    for row in rows:
        x, error = row["x"], row["_error"]
        if x in FAILED:
            assert (row["checked"], row["labelled"]) == (None, None)
            assert error["node"] == "check" and error["path"] == "check"
            assert error["error_type"] == "ValueError" and error["on_error"] == "collect"
            assert error["message"] == f"x={x} is a multiple of 4"
            assert error["attempts"] == 1 and error["inputs"] == f"x={x}"
        else:
            assert error is None and (row["checked"], row["labelled"]) == (x, f"n{x}")


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_on_error_skip_writes_only_the_rows_that_succeeded(project, engine):
    (project / "failing.py").write_text(textwrap.dedent(FAILING))
    done = cli(
        "run", "failing.py:pipeline", "--input", "data/*.parquet", "--output", "out",
        "--engine", engine, "--on-error", "skip", "--no-progress", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rows:     22" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last == "8 of 30 rows failed; 8 left out of the output (skip)"
    assert errors_column(done.stdout)["check"] == "8"
    table = pq.read_table(project / "out").sort_by("x")
    kept = [i * 3 for i in range(30) if i * 3 not in FAILED]
    assert table["x"].to_pylist() == kept and table["checked"].to_pylist() == kept
    assert table["labelled"].to_pylist() == [f"n{x}" for x in kept]
    assert table["_error"].null_count == len(kept)  # the column is there, empty


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_on_error_raise_is_a_one_line_error_and_a_nonzero_exit(project, engine):
    (project / "failing.py").write_text(textwrap.dedent(FAILING))
    done = cli(
        "run", "failing.py:pipeline", "--input", "data", "--output", "out",
        "--engine", engine, "--on-error", "raise", cwd=project,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "rows failed" not in done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("hypernodes-daft")]
    assert len(ours) == 1, done.stderr  # (Daft's native runner may log a line of its own)
    assert "node 'check' raised ValueError: x=" in ours[0] and "is a multiple of 4" in ours[0]


@pytest.mark.parametrize("engine", ["daft", "local"])
def test_a_node_set_to_skip_leaves_its_rows_out_while_the_run_collects(project, engine):
    (project / "mixed.py").write_text(
        textwrap.dedent(FAILING)
        .replace(
            '@node(output_name="labelled")',
            '@node(output_name="labelled", on_error="skip")',
        )
        .replace('return f"n{checked}"', 'return f"n{100 // (checked % 5)}"')
    )  # label fails where x % 5 == 0 (x = 15, 30, 45, 75: not multiples of 4)
    done = cli(
        "run", "mixed.py:pipeline", "--input", "data", "--output", "out",
        "--engine", engine, "--on-error", "collect", "--no-progress", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "12 of 30 rows failed (node 'check': ValueError x8); see the _error column;"
        " 4 left out of the output (skip)"
    )
    table = pq.read_table(project / "out")
    assert table.num_rows == 26 and not {15, 30, 45, 75} & set(table["x"].to_pylist())
    assert sorted(e["node"] for e in table["_error"].to_pylist() if e) == ["check"] * 8


# -- hypernodes-daft cache info | prune | clear ---------------------------------------------


def put_entries(location: str | Path, count: int) -> list[Path]:
    """`count` entries of one size; their files, in the order put (local caches)."""
    cache = DiskCache(location)
    keys = [call_key("node-lineage", {"i": i}) for i in range(count)]
    for key in keys:
        cache.put(key, b"x" * 1000)
    return [Path(location, key[:2], f"{key}.pkl") for key in keys]


def age(files: list[Path], seconds: float) -> None:
    """Mark `files` last used `seconds` ago (a local entry's use is its mtime)."""
    then = time.time() - seconds
    for file in files:
        os.utime(file, (then, then))


def remaining(location: Path) -> set[Path]:
    return set(location.glob("*/*.pkl"))


def lines(text: str) -> dict[str, str]:
    """`name:   value` lines -> {name: value}."""
    return dict(tuple(part.strip() for part in line.split(":", 1)) for line in text.splitlines())


def test_cache_info_prints_entries_size_and_the_oldest_and_newest_use(tmp_path, capsys):
    files = put_entries(tmp_path, 3)
    os.utime(files[0], (1_000_000_000, 1_000_000_000))
    assert main(["cache", "info", str(tmp_path)]) == 0
    shown = lines(capsys.readouterr().out)
    assert shown["location"] == str(tmp_path) and shown["entries"] == "3"
    assert shown["size"] == format_bytes(sum(f.stat().st_size for f in files))
    assert shown["oldest"] == "2001-09-09T01:46:40+00:00"  # in UTC, to the second
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", shown["newest"])


def test_cache_info_of_an_empty_cache(tmp_path, capsys):
    assert main(["cache", "info", str(tmp_path)]) == 0
    shown = lines(capsys.readouterr().out)
    assert (shown["entries"], shown["size"], shown["oldest"]) == ("0", "0B", "-")


def test_cache_prune_older_than_removes_the_entries_not_used_since(tmp_path, capsys):
    files = put_entries(tmp_path, 5)
    age(files[:2], 2 * 86400)
    age(files[2:3], 20 * 3600)  # used within the day: kept
    assert main(["cache", "prune", str(tmp_path), "--older-than", "1d"]) == 0
    shown = lines(capsys.readouterr().out)
    assert shown["removed"] == "2 entries"
    assert shown["remaining"] == f"3 entries, {format_bytes(3 * files[4].stat().st_size)}"
    assert remaining(tmp_path) == set(files[2:])


def test_cache_prune_max_size_removes_the_least_recently_used_first(tmp_path, capsys):
    files = put_entries(tmp_path, 5)
    for i, file in enumerate(files):
        age([file], (5 - i) * 100)  # files[0] is the least recently used
    size = files[0].stat().st_size
    bound = 3 * size
    assert main(["cache", "prune", str(tmp_path), "--max-size", str(bound)]) == 0
    assert lines(capsys.readouterr().out)["removed"] == "2 entries"
    assert remaining(tmp_path) == set(files[2:])
    assert main(["cache", "prune", str(tmp_path), "--max-size", str(bound - 1)]) == 0
    assert lines(capsys.readouterr().out)["removed"] == "1 entry"
    assert remaining(tmp_path) == set(files[3:])


def test_cache_clear_removes_every_entry_and_says_how_many(tmp_path, capsys):
    put_entries(tmp_path, 4)
    assert main(["cache", "clear", str(tmp_path)]) == 0
    assert lines(capsys.readouterr().out)["removed"] == "4 entries"
    assert remaining(tmp_path) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "{cache}", "--older-than", "7 days"],
         "--older-than '7 days' is not a duration (use a number and a unit: 30s, 15m, 12h, "
         "7d, 2w)"),
        (["prune", "{cache}", "--older-than", "7"], "'7' is not a duration"),
        (["prune", "{cache}"], "cache prune needs --older-than DURATION and/or --max-size SIZE"),
        (["prune", "{cache}", "--max-size", "10 gigs"], "max_size '10 gigs' is not a size"),
        (["info", "{missing}"], "no cache at {missing}"),
        (["clear", "{missing}"], "no cache at {missing}"),
        (["prune", "{missing}", "--older-than", "1d"], "no cache at {missing}"),
    ],
)  # fmt: skip
def test_cache_errors_are_one_line_and_a_nonzero_exit(tmp_path, capsys, args, message):
    files = put_entries(tmp_path / "cache", 2)
    places = {"cache": tmp_path / "cache", "missing": tmp_path / "missing"}
    assert main(["cache", *(a.format(**places) for a in args)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("hypernodes-daft: error: ") and message.format(**places) in error
    assert len(error.strip().splitlines()) == 1
    assert remaining(tmp_path / "cache") == set(files)  # nothing removed
    assert not (tmp_path / "missing").exists()  # nor a cache made where there was none


def test_cache_info_prune_and_clear_on_s3(s3_url, capsys):
    cache = DiskCache(s3_url)
    for i in range(4):
        cache.put(call_key("node-lineage", {"i": i}), b"x" * 1000)
    size = cache.info().bytes // 4
    assert main(["cache", "info", s3_url]) == 0
    shown = lines(capsys.readouterr().out)
    assert shown["location"] == s3_url and shown["entries"] == "4"
    assert shown["size"] == format_bytes(4 * size)
    assert main(["cache", "prune", s3_url, "--older-than", "1h"]) == 0  # all written just now
    assert lines(capsys.readouterr().out)["removed"] == "0 entries"
    assert main(["cache", "prune", s3_url, "--max-size", str(2 * size)]) == 0
    shown = lines(capsys.readouterr().out)
    assert shown["removed"] == "2 entries"
    assert shown["remaining"] == f"2 entries, {format_bytes(2 * size)}"
    assert main(["cache", "clear", s3_url]) == 0
    assert lines(capsys.readouterr().out)["removed"] == "2 entries"
    assert len(cache) == 0


def test_cache_info_of_a_missing_bucket_is_one_line_naming_it(s3_url, capsys):
    url = "s3://no-such-bucket-here/cache"
    assert main(["cache", "info", url]) == 1
    error = capsys.readouterr().err
    assert error.strip() == (
        f"hypernodes-daft: error: DiskCache({url!r}): the bucket 'no-such-bucket-here' "
        "does not exist"
    )


def test_cache_info_of_an_unreachable_endpoint_is_one_line_without_secrets(monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    assert main(["cache", "info", "s3://some-bucket/x"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "s3://some-bucket/x" in captured.err
    assert "do-not-print-me" not in captured.err + captured.out
