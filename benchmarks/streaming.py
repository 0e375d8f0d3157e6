"""A million-item stream in bounded memory: `iter_map` vs `map` on every engine (issue 8).

A 2-node chain of trivial nodes (`a = x + 1`, `b = a * 2`: an int in, a 2-key dict out)
mapped over 1,000,000 items (2,000 in --smoke) on `HypernodesEngine()` (sequential),
`HypernodesEngine(map_executor="async", max_concurrency=100)` (the same nodes as async
functions), `HypernodesEngine(map_executor="threaded")` and `DaftEngine()` (native runner):
- baseline: `pipeline.map(...)`, every result held in the returned list, then summed;
- `pipeline.iter_map(...)` summed as the items come, keeping no result (and, on the async
  executor, `async for` over `pipeline.aiter_map(...)`, the same way).
Per variant: wall time and items/s (reported, no budget), and the peak memory the call
added. Budget: the stream's peak <= 10% of the baseline's peak on the same engine
(DaftEngine: 25%, below). The map holds about 280 bytes per item (a dict of two ints, in a
list), so 10% fails a stream that keeps anything per item (an index, a future, every
partition's rows) while leaving room for a window of items in flight; a fixed cap (say 50
MB) would let a stream keep 50 bytes per item and pass, and would not follow the size of
the results. `DaftEngine` yields a
partition at a time (131,072 rows on the native runner here), so its stream holds a
partition's values and Daft's Arrow copy of the input list at its peak (the copy grows
with the input, about 30 bytes an item, not with the results kept): its budget is 25%.

Memory is the growth of the resident set (RSS), not tracemalloc: tracing every allocation
slowed these calls 3-7x here (from 100,000 items: 25-100 s per million-item call; the
threaded map about 100 s), and it misses what Daft allocates in Rust. Each engine and
variant runs in a new (spawned) process, so no memory kept by an earlier call hides or
inflates a later one: the input list is built and the engine warmed on 100 items, then, per
timed call, Linux's peak RSS (`VmHWM`) is reset (`/proc/self/clear_refs`) and the peak minus
the RSS before the call is the growth; the row keeps the largest of the calls. Elsewhere
the process's `ru_maxrss` stands in for the peak, which may include the imports. Results
are checked (every item's `b`, its index, the count): a row with wrong results says WRONG
and the script exits 1. The timed calls are best of --repeat (default 2); a full run takes
about 3 minutes, a --smoke run about 10 s (nine processes start).
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import Budget, Report, Row, Timing, best_of, closing, parse_args  # noqa: E402

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node  # noqa: E402

PEAK_RATIO_MAX = {"daft": 0.25}  # the stream's peak memory / the map's, on the same engine
PEAK_RATIO_DEFAULT = 0.10
CONCURRENCY = 100


def add_one(x: int) -> int:
    return x + 1


def double(a: int) -> int:
    return a * 2


async def add_one_async(x: int) -> int:
    return x + 1


async def double_async(a: int) -> int:
    return a * 2


SYNC = Pipeline(nodes=[node(output_name="a")(add_one), node(output_name="b")(double)])
ASYNC = Pipeline(nodes=[node(output_name="a")(add_one_async), node(output_name="b")(double_async)])

# name -> (label, make the engine, the pipeline, the variants it runs)
ENGINES = {
    "sequential": ("HypernodesEngine()", HypernodesEngine, SYNC, ("map", "iter_map")),
    "async": (
        f'HypernodesEngine(map_executor="async", max_concurrency={CONCURRENCY})',
        lambda: HypernodesEngine(map_executor="async", max_concurrency=CONCURRENCY),
        ASYNC,
        ("map", "iter_map", "aiter_map"),
    ),
    "threaded": (
        'HypernodesEngine(map_executor="threaded")',
        lambda: HypernodesEngine(map_executor="threaded"),
        SYNC,
        ("map", "iter_map"),
    ),
    "daft": ("DaftEngine() (native runner)", DaftEngine, SYNC, ("map", "iter_map")),
}
VARIANTS = {
    "map": "map, every result held, then summed",
    "iter_map": "iter_map, summed as items come",
    "aiter_map": "async for over aiter_map, summed",
}


# -- in the child process ----------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    """A `/proc/self/status` field (`VmRSS`, `VmHWM`) in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS (Linux); the RSS now, in bytes (0: unknown)."""
    with contextlib.suppress(OSError):  # not Linux: _peak() is the peak since the start
        Path("/proc/self/clear_refs").write_text("5")
    try:
        return _status_bytes("VmRSS")
    except OSError:
        return 0


def _peak() -> int:
    """The peak RSS in bytes since `_reset_peak` (elsewhere: since the process started)."""
    try:
        return _status_bytes("VmHWM")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass
class Tally:
    """What a call saw: items, the sum of `b`, how many items had a wrong `b` or index."""

    count: int = 0
    total: int = 0
    bad: int = 0
    indices: int = 0

    def add(self, index: int, outputs: dict) -> None:
        self.count += 1
        self.total += outputs["b"]
        self.indices += index
        self.bad += outputs["b"] != (index + 1) * 2

    def wrong(self, n: int) -> str | None:
        if self.count != n:
            return f"{self.count} items, expected {n}"
        if self.bad:
            return f"{self.bad} items with a wrong result or index"
        if self.indices != n * (n - 1) // 2:
            return "indices are not 0..n-1, each once"
        return None


def consume(variant: str, pipeline: Pipeline, engine, inputs: dict) -> Tally:
    """One call of `variant`; the results summed (and checked) as the variant allows."""
    tally = Tally()
    if variant == "map":
        for index, outputs in enumerate(pipeline.map(inputs, "x", engine=engine)):
            tally.add(index, outputs)
    elif variant == "iter_map":
        for index, outputs in pipeline.iter_map(inputs, "x", engine=engine):
            tally.add(index, outputs)
    else:

        async def stream():
            async for index, outputs in pipeline.aiter_map(inputs, "x", engine=engine):
                tally.add(index, outputs)

        asyncio.run(stream())
    return tally


def measure(name: str, variant: str, n: int, repeat: int) -> tuple[Timing, int, str | None]:
    """In a new process: best-of-`repeat` timing of `variant` on `name`'s engine over `n`
    items, the largest peak RSS growth of a call (bytes), and what was wrong, if anything."""
    _, make, pipeline, _ = ENGINES[name]
    inputs = {"x": list(range(n))}
    peaks, wrong = [], []
    with closing(make()) as engine:
        consume(variant, pipeline, engine, {"x": inputs["x"][:100]})  # start pools, runner

        def timed():
            gc.collect()
            before = _reset_peak()
            start = time.perf_counter()
            tally = consume(variant, pipeline, engine, inputs)
            seconds = time.perf_counter() - start
            peaks.append(max(0, _peak() - before))
            wrong.append(tally.wrong(n))
            return seconds, tally

        timing = best_of(timed, repeat, warmup=0, self_timed=True)
    timing.result = None  # nothing big goes back to the parent
    return timing, max(peaks), next((w for w in wrong if w), None)


# -- in the parent -------------------------------------------------------------------------------


def in_new_process(name: str, variant: str, n: int, repeat: int):
    """`measure` in a spawned process, so each call starts from a fresh heap."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(measure, name, variant, n, repeat).result()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class PeakBudget(Budget):
    """The stream's peak memory growth <= `limit` times the map's (judged by `bench_engine`)."""

    def text(self, baseline: Row | None) -> str:
        return f"peak RSS growth <= {self.limit:.0%} of map's"


def bench_engine(report: Report, name: str, n: int, repeat: int, smoke: bool) -> None:
    label, _, _, variants = ENGINES[name]
    workload = f"2-node chain x {n:,} items, {label}"
    timing, base_peak, wrong = in_new_process(name, "map", n, repeat)
    note = f"{name}: peak RSS growth {_mb(base_peak)}; {n / timing.seconds:,.0f} items/s"
    base = report.add(workload, VARIANTS["map"], timing, n, note=note, wrong=wrong)
    for variant in variants[1:]:
        timing, peak, wrong = in_new_process(name, variant, n, repeat)
        share = peak / base_peak if base_peak else float("inf")
        note = f"{name}: {n / timing.seconds:,.0f} items/s"
        report.add(workload, VARIANTS[variant], timing, n, base, note=note, wrong=wrong)
        limit = PEAK_RATIO_MAX.get(name, PEAK_RATIO_DEFAULT)
        budget = PeakBudget("peak_ratio_max", limit)
        verdict = "smoke" if smoke else ("PASS" if share <= limit else "FAIL")
        memory = f"{name}: {_mb(peak)} vs map's {_mb(base_peak)} ({share:.1%})"
        report.skip(workload, f"{variant}: peak memory", verdict, memory, base, budget)


def main() -> int:
    args = parse_args(__doc__, default_repeat=2)
    n = 2_000 if args.smoke else 1_000_000
    report = Report("streaming: iter_map vs map, peak memory and items/s", args)
    for name in ENGINES:
        bench_engine(report, name, n, args.repeat, args.smoke)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
