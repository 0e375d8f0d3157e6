"""benchmarks/report.py on a small synthetic result set (no benchmark runs): the markdown
holds every row with the JSON's numbers, the machine, a verdict count, and a PNG per script;
run_all.py passes `--report DIR` on to the scripts as `--json DIR/results/<script>.json`."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # run_all imports report, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


report = load("report")
run_all = load("run_all")


def row(workload, variant, seconds, items=1, baseline=None, ratio=None, budget=None, verdict="-"):
    return {
        "workload": workload,
        "variant": variant,
        "seconds": seconds,
        "times": [seconds] if seconds is not None else [],
        "items": items,
        "per_item_us": seconds / items * 1e6 if seconds is not None else None,
        "baseline": baseline,
        "ratio": ratio,
        "budget": budget,
        "verdict": verdict,
        "note": "",
    }


def budget(kind, limit, text):
    return {"kind": kind, "limit": limit, "text": text}


DOCUMENTS = {
    "alpha": {
        "benchmark": "alpha: a chain",
        "script": "alpha.py",
        "smoke": False,
        "repeat": 5,
        "cpu_count": 2,
        "load_average": [0.5, 0.25, 0.125],
        "python": "3.11.7",
        "platform": "Linux-synthetic",
        "created": "2026-01-02T03:04:05+0000",
        "rows": [
            row("chain, 10,000 items", "plain loop", 0.0012345, 10_000),
            row(
                "chain, 10,000 items",
                "hypernodes_daft map",
                0.027182,
                10_000,
                "plain loop",
                0.027182 / 0.0012345,
                budget("us_per_item_max", 5, "<= 5 us/item"),
                "PASS",
            ),
            row("async, 50 items", "asyncio.gather", 0.10123, 50),
            row(
                "async, 50 items",
                "HypernodesEngine(map_executor='async')",
                0.1234,
                50,
                "asyncio.gather",
                0.1234 / 0.10123,
                budget("ratio_max", 1.05, "<= 1.05x asyncio.gather"),
                "FAIL",
            ),
            row("skipped", "an unsupported engine", None, verdict="unsupported"),
        ],
    },
    "beta": {
        "benchmark": "beta: a cache",
        "script": "beta.py",
        "smoke": False,
        "repeat": 3,
        "cpu_count": 2,
        "load_average": [1.0, 1.0, 1.0],
        "python": "3.11.7",
        "platform": "Linux-synthetic",
        "created": "2026-01-02T03:05:06+0000",
        "rows": [
            row("cold and warm", "cold", 26.5, 20_000),
            row(
                "cold and warm",
                "warm",
                0.3321,
                20_000,
                "cold",
                0.3321 / 26.5,
                budget("speedup_min", 20, ">= 20x faster than cold"),
                "PASS",
            ),
        ],
    },
}
MACHINE = {
    "cpu_count": 2,
    "cpu_model": "Synthetic CPU",
    "memory_gib": 23.5,
    "platform": "Linux-synthetic",
    "python": "3.11.7",
    "versions": {"daft": "0.7.26", "ray": "2.60.0", "hypernodes-daft": "0.1.0"},
    "smoke": False,
    "finished": "2026-01-02T03:06:00+0000",
    "total_seconds": 300.0,
    "scripts": ["alpha.py", "beta.py", "gamma.py"],
    "durations": {"alpha.py": 12.0, "beta.py": 288.0},
    "exit_codes": {"alpha.py": 0, "beta.py": 0, "gamma.py": 1},
}


@pytest.fixture
def written(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for stem, document in DOCUMENTS.items():
        (results / f"{stem}.json").write_text(json.dumps(document))
    (results / report.MACHINE).write_text(json.dumps(MACHINE))
    out = tmp_path / "out"
    path = report.write_report(results, out)
    return out, path.read_text()


_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def seconds_of(cell: str) -> float | None:
    if cell == "-":
        return None
    number, unit = cell.split()
    return float(number) * _UNITS[unit]


def ratio_of(cell: str) -> float | None:
    return None if cell == "-" else float(cell.split("x")[0])


def close(shown: float | None, true: float | None) -> bool:
    if true is None:
        return shown is None
    return shown is not None and abs(shown - true) <= 5e-4 * abs(true)  # 4 significant digits


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """The row table under each `### benchmark` heading, as lists of cells."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading = line[4:]
        elif line.startswith("| ") and heading in {d["benchmark"] for d in DOCUMENTS.values()}:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[0] != "workload":
                found.setdefault(heading, []).append(cells)
    return found


def test_every_row_is_in_the_markdown_with_the_json_numbers(written):
    _, markdown = written
    found = tables(markdown)
    for document in DOCUMENTS.values():
        shown = found[document["benchmark"]]
        assert len(shown) == len(document["rows"])
        for cells, expected in zip(shown, document["rows"], strict=True):
            workload, variant, time, per_item, baseline, ratio, limit, verdict = cells
            assert (workload, variant) == (expected["workload"], expected["variant"])
            assert close(seconds_of(time), expected["seconds"]), (time, expected)
            per_item_s = None if expected["per_item_us"] is None else expected["per_item_us"] / 1e6
            assert close(seconds_of(per_item), per_item_s), (per_item, expected)
            assert baseline == (expected["baseline"] or "-")
            assert close(ratio_of(ratio), expected["ratio"]), (ratio, expected)
            assert limit == (expected["budget"]["text"] if expected["budget"] else "-")
            assert verdict.strip("*") == expected["verdict"]


def test_speedup_budgets_show_how_many_times_faster(written):
    _, markdown = written
    warm = next(c for c in tables(markdown)["beta: a cache"] if c[1] == "warm")
    faster = float(re.search(r"\(([\d.]+)x faster\)", warm[5]).group(1))
    assert close(faster, 26.5 / 0.3321)


def test_the_machine_the_summary_and_failures_are_reported(written):
    _, markdown = written
    for fact in ("| CPUs | 2 |", "| CPU model | Synthetic CPU |", "| memory | 23.5 GiB |",
                 "| platform | Linux-synthetic |", "| Python | 3.11.7 |", "| daft | 0.7.26 |",
                 "| ray | 2.60.0 |"):  # fmt: skip
        assert fact in markdown
    assert "**Full run**" in markdown and "took 5.0 min" in markdown
    assert "Rows with a budget, by verdict: 1 FAIL, 2 PASS." in markdown
    assert "exited non-zero: gamma.py" in markdown and "wrote no results: gamma.py" in markdown
    assert "| `beta.py` | beta: a cache | 2 | 288 s |" in markdown
    assert "**FAIL**" in markdown


def test_one_png_per_script_linked_from_the_markdown(written):
    out, markdown = written
    for stem, document in DOCUMENTS.items():
        png = out / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{document['benchmark']}]({stem}.png)" in markdown


def test_bars_merge_a_variant_judged_twice_and_name_baselines():
    rows = [
        row("w", "base", 1.0),
        row("w", "ours", 0.5, baseline="base", ratio=0.5, budget=budget("ratio_max", 1, ""),
            verdict="PASS"),
        row("w", "ours", 0.5, baseline="other", ratio=2.0, budget=budget("ratio_max", 1, ""),
            verdict="FAIL"),
        row("w", "other", 0.25),
        row("w", "extra", 0.75, baseline="base", ratio=0.75),
    ]  # fmt: skip
    assert report.bars(rows) == [
        ("base", 1.0, "baseline"),
        ("ours", 0.5, "FAIL"),
        ("other", 0.25, "baseline"),
        ("extra", 0.75, "reported"),
    ]


def test_a_smoke_run_says_so(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    smoke = {**DOCUMENTS["alpha"], "smoke": True, "rows": DOCUMENTS["alpha"]["rows"][:2]}
    (results / "alpha.json").write_text(json.dumps(smoke))
    markdown = report.write_report(results, tmp_path / "out").read_text()
    assert "**Smoke run**" in markdown
    assert "| CPUs | " in markdown  # without machine.json: this machine, at report time


def test_run_all_sends_each_script_its_own_json_under_the_report_dir():
    out, args = run_all.split_report(["--smoke", "--report", "docs/benchmarks"])
    assert out == Path("docs/benchmarks")
    assert args == ["--smoke", "--json", str(Path("docs/benchmarks/results"))]
    script = BENCHMARKS / "overhead.py"
    assert run_all.per_script(args, script) == [
        "--smoke",
        "--json",
        str(Path("docs/benchmarks/results/overhead.json")),
    ]
    assert run_all.split_report(["--smoke"]) == (None, ["--smoke"])
    names = [p.name for p in run_all.scripts()]
    assert "report.py" not in names and "run_all.py" not in names and "overhead.py" in names
