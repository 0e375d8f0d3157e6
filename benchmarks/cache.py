"""Per-item caching: cold maps with and without a DiskCache, warm maps, and the cost of one
cache operation (issue 7).

A node that sleeps 1 ms (`time.sleep(0.001)`) and returns x * 2, mapped over 20,000 items
(300 in --smoke), on `HypernodesEngine()` (sequential) and on `DaftEngine(collect=True)`
(inputs `{"x": list(range(n))}`, map_over="x"):
- cold map without a cache (the baseline);
- cold map with a `DiskCache` on a new, empty temp directory: <= 1.5x the baseline;
- warm map (the same cache, called again): >= 20x faster than the cold map with the cache.
Cold rows are best of 1 with no warm-up of the timed pipeline (a warm-up would fill the
cache; each cold run starts from its own empty directory); each engine is first started by
a 10-item map of the same function as a `cache=False` node. The warm row is best of
--repeat (default 3), starting with the second call.
The cache directories are made under the system temp dir ($TMPDIR): a DiskCache write is
a file creation, whose cost depends on that filesystem (tmpfs, ext4, a network mount).

Then the cost of one cache operation, timed directly over 10,000 keys (300 in --smoke) made
by `call_key("lineage", {"x": i})`: `call_key` itself, `DiskCache.put` of a new entry (on a
new directory each repeat), `DiskCache.lookup` hits and misses; `MemoryCache` for reference.

Results are checked on every run (every value is 2x; a cold cached run leaves one entry per
item; when node calls can be counted in this process, a warm run makes none): a row with
wrong results says WRONG and the script exits 1 after the table.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import Budget, Report, best_of, check_failure, closing, parse_args  # noqa: E402

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node  # noqa: E402
from hypernodes_daft.cache import DiskCache, MemoryCache, call_key  # noqa: E402

COLD_RATIO_MAX = 1.5  # cold map with a cache / cold map without one
WARM_SPEEDUP_MIN = 20  # cold map with a cache / warm map

CALLS = [0]  # node calls made in this process (DaftEngine may run them elsewhere)


def slow_double(x: int) -> int:
    CALLS[0] += 1
    time.sleep(0.001)
    return x * 2


PIPELINE = Pipeline(nodes=[node(output_name="y")(slow_double)])
UNCACHED = Pipeline(nodes=[node(output_name="y", cache=False)(slow_double)])  # warm-ups


def add_checked(report, workload, variant, timing, items, check, baseline=None, budget=None):
    """A row for an engine measurement; when `check()` finds wrong results the row says
    WRONG (whatever the time) and the script exits 1 after printing the table."""
    wrong = check_failure(check)
    return report.add(workload, variant, timing, items, baseline, budget, wrong=wrong)


def check_values(rows: Any, n: int) -> None:
    """One dict per item, in order, with y == 2x."""
    assert isinstance(rows, list), f"returned {type(rows).__name__}, expected a list"
    assert len(rows) == n, f"{len(rows)} rows, expected {n}"
    wrong = [i for i, row in enumerate(rows) if row.get("y") != 2 * i]
    assert not wrong, f"{len(wrong)} wrong values, first at item {wrong[0]}: {rows[wrong[0]]}"


def map_bench(
    report: Report,
    name: str,
    make: Callable[..., Any],
    options: dict,
    n: int,
    tmp: Path,
    repeats: int,
) -> None:
    workload = f"1 ms node x {n:,} items, {name}"
    xs = list(range(n))

    def timed_map(engine):
        """(seconds of the map, (result, node calls it made in this process))."""
        calls = CALLS[0]
        start = time.perf_counter()
        result = PIPELINE.map(inputs={"x": xs}, map_over="x", engine=engine)
        return time.perf_counter() - start, (result, CALLS[0] - calls)

    def warm_up(engine):
        """Start the engine (Daft's runner) with a few items of an uncached node."""
        check_values(UNCACHED.map(inputs={"x": xs[:10]}, map_over="x", engine=engine), 10)

    with closing(make(**options)) as engine:
        warm_up(engine)
        cold = best_of(lambda: timed_map(engine), repeat=1, warmup=0, self_timed=True)
    result, calls = cold.result
    counted = calls == n  # the node ran in this process: calls can be checked
    base = add_checked(
        report, workload, "cold, no cache, best of 1", cold, n, lambda: check_values(result, n)
    )

    directory = tmp / f"{name.split('(')[0]}-cold"  # new: the cold run starts empty
    assert not directory.exists()
    cache = DiskCache(directory)
    with closing(make(cache=cache, **options)) as engine:
        warm_up(engine)
        assert len(cache) == 0, f"{directory} is not empty before the cold run"
        cold = best_of(lambda: timed_map(engine), repeat=1, warmup=0, self_timed=True)
        result, calls = cold.result

        def check_cold():
            check_values(result, n)
            assert len(cache) == n, f"{len(cache)} cache entries after the cold run, not {n}"
            assert not counted or calls == n, f"{calls} node calls, expected {n}"

        cold_row = add_checked(
            report,
            workload,
            "cold, DiskCache on an empty dir, best of 1",
            cold,
            n,
            check_cold,
            base,
            Budget("ratio_max", COLD_RATIO_MAX),
        )

        warm = best_of(lambda: timed_map(engine), repeats, warmup=0, self_timed=True)
        result, calls = warm.result

        def check_warm():
            check_values(result, n)
            assert not counted or calls == 0, f"the warm run made {calls} node calls"

        add_checked(
            report,
            workload,
            f"warm, same DiskCache (2nd call on), best of {repeats}",
            warm,
            n,
            check_warm,
            cold_row,
            Budget("speedup_min", WARM_SPEEDUP_MIN),
        )
    if not counted:
        report.rows[-1].note = "node calls made outside this process: not counted"


def ops_bench(report: Report, n: int, tmp: Path, repeats: int) -> None:
    workload = f"one cache operation, {n:,} keys"
    hit_keys = [call_key("lineage", {"x": i}) for i in range(n)]
    missing = [call_key("other lineage", {"x": i}) for i in range(n)]
    assert len(set(hit_keys)) == n and not set(hit_keys) & set(missing), "keys collide"

    timing = best_of(lambda: [call_key("lineage", {"x": i}) for i in range(n)], repeats)
    assert timing.result == hit_keys, "call_key is not stable"
    report.add(workload, 'call_key("lineage", {"x": i})', timing, n)

    counter = iter(range(10**9))

    def put_new(make: Callable[[], Any]) -> Callable[[], tuple[float, Any]]:
        """Put every key into a new cache (a new directory for DiskCache): new entries."""

        def timed():
            cache = make()
            start = time.perf_counter()
            for i, key in enumerate(hit_keys):
                cache.put(key, i * 2)
            return time.perf_counter() - start, cache

        return timed

    timing = best_of(
        put_new(lambda: DiskCache(tmp / f"ops-{next(counter)}")), repeats, 0, self_timed=True
    )
    disk = timing.result
    add_checked(
        report, workload, "DiskCache.put, new entry", timing, n, lambda: _check_len(disk, n)
    )

    def lookups(cache, keys):
        return lambda: [cache.lookup(key) for key in keys]

    timing = best_of(lookups(disk, hit_keys), repeats)
    add_checked(
        report, workload, "DiskCache.lookup, hit", timing, n, lambda: _check_hits(timing.result, n)
    )
    misses = best_of(lookups(disk, missing), repeats)
    add_checked(
        report,
        workload,
        "DiskCache.lookup, miss",
        misses,
        n,
        lambda: _check_misses(misses.result, n),
    )

    timing = best_of(put_new(MemoryCache), repeats, 0, self_timed=True)
    memory = timing.result
    add_checked(
        report, workload, "MemoryCache.put (reference)", timing, n, lambda: _check_len(memory, n)
    )
    hits = best_of(lookups(memory, hit_keys), repeats)
    add_checked(
        report,
        workload,
        "MemoryCache.lookup, hit (reference)",
        hits,
        n,
        lambda: _check_hits(hits.result, n),
    )


def _check_len(cache: Any, n: int) -> None:
    assert len(cache) == n, f"{len(cache)} entries, expected {n}"


def _check_hits(found: list[tuple[bool, Any]], n: int) -> None:
    assert found == [(True, i * 2) for i in range(n)], "lookups did not return what was put"


def _check_misses(found: list[tuple[bool, Any]], n: int) -> None:
    assert all(hit is False for hit, _ in found), "a key never put was found"


def main() -> int:
    args = parse_args(__doc__, default_repeat=3)
    n, keys = (300, 300) if args.smoke else (20_000, 10_000)
    report = Report("cache: cold and warm maps of a 1 ms node, one cache operation", args)
    with tempfile.TemporaryDirectory(prefix="hypernodes-daft-cache-bench-") as tmp:
        root = Path(tmp)
        map_bench(report, "HypernodesEngine()", HypernodesEngine, {}, n, root, args.repeat)
        map_bench(
            report, "DaftEngine(collect=True)", DaftEngine, {"collect": True}, n, root, args.repeat
        )
        ops_bench(report, keys, root, args.repeat)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
