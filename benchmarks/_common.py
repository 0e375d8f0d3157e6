"""Shared helpers for the benchmark scripts: arguments, best-of-N timing, budgets, the
markdown table and the JSON rows.

    args = parse_args(__doc__)
    report = Report("overhead", args)
    base = report.add("chain", "plain loop", best_of(loop, repeat=args.repeat), items=n)
    report.add("chain", "engine", best_of(run, repeat=args.repeat), items=n,
               baseline=base, budget=Budget("us_per_item_max", 5))
    sys.exit(report.finish())

Baselines are always measured in the same run; nothing here holds a reference number.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


def check_failure(check: Callable[[], Any]) -> str | None:
    """What `check()` asserted wrong, or None when the results are right."""
    try:
        check()
    except AssertionError as error:
        return str(error) or "check failed"
    return None


@contextlib.contextmanager
def closing(engine: Any) -> Iterator[Any]:
    """`engine`, shut down afterwards when it has pools to release."""
    try:
        yield engine
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()


def call_label(name: str, **options: Any) -> str:
    """`name(option=value, ...)`, as the tables show an engine."""
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"


def parse_args(description: str | None, default_repeat: int = 5) -> argparse.Namespace:
    """`--smoke` (tiny sizes, no verdicts), `--strict` (FAIL exits 1), `--json PATH`,
    `--repeat N` (best-of-N; 1 in smoke mode unless given)."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0] if description else None
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks it runs")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a budget fails")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--repeat", type=int, help=f"best of N (default {default_repeat})")
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.smoke else default_repeat
    return args


@dataclass
class Timing:
    """The best of several timed calls, every time, and the last call's result."""

    seconds: float
    times: list[float]
    result: Any = None


def best_of(
    fn: Callable[[], Any],
    repeat: int,
    warmup: int = 1,
    number: int = 1,
    self_timed: bool = False,
) -> Timing:
    """Call `fn` `warmup` times untimed, then take `repeat` samples timed with
    `time.perf_counter`; a sample calls `fn` `number` times and counts the time per call
    (use `number` > 1 for calls of a few microseconds).

    With `self_timed=True`, `fn` returns `(seconds, result)` and measures itself (to time
    only part of what it does, e.g. the `gather` inside an `asyncio.run`).
    """
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(max(1, repeat)):
        gc.collect()
        if self_timed:
            elapsed, result = fn()
        else:
            calls = range(number)
            start = time.perf_counter()
            for _ in calls:
                result = fn()
            elapsed = (time.perf_counter() - start) / number
        times.append(elapsed)
    return Timing(min(times), times, result)


@dataclass(frozen=True)
class Budget:
    """A limit on a row: `us_per_item_max`, `seconds_max`, `ratio_max` (time / baseline
    time), `speedup_min` (baseline time / time) or `within` (time / baseline time off 1
    by at most the limit, either way: 0.25 for an estimate within 25% of a measurement)."""

    kind: str
    limit: float

    def text(self, baseline: Row | None) -> str:
        against = baseline.variant if baseline else "baseline"
        return {
            "us_per_item_max": f"<= {self.limit:g} us/item",
            "seconds_max": f"<= {self.limit:g} s",
            "ratio_max": f"<= {self.limit:g}x {against}",
            "speedup_min": f">= {self.limit:g}x faster than {against}",
            "within": f"within {self.limit:.0%} of {against}",
        }[self.kind]

    def met(self, row: Row) -> bool:
        if self.kind == "us_per_item_max":
            return row.per_item_us <= self.limit
        if self.kind == "seconds_max":
            return row.seconds <= self.limit
        if row.ratio is None:
            raise ValueError(f"budget {self.kind} on row {row.variant!r} needs a baseline")
        if self.kind == "ratio_max":
            return row.ratio <= self.limit
        if self.kind == "speedup_min":
            return 1 / row.ratio >= self.limit
        if self.kind == "within":
            return abs(row.ratio - 1) <= self.limit
        raise ValueError(f"unknown budget kind {self.kind!r}")


@dataclass
class Row:
    workload: str
    variant: str
    seconds: float | None  # None: not measured (unsupported, skipped)
    items: int = 1
    baseline: Row | None = None
    budget: Budget | None = None
    verdict: str = "-"
    note: str = ""
    times: list[float] = field(default_factory=list)

    @property
    def per_item_us(self) -> float:
        return self.seconds / self.items * 1e6

    @property
    def ratio(self) -> float | None:
        if self.seconds is None or self.baseline is None or not self.baseline.seconds:
            return None
        return self.seconds / self.baseline.seconds

    def as_json(self) -> dict[str, Any]:
        measured = self.seconds is not None
        return {
            "workload": self.workload,
            "variant": self.variant,
            "seconds": self.seconds,
            "times": self.times,
            "items": self.items,
            "per_item_us": self.per_item_us if measured else None,
            "baseline": self.baseline.variant if self.baseline else None,
            "ratio": self.ratio,
            "budget": (
                {
                    "kind": self.budget.kind,
                    "limit": self.budget.limit,
                    "text": self.budget.text(self.baseline),
                }
                if self.budget
                else None
            ),
            "verdict": self.verdict,
            "note": self.note,
        }


class Report:
    """Collects rows, judges budgets (not in smoke mode), prints the table, writes JSON."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.args = args
        self.rows: list[Row] = []

    def add(
        self,
        workload: str,
        variant: str,
        timing: Timing,
        items: int = 1,
        baseline: Row | None = None,
        budget: Budget | None = None,
        note: str = "",
        wrong: str | None = None,
    ) -> Row:
        """A measured row; with `wrong` (what a result check found) its verdict is WRONG,
        whatever the time, and `finish` exits 1."""
        if wrong:
            note = f"WRONG RESULTS ({workload}): {wrong}" + (f"; {note}" if note else "")
        row = Row(
            workload,
            variant,
            timing.seconds,
            items,
            baseline,
            budget,
            note=note,
            times=list(timing.times),
        )
        if wrong:
            row.verdict = "WRONG"
        elif budget is not None:
            row.verdict = "smoke" if self.args.smoke else ("PASS" if budget.met(row) else "FAIL")
        self.rows.append(row)
        return row

    def skip(
        self,
        workload: str,
        variant: str,
        verdict: str,
        note: str,
        baseline: Row | None = None,
        budget: Budget | None = None,
    ) -> Row:
        """A row that could not be measured, e.g. verdict "unsupported" with the reason."""
        row = Row(workload, variant, None, 1, baseline, budget, verdict, note)
        self.rows.append(row)
        return row

    def table(self) -> str:
        lines = [
            "| workload | variant | time | per item | time vs baseline | budget | verdict |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for row in self.rows:
            measured = row.seconds is not None
            if row.baseline is None and any(r.baseline is row for r in self.rows):
                ratio = "baseline"
            else:
                ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
                if row.ratio and row.budget and row.budget.kind == "speedup_min":
                    ratio += f" ({1 / row.ratio:.2f}x faster)"
            lines.append(
                f"| {row.workload} | {row.variant} "
                f"| {_seconds(row.seconds) if measured else '-'} "
                f"| {_micro(row.per_item_us) if measured else '-'} | {ratio} "
                f"| {row.budget.text(row.baseline) if row.budget else '-'} | {row.verdict} |"
            )
        notes = sorted({f"- {r.variant}: {r.note}" for r in self.rows if r.note})
        return "\n".join(lines + ([""] + notes if notes else []))

    def finish(self) -> int:
        """Print the table, write the JSON; the exit code (1 only for FAIL with --strict)."""
        mode = (
            "smoke run, budgets not judged" if self.args.smoke else (f"best of {self.args.repeat}")
        )
        load = ", ".join(f"{x:.2f}" for x in _load())
        print(
            f"## {self.name} ({mode}; {os.cpu_count()} CPUs, load average {load}; "
            f"Python {platform.python_version()})"
        )
        print()
        print(self.table())
        if self.args.json:
            self.write_json(self.args.json)
        failed = [r for r in self.rows if r.verdict == "FAIL"]
        if failed:
            print(f"\n{len(failed)} budget(s) failed", file=sys.stderr)
        wrong = sorted({f"{r.workload} / {r.variant}" for r in self.rows if r.verdict == "WRONG"})
        if wrong:
            print(f"\nwrong results: {'; '.join(wrong)}", file=sys.stderr)
            return 1  # a fast wrong answer is never a pass, smoke run or not
        return 1 if failed and self.args.strict else 0

    def write_json(self, path: str) -> None:
        document = {
            "benchmark": self.name,
            "script": os.path.basename(sys.argv[0]),
            "smoke": self.args.smoke,
            "repeat": self.args.repeat,
            "cpu_count": os.cpu_count(),
            "load_average": _load(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rows": [row.as_json() for row in self.rows],
        }
        with open(path, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages: other busy processes make timings noisy."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def _seconds(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"


def _micro(us: float) -> str:
    if us >= 1e5:
        return f"{us / 1e6:.3f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.2f} us"


# -- the trivial 3-node chain shared by overhead.py and local_executors.py -------------------


def add_one(x):
    return x + 1


def double(a):
    return a * 2


def minus_three(b):
    return b - 3


def chain(api: Any) -> list[Any]:
    """The three functions as nodes of `api` (the hypernodes_daft or hypernodes module)."""
    outputs = {add_one: "a", double: "b", minus_three: "c"}
    return [api.node(output_name=out)(fn) for fn, out in outputs.items()]


def chain_outputs(xs: list[int]) -> list[dict[str, int]]:
    """What mapping the chain over `xs` returns."""
    return [{"a": x + 1, "b": (x + 1) * 2, "c": (x + 1) * 2 - 3} for x in xs]
