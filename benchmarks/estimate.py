"""`Pipeline.estimate`: a 20-item estimate against the measured full map (issue 19).

A pipeline of two async nodes, `fast` (`asyncio.sleep(0.01)`) then `slow`
(`asyncio.sleep(0.1)`), mapped over 2,000 items (200 items, 1 ms and 5 ms in --smoke); then
the same with latencies that vary (lognormal, sigma 0.6: each item's sleep is the base
times exp(N(0, 0.6)), seeded by the item), where the end of the map waits for its slowest
calls. Each on `HypernodesEngine(map_executor="async")` (100 items in flight) and on
`DaftEngine()` (the native runner, 100 async calls in flight per node). For each engine and
each repeat
(--repeat, default 3): `pipeline.estimate(sample=20, seed=repeat)` on an engine without a
cache, then the full map, timed, on a new engine of the same kind, without a cache (so it
is the cold run the estimate predicts).

Rows per engine: the measured full map (the baseline: the median of the repeats), the
estimate's projected wall time (the median of the repeats; budget: within 25% of the
measured map: the issue's acceptance check on the first workload), and the estimate call
itself (the sample's run and the projection: reported). The notes give every repeat's
estimate, its 90% range and its error against the full map of the same repeat, and how
often the range held the measured time.

Results are checked: every full map's `b` is (x + 1) * 2, and each estimate projects
exactly the map's calls (2,000 per node); a row with wrong results says WRONG and the
script exits 1 after the table.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from _common import Budget, Report, Timing, check_failure, closing, parse_args  # noqa: E402

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node  # noqa: E402

SAMPLE = 20
WITHIN = 0.25
SPREAD = 0.6  # lognormal sigma of the second workload: its slowest of 2,000 calls ~6x mean


@dataclass
class Workload:
    """Two async nodes sleeping `fast_s` and `slow_s` seconds; with `spread`, each item's
    sleep is that times exp(N(0, spread)), drawn from a generator seeded by the item (a
    lognormal latency, the same in every run)."""

    items: int
    fast_s: float
    slow_s: float
    spread: float = 0.0

    @property
    def name(self) -> str:
        kind = f"lognormal (sigma {self.spread:g}) " if self.spread else ""
        return (
            f"{self.fast_s * 1e3:g} ms + {self.slow_s * 1e3:g} ms {kind}async nodes, "
            f"{self.items:,} items"
        )

    def sleep(self, base: float, item: int) -> float:
        if not self.spread:
            return base
        return base * math.exp(random.Random(item).gauss(0, self.spread))


@dataclass
class Runs:
    """Each repeat's measured map, estimate, its range, and the estimate call's time."""

    measured: list[float] = field(default_factory=list)
    estimated: list[float] = field(default_factory=list)
    ranges: list[tuple[float, float]] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    wrong: str | None = None


def make_pipeline(work: Workload) -> Pipeline:
    @node(output_name="a")
    async def fast(x: int) -> int:
        await asyncio.sleep(work.sleep(work.fast_s, x))
        return x + 1

    @node(output_name="b")
    async def slow(a: int) -> int:
        await asyncio.sleep(work.sleep(work.slow_s, -a))
        return a * 2

    return Pipeline(nodes=[fast, slow], name="two_sleeps")


def measure(work: Workload, make_engine: Callable[[], Any], repeat: int) -> Runs:
    pipeline, xs = make_pipeline(work), list(range(work.items))
    runs = Runs()
    for seed in range(repeat):
        with closing(make_engine()) as engine:
            started = time.perf_counter()
            estimate = pipeline.estimate(
                {"x": xs}, map_over="x", sample=SAMPLE, engine=engine, seed=seed
            )
            runs.calls.append(time.perf_counter() - started)
        with closing(make_engine()) as engine:
            started = time.perf_counter()
            results = pipeline.map(inputs={"x": xs}, map_over="x", engine=engine)
            runs.measured.append(time.perf_counter() - started)
        runs.estimated.append(estimate.wall_seconds)
        runs.ranges.append(estimate.wall_range)
        runs.wrong = runs.wrong or check_failure(lambda: check(work, results, estimate))  # noqa: B023
    return runs


def check(work: Workload, results: list[dict[str, int]], estimate: Any) -> None:
    assert [r["b"] for r in results] == [(x + 1) * 2 for x in range(work.items)], "map results"
    projected = {name: n.calls for name, n in estimate.nodes.items()}
    assert projected == {"fast": work.items, "slow": work.items}, f"projected {projected}"


def add_rows(report: Report, work: Workload, label: str, runs: Runs) -> None:
    measured = Timing(statistics.median(runs.measured), runs.measured)
    estimated = Timing(statistics.median(runs.estimated), runs.estimated)
    base = report.add(work.name, f"{label}: full map, measured", measured, work.items)
    report.add(
        work.name,
        f"{label}: estimate from {SAMPLE} items",
        estimated,
        work.items,
        baseline=base,
        budget=Budget("within", WITHIN),
        note=("lognormal: " if work.spread else "constant: ") + _errors(runs),
        wrong=runs.wrong,
    )
    calls = Timing(statistics.median(runs.calls), runs.calls)
    report.add(work.name, f"{label}: the estimate call (sample run)", calls, SAMPLE)


def _errors(runs: Runs) -> str:
    """Each repeat: estimate (range) vs measured, and the error; how often the range held
    the measured time."""
    repeats = list(zip(runs.estimated, runs.ranges, runs.measured, strict=True))
    parts = [
        f"{e:.2f} s ({low:.2f}-{high:.2f}) vs {m:.2f} s: {e / m - 1:+.1%}"
        for e, (low, high), m in repeats
    ]
    held = sum(low <= m <= high for _, (low, high), m in repeats)
    return "; ".join(parts) + f"; measured within the range {held} of {len(repeats)} times"


ENGINES: dict[str, Callable[[], Any]] = {
    "HypernodesEngine(map_executor='async')": lambda: HypernodesEngine(map_executor="async"),
    "DaftEngine()": lambda: DaftEngine(),
}


def main() -> int:
    args = parse_args(__doc__, default_repeat=3)
    if args.smoke:
        workloads = [Workload(200, 0.001, 0.005), Workload(200, 0.001, 0.005, SPREAD)]
    else:
        workloads = [Workload(2000, 0.01, 0.1), Workload(2000, 0.01, 0.1, SPREAD)]
    report = Report("estimate", args)
    for work in workloads:
        for label, make_engine in ENGINES.items():
            add_rows(report, work, label, measure(work, make_engine, args.repeat))
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
