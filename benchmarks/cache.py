"""Per-item caching: cold maps with and without a DiskCache, warm maps, and the cost of one
cache operation, on a local directory (issue 7) and on object storage (a local S3 server).

Local directory: a node that sleeps 1 ms (`time.sleep(0.001)`) and returns x * 2, mapped
over 20,000 items (300 in --smoke), on `HypernodesEngine()` (sequential) and on
`DaftEngine(collect=True)` (inputs `{"x": list(range(n))}`, map_over="x"):
- cold map without a cache (the baseline);
- cold map with a `DiskCache` on a new, empty temp directory: <= 1.5x the baseline;
- warm map (the same cache, called again): >= 20x faster than the cold map with the cache.

Object storage: the same rows for a node that sleeps 100 ms, over 500 items (20 in
--smoke), on `DaftEngine(collect=True)`, the `DiskCache` on a new, empty prefix of a bucket
of the local S3 server of tests/_s3_server.py (moto's server mode, a subprocess on
127.0.0.1, started once; `storage_options=server.options`, the environment untouched):
- cold map with the cache <= 1.3x the cold map without one;
- warm map >= 8x faster than the cold map with the cache.

Cold rows are best of 1 with no warm-up of the timed pipeline (a warm-up would fill the
cache; each cold run starts from its own empty directory or prefix); each engine is first
started by a 10-item map of the same function as a `cache=False` node (which also makes
the engine check the cache's storage, once). The warm row is best of --repeat (default 3),
starting with the second call.
The cache directories are made under the system temp dir ($TMPDIR): a DiskCache write is
a file creation, whose cost depends on that filesystem (tmpfs, ext4, a network mount).

Then the cost of one cache operation, timed directly over 10,000 keys (300 in --smoke) made
by `call_key("lineage", {"x": i})`: `call_key` itself, `DiskCache.put` of a new entry (on a
new directory each repeat), `DiskCache.lookup` hits and misses; `MemoryCache` for reference.
The same for the S3 server over 200 keys (50 in --smoke), one request after the other (the
server's time per request, shown beside the S3 map rows): with pyarrow's S3 client a put
is one PUT, a lookup miss one HEAD, a lookup hit two requests (HEAD, then GET).

Results are checked on every run (every value is 2x; a cold cached run leaves one entry per
item; when node calls can be counted in this process, a warm run makes none): a row with
wrong results says WRONG and the script exits 1 after the table.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import itertools  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import (  # noqa: E402
    Budget,
    Report,
    Row,
    best_of,
    check_failure,
    closing,
    parse_args,
)

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # the test S3 server
from _s3_server import S3Server  # noqa: E402

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node  # noqa: E402
from hypernodes_daft.cache import DiskCache, MemoryCache, call_key  # noqa: E402

BUCKET = "hypernodes-cache-bench"
# (cold map with a cache / cold map without one, cold map with a cache / warm map)
LOCAL_BUDGETS = (1.5, 20)  # DiskCache on a local directory: ratio_max, speedup_min
S3_BUDGETS = (1.3, 8)  # DiskCache on the local S3 server

CALLS = [0]  # node calls made in this process (DaftEngine may run them elsewhere)


def sleeping_double(seconds: float) -> Callable[[int], int]:
    """A node function that sleeps `seconds`, then returns x * 2 (its calls counted)."""

    def slow_double(x: int) -> int:
        CALLS[0] += 1
        time.sleep(seconds)
        return x * 2

    return slow_double


@dataclass(frozen=True)
class Storage:
    """Where a map's cache lives, and the budgets of its cold and warm rows."""

    where: str  # "an empty dir": how the cold row names its new cache
    new_cache: Callable[[str], DiskCache]  # a new, empty cache, by a name unique to the run
    cold_ratio_max: float  # cold map with the cache / cold map without one
    warm_speedup_min: float  # cold map with the cache / warm map
    note: str = ""  # shown beside the cold row with the cache (e.g. the server's latency)
    server: str = ""  # added to the workload: ", S3 (local moto server)"


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
    seconds: float,
    storage: Storage,
    repeats: int,
) -> None:
    """Cold without a cache, cold with a new cache of `storage`, warm: a node sleeping
    `seconds` mapped over `n` items on `make(**options)`."""
    workload = f"{seconds * 1e3:g} ms node x {n:,} items, {name}{storage.server}"
    xs = list(range(n))
    func = sleeping_double(seconds)
    pipeline = Pipeline(nodes=[node(output_name="y")(func)])
    uncached = Pipeline(nodes=[node(output_name="y", cache=False)(func)])  # warm-ups

    def timed_map(engine):
        """(seconds of the map, (result, node calls it made in this process))."""
        calls = CALLS[0]
        start = time.perf_counter()
        result = pipeline.map(inputs={"x": xs}, map_over="x", engine=engine)
        return time.perf_counter() - start, (result, CALLS[0] - calls)

    def warm_up(engine):
        """Start the engine (Daft's runner) with a few items of an uncached node."""
        check_values(uncached.map(inputs={"x": xs[:10]}, map_over="x", engine=engine), 10)

    with closing(make(**options)) as engine:
        warm_up(engine)
        cold = best_of(lambda: timed_map(engine), repeat=1, warmup=0, self_timed=True)
    result, calls = cold.result
    counted = calls == n  # the node ran in this process: calls can be checked
    base = add_checked(
        report, workload, "cold, no cache, best of 1", cold, n, lambda: check_values(result, n)
    )

    cache = storage.new_cache(f"{name.split('(')[0]}-{seconds * 1e3:g}ms-cold")
    with closing(make(cache=cache, **options)) as engine:
        warm_up(engine)
        assert len(cache) == 0, f"{cache.location} is not empty before the cold run"
        cold = best_of(lambda: timed_map(engine), repeat=1, warmup=0, self_timed=True)
        result, calls = cold.result

        def check_cold():
            check_values(result, n)
            assert len(cache) == n, f"{len(cache)} cache entries after the cold run, not {n}"
            assert not counted or calls == n, f"{calls} node calls, expected {n}"

        cold_row = add_checked(
            report,
            workload,
            f"cold, DiskCache on {storage.where}, best of 1",
            cold,
            n,
            check_cold,
            base,
            Budget("ratio_max", storage.cold_ratio_max),
        )
        if storage.note and not cold_row.note:
            cold_row.note = storage.note

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
            Budget("speedup_min", storage.warm_speedup_min),
        )
    if not counted:
        report.rows[-1].note = "node calls made outside this process: not counted"


def keys(lineage: str, n: int) -> list[str]:
    return [call_key(lineage, {"x": i}) for i in range(n)]


def ops_bench(report: Report, n: int, tmp: Path, repeats: int) -> None:
    workload = f"one cache operation, {n:,} keys"
    hit_keys = keys("lineage", n)
    timing = best_of(lambda: keys("lineage", n), repeats)
    assert timing.result == hit_keys, "call_key is not stable"
    report.add(workload, 'call_key("lineage", {"x": i})', timing, n)

    counter = itertools.count()
    store_ops(report, workload, lambda: DiskCache(tmp / f"ops-{next(counter)}"), n, repeats)
    store_ops(report, workload, MemoryCache, n, repeats, "MemoryCache", misses=False)


def store_ops(
    report: Report,
    workload: str,
    new_cache: Callable[[], Any],
    n: int,
    repeats: int,
    label: str = "DiskCache",
    misses: bool = True,
    requests: dict[str, str] | None = None,
) -> dict[str, Row]:
    """Rows for a put of a new entry (into a new cache each repeat), lookup hits and (with
    `misses`) lookup misses, one after the other over `n` keys; `requests` names what
    each of put, hit and miss asks a server, for the variants. The rows, by operation."""
    hit_keys, missing = keys("lineage", n), keys("other lineage", n)
    assert len(set(hit_keys)) == n and not set(hit_keys) & set(missing), "keys collide"
    reference = "" if label == "DiskCache" else " (reference)"
    requests = requests or {}

    def variant(operation: str, suffix: str) -> str:
        asked = f" ({requests[operation]})" if operation in requests else ""
        return f"{label}.{suffix}{asked}{reference}"

    def put_new():
        """Put every key into a new cache: new entries."""
        cache = new_cache()
        start = time.perf_counter()
        for i, key in enumerate(hit_keys):
            cache.put(key, i * 2)
        return time.perf_counter() - start, cache

    timing = best_of(put_new, repeats, 0, self_timed=True)
    cache = timing.result
    rows = {
        "put": add_checked(
            report,
            workload,
            variant("put", "put, new entry" if misses else "put"),
            timing,
            n,
            lambda: _check_len(cache, n),
        )
    }

    lookups = {"hit": (hit_keys, _check_hits), "miss": (missing, _check_misses)}
    for operation, (looked_up, check) in list(lookups.items())[: 2 if misses else 1]:
        timing = best_of(lambda ks=looked_up: [cache.lookup(key) for key in ks], repeats)
        rows[operation] = add_checked(
            report,
            workload,
            variant(operation, f"lookup, {operation}"),
            timing,
            n,
            lambda found=timing.result, check=check: check(found, n),
        )
    return rows


def _check_len(cache: Any, n: int) -> None:
    assert len(cache) == n, f"{len(cache)} entries, expected {n}"


def _check_hits(found: list[tuple[bool, Any]], n: int) -> None:
    assert found == [(True, i * 2) for i in range(n)], "lookups did not return what was put"


def _check_misses(found: list[tuple[bool, Any]], n: int) -> None:
    assert all(hit is False for hit, _ in found), "a key never put was found"


def object_storage(report: Report, server: S3Server, n: int, repeats: int) -> Storage:
    """The server's time per request (rows), and the Storage of a map on a new prefix."""
    run = f"run-{time.time_ns()}"

    def new_cache(name: str) -> DiskCache:
        return DiskCache(f"s3://{BUCKET}/{run}/{name}", storage_options=server.options)

    counter = itertools.count()
    rows = store_ops(
        report,
        f"one S3 request to the local server (moto), {n:,} keys, one at a time",
        lambda: new_cache(f"ops-{next(counter)}"),
        n,
        repeats,
        requests={"put": "one PUT", "hit": "HEAD + GET", "miss": "one HEAD"},
    )
    per = {op: row.per_item_us / 1e3 for op, row in rows.items()}
    note = (
        f"the S3 server took {per['miss']:.2f} ms per HEAD (a miss), {per['put']:.2f} ms "
        f"per PUT, {per['hit']:.2f} ms per hit (HEAD + GET), one request at a time"
    )
    return Storage("an empty s3 prefix", new_cache, *S3_BUDGETS, note, ", S3 (local moto server)")


def main() -> int:
    args = parse_args(__doc__, default_repeat=3)
    n, n_keys = (300, 300) if args.smoke else (20_000, 10_000)
    n_s3, n_requests = (20, 50) if args.smoke else (500, 200)
    report = Report("cache: cold and warm maps, one cache operation, local and on S3", args)
    daft = ("DaftEngine(collect=True)", DaftEngine, {"collect": True})
    with tempfile.TemporaryDirectory(prefix="hypernodes-daft-cache-bench-") as tmp:
        root = Path(tmp)
        local = Storage("an empty dir", lambda name: DiskCache(root / name), *LOCAL_BUDGETS)
        for name, make, options in [("HypernodesEngine()", HypernodesEngine, {}), daft]:
            map_bench(report, name, make, options, n, 0.001, local, args.repeat)
        ops_bench(report, n_keys, root, args.repeat)

    server = S3Server.start()
    try:
        server.create_bucket(BUCKET)
        s3 = object_storage(report, server, n_requests, args.repeat)
        map_bench(report, *daft, n_s3, 0.1, s3, args.repeat)
    finally:
        server.stop()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
