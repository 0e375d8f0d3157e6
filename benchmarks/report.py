"""The benchmark report: one markdown file and PNG bar plots from the scripts' JSON results.

    python benchmarks/run_all.py --report docs/benchmarks      # run everything, then report
    python benchmarks/report.py RESULTS_DIR OUT_DIR            # report from existing JSON

`RESULTS_DIR` holds one `<script>.json` per benchmark script (written with `--json`, see
_common.py) and, when run_all.py wrote it, `machine.json` (CPU, memory, library versions,
how long each script took). `OUT_DIR` receives `report.md` (the machine, then per script a
bar plot and a table of every row: time, per item, the baseline and the ratio to it, the
budget and the verdict) and one `<script>.png` per script.

Numbers are printed with 4 significant digits, so the table says what the JSON says.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import textwrap
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

REPORT = "report.md"
MACHINE = "machine.json"
VERSIONED = ("hypernodes-daft", "daft", "ray", "pyarrow", "hypernodes", "numpy")

# bar colours: what a bar is in its workload
COLOURS = {
    "PASS": "#2e7d32",
    "FAIL": "#c62828",
    "WRONG": "#6a1b9a",
    "judged": "#1565c0",  # a budget, not judged (smoke run)
    "baseline": "#9e9e9e",
    "reported": "#64b5f6",
}
LEGEND = {
    "PASS": "hypernodes_daft, budget met",
    "FAIL": "hypernodes_daft, budget missed",
    "WRONG": "wrong results",
    "judged": "has a budget (smoke run: not judged)",
    "baseline": "baseline (same run)",
    "reported": "reported, no budget",
}


# -- machine ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """This machine and the installed versions, as run_all.py records them with the results."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# -- reading ---------------------------------------------------------------------------------


def load_results(results: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scripts' JSON documents (sorted by script name) and the machine record."""
    documents = []
    for path in sorted(results.glob("*.json")):
        if path.name == MACHINE:
            continue
        document = json.loads(path.read_text())
        document.setdefault("script", f"{path.stem}.py")
        document["_stem"] = path.stem
        documents.append(document)
    machine_path = results / MACHINE
    machine = json.loads(machine_path.read_text()) if machine_path.exists() else {}
    return documents, machine


# -- formatting ------------------------------------------------------------------------------


def fmt_seconds(seconds: float | None) -> str:
    """4 significant digits in s, ms or us: `0.1025 s`, `14.58 ms`, `2.712 us`."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.4g} s" if seconds < 1000 else f"{seconds:.0f} s"
    if seconds >= 0.1:
        return f"{seconds:.4f} s"
    if seconds >= 1e-3:
        return f"{_sig(seconds * 1e3)} ms"
    return f"{_sig(seconds * 1e6)} us"


def fmt_per_item(per_item_us: float | None) -> str:
    if per_item_us is None:
        return "-"
    return fmt_seconds(per_item_us / 1e6)


def fmt_ratio(ratio: float | None, budget: dict[str, Any] | None) -> str:
    if ratio is None:
        return "-"
    text = f"{_sig(ratio)}x"
    if budget and budget.get("kind") == "speedup_min" and ratio > 0:
        text += f" ({_sig(1 / ratio)}x faster)"
    return text


def _sig(value: float) -> str:
    """4 significant digits, never in exponent notation."""
    if value == 0:
        return "0"
    digits = max(0, 3 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- the markdown ------------------------------------------------------------------------------


def render(documents: list[dict[str, Any]], machine: dict[str, Any], plots: dict[str, str]) -> str:
    """The whole report as markdown; `plots` maps a script stem to its PNG's file name."""
    lines = ["<!-- generated by benchmarks/report.py; do not edit by hand -->", ""]
    lines += _header(documents, machine)
    lines += _machine_table(documents, machine)
    lines += _summary(documents, machine)
    for document in documents:
        lines += _section(document, machine, plots.get(document["_stem"]))
    return "\n".join(lines).rstrip() + "\n"


def _header(documents: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    smoke = machine.get("smoke", any(d.get("smoke") for d in documents))
    created = machine.get("finished") or max((d.get("created", "") for d in documents), default="")
    kind = (
        "**Smoke run**: tiny sizes, one repeat, budgets not judged (verdict `smoke`); the "
        "times only show that every script works."
        if smoke
        else "**Full run**: the sizes and repeats each script documents; budgets judged."
    )
    lines = [f"Produced {created or 'at an unknown time'}. {kind}"]
    if machine.get("total_seconds") is not None:
        lines[-1] += f" The whole run took {machine['total_seconds'] / 60:.1f} min."
    return [*lines, ""]


def _machine_table(documents: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    first = documents[0] if documents else {}
    versions = machine.get("versions") or {}
    rows = [
        ("CPUs", machine.get("cpu_count", first.get("cpu_count"))),
        ("CPU model", machine.get("cpu_model")),
        ("memory", f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else None),
        ("platform", machine.get("platform", first.get("platform"))),
        ("Python", machine.get("python", first.get("python"))),
    ]
    rows += [(name, version) for name, version in versions.items()]
    lines = ["### The machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows if value is not None]
    return [*lines, ""]


def _summary(documents: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    verdicts: dict[str, int] = {}
    for document in documents:
        for row in document["rows"]:
            if row.get("budget") or row.get("verdict") == "WRONG":
                verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
    lines = ["### Summary", "", f"Rows with a budget, by verdict: {counts}."]
    failed = [s for s, code in (machine.get("exit_codes") or {}).items() if code]
    missing = [s for s in machine.get("scripts", []) if s not in {d["script"] for d in documents}]
    if failed:
        lines.append(f"Scripts that exited non-zero: {', '.join(failed)}.")
    if missing:
        lines.append(f"Scripts that wrote no results: {', '.join(missing)}.")
    lines += ["", "| script | benchmark | rows | time to run |", "|---|---|---:|---:|"]
    durations = machine.get("durations") or {}
    for document in documents:
        took = durations.get(document["script"])
        lines.append(
            f"| `{document['script']}` | {_cell(document['benchmark'])} "
            f"| {len(document['rows'])} | {f'{took:.0f} s' if took is not None else '-'} |"
        )
    return [*lines, ""]


def _section(document: dict[str, Any], machine: dict[str, Any], plot: str | None) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in document.get("load_average") or [])
    mode = "smoke run" if document.get("smoke") else f"best of {document.get('repeat')}"
    lines = [
        f"### {document['benchmark']}",
        "",
        f"`benchmarks/{document['script']}`: {mode}; load average at the end "
        f"{load or 'unknown'}; {document.get('created', '')}.",
        "",
    ]
    if plot:
        lines += [f"![{_cell(document['benchmark'])}]({plot})", ""]
    lines += [
        "| workload | variant | time | per item | baseline | ratio | budget | verdict |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for row in document["rows"]:
        lines.append("| " + " | ".join(_cell(c) for c in _cells(row)) + " |")
    notes = sorted({f"- {r['variant']}: {r['note']}" for r in document["rows"] if r.get("note")})
    if notes:
        lines += ["", "Notes:", "", *(_cell(n) for n in notes)]
    return [*lines, ""]


def _cells(row: dict[str, Any]) -> list[str]:
    """A row's table cells: workload, variant, time, per item, baseline, ratio, budget,
    verdict (FAIL and WRONG in bold)."""
    budget = row.get("budget")
    verdict = row["verdict"]
    return [
        row["workload"],
        row["variant"],
        fmt_seconds(row.get("seconds")),
        fmt_per_item(row.get("per_item_us")),
        row.get("baseline") or "-",
        fmt_ratio(row.get("ratio"), budget),
        budget["text"] if budget else "-",
        f"**{verdict}**" if verdict in ("FAIL", "WRONG") else verdict,
    ]


# -- the plots -------------------------------------------------------------------------------


def bars(rows: Iterable[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(variant, seconds, category) per measured variant of one workload, in row order.

    A variant measured once but judged against two baselines is one bar; its category is
    its worst verdict when it has a budget, "baseline" when another row is compared to it.
    """
    rows = list(rows)
    baselines = {r["baseline"] for r in rows if r.get("baseline")}
    order: dict[str, tuple[float, set[str]]] = {}
    for row in rows:
        if row.get("seconds") is None:
            continue
        seconds, verdicts = order.setdefault(row["variant"], (row["seconds"], set()))
        if row.get("budget") or row.get("verdict") == "WRONG":
            verdicts.add(row["verdict"])
    result = []
    for variant, (seconds, verdicts) in order.items():
        if verdicts:
            category = next((v for v in ("WRONG", "FAIL", "PASS") if v in verdicts), "judged")
        elif variant in baselines:
            category = "baseline"
        else:
            category = "reported"
        result.append((variant, seconds, category))
    return result


def plot(document: dict[str, Any], path: Path) -> bool:
    """One PNG: a horizontal bar chart per workload of the script. False when nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads: dict[str, list[dict[str, Any]]] = {}
    for row in document["rows"]:
        workloads.setdefault(row["workload"], []).append(row)
    panels = [(w, b) for w, rows in workloads.items() if (b := bars(rows))]
    if not panels:
        return False
    heights = [0.42 * len(b) + 1.0 for _, b in panels]
    figure, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9.5, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
        squeeze=False,
    )
    used: set[str] = set()
    for axis, (workload, entries) in zip(axes[:, 0], panels, strict=True):
        _panel(axis, workload, entries)
        used.update(c for _, _, c in entries)
    handles = [
        matplotlib.patches.Patch(color=COLOURS[c], label=LEGEND[c]) for c in COLOURS if c in used
    ]
    figure.suptitle(document["benchmark"], fontsize=11)
    columns = min(3, len(handles))
    figure.legend(handles=handles, loc="outside lower center", ncol=columns, fontsize=8)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _panel(axis: Any, workload: str, entries: list[tuple[str, float, str]]) -> None:
    labels = [textwrap.fill(v, 44) for v, _, _ in entries]
    values = [s for _, s, _ in entries]
    positions = range(len(entries))
    axis.barh(positions, values, color=[COLOURS[c] for _, _, c in entries])
    axis.set_yticks(list(positions), labels, fontsize=7)
    axis.invert_yaxis()
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        axis.set_xscale("log")
    axis.set_title(textwrap.fill(workload, 90), fontsize=9, loc="left")
    axis.set_xlabel("seconds (best of the repeats)", fontsize=7)
    axis.tick_params(axis="x", labelsize=7)
    for position, value in zip(positions, values, strict=True):
        axis.annotate(
            f" {fmt_seconds(value)}",
            (value, position),
            va="center",
            fontsize=7,
            annotation_clip=False,
        )
    axis.margins(x=0.18)


# -- entry points ------------------------------------------------------------------------------


def write_report(results: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Read the JSON under `results`, write `report.md` and the PNGs under `out`."""
    results, out = Path(results), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents, machine = load_results(results)
    if not machine:  # results from elsewhere: describe this machine, say so
        machine = {**machine_info(), "versions_note": "versions at report time"}
    plots = {}
    for document in documents:
        name = f"{document['_stem']}.png"
        if plot(document, out / name):
            plots[document["_stem"]] = name
    path = out / REPORT
    path.write_text(render(documents, machine, plots))
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    print(write_report(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
