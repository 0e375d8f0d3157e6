"""DaftEngine against plain Daft and plain Python doing the same work (issue 5).

Every baseline is measured in the same run, over the same deterministic Parquet file (one
int64 column `x`, 0..n-1, 1,000,000 rows; 20,000 in --smoke), written to a temp dir:
- trivial sync 3-node chain (a = x + 1, b = a * 2, c = b - 3), `DaftEngine(collect=False)`
  over `read_parquet(path)`, collected with `.to_arrow()`: >= 20x faster than one row-wise
  `@daft.func` per node chained over the same Parquet (best of 1, no warm-up: ~10 s), and
  <= 3x a plain Python loop over the column already in memory as a list.
  `DaftEngine(collect=True)` (to Python dicts) is reported, with no budget.
- async node awaiting `asyncio.sleep(0.1)`, `max_concurrency=10000`, 10,000 items from a
  dict input, `DaftEngine()`: <= 1.3x `asyncio.gather` of the same 10,000 coroutines (timed
  around the gather). A row-wise async `@daft.func` is reported for reference.
- batch node (`pyarrow.compute.add(x, 1)` on a pyarrow Array), `DaftEngine(collect=False)`
  + `.to_arrow()` over the Parquet: <= 2x Daft's native `(col("x") + 1)` expression.
Results are checked (row counts, first values, sums; every value for Python rows): an
engine row with wrong results says WRONG and the script exits 1 after the table.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import daft  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _common import (  # noqa: E402
    Budget,
    Report,
    best_of,
    call_label,
    check_failure,
    closing,
    parse_args,
)
from daft import col  # noqa: E402

from hypernodes_daft import DaftEngine, Pipeline, node, read_parquet  # noqa: E402

# -- workloads: module-level plain functions, wrapped as nodes and as Daft UDFs ------------


def add_one(x: int) -> int:
    return x + 1


def double(a: int) -> int:
    return a * 2


def minus_three(b: int) -> int:
    return b - 3


async def sleep_then_echo(x: int) -> int:
    await asyncio.sleep(0.1)
    return x


def add_one_arrow(x):  # a batch node: receives the whole column as a pyarrow Array
    return pc.add(x, 1)


CHAIN = [
    node(output_name="a")(add_one),
    node(output_name="b")(double),
    node(output_name="c")(minus_three),
]


def label(**options) -> str:
    return call_label("DaftEngine", **options)


def write_dataset(directory: Path, n: int) -> str:
    """One Parquet file, one int64 column `x` = 0..n-1 (deterministic)."""
    path = directory / "x.parquet"
    pq.write_table(pa.table({"x": pa.array(range(n), type=pa.int64())}), path)
    return str(path)


def engine_rows(report, workload, variant, timing, items, judged, check):
    """One row per (baseline, budget) of `judged` for an engine measurement; when `check()`
    finds wrong results the rows say WRONG (whatever the time) and the script exits 1 after
    printing the table, so the other workloads are still measured."""
    wrong = check_failure(check)
    if wrong:
        wrong = wrong.removeprefix(variant + ": ")
    for baseline, budget in judged:
        report.add(workload, variant, timing, items, baseline, budget, wrong=wrong)


def check_column(table: pa.Table, name: str, n: int, first: list[int], total: int, who: str):
    """`table[name]` has n rows, starts with `first`, ends like it should and sums to total."""
    assert table.num_rows == n, f"{who}: {table.num_rows} rows, expected {n}"
    column = table.column(name)
    head = column.slice(0, len(first)).to_pylist()
    assert head == first, f"{who}: {name} starts with {head}, expected {first}"
    assert pc.sum(column).as_py() == total, f"{who}: wrong sum of {name}"


def check_rows(rows: list[dict], name: str, expected: list[int], who: str):
    """`rows` (collect=True) are one dict per item, in order, with `name` right."""
    assert isinstance(rows, list), f"{who}: returned {type(rows).__name__}, expected a list"
    got = [row[name] for row in rows]
    assert got == expected, f"{who}: wrong {name} values"


# -- benchmarks ------------------------------------------------------------------------------


def chain_bench(report: Report, path: str, n: int, repeats: int):
    workload = f"3-node chain, {n:,} rows of Parquet"
    xs = pq.read_table(path).column("x").to_pylist()  # the loop's input, already in memory
    expected = [minus_three(double(add_one(x))) for x in xs]  # 2x - 1
    first, total = expected[:5], sum(expected)

    loop = best_of(lambda: [minus_three(double(add_one(x))) for x in xs], repeats)
    assert loop.result == expected
    loop_row = report.add(workload, "plain Python loop over a list in memory", loop, n)

    fa, fb, fc = daft.func(add_one), daft.func(double), daft.func(minus_three)

    def udfs():
        df = daft.read_parquet(path)
        df = df.with_column("a", fa(col("x"))).with_column("b", fb(col("a")))
        return df.with_column("c", fc(col("b"))).select("x", "c").to_arrow()

    rowwise = best_of(udfs, repeat=1, warmup=0)  # ~10 s a call on 1M rows
    check_column(rowwise.result, "c", n, first, total, "row-wise @daft.func")
    udf_row = report.add(workload, "one row-wise @daft.func per node, best of 1", rowwise, n)

    pipeline = Pipeline(nodes=CHAIN)
    options = {"collect": False}
    with closing(DaftEngine(**options)) as engine:

        def lazy():
            inputs = read_parquet(path)
            return pipeline.map(inputs=inputs, map_over="x", output_name="c", engine=engine)

        timing = best_of(lambda: lazy().to_arrow(), repeats)
    variant = label(**options) + " + .to_arrow()"
    judged = ((udf_row, Budget("speedup_min", 20)), (loop_row, Budget("ratio_max", 3)))
    check = partial(check_column, timing.result, "c", n, first, total, variant)
    engine_rows(report, workload, variant, timing, n, judged, check)

    options = {"collect": True}
    with closing(DaftEngine(**options)) as engine:

        def collected():
            inputs = read_parquet(path)
            return pipeline.map(inputs=inputs, map_over="x", output_name="c", engine=engine)

        timing = best_of(collected, min(repeats, 3))
    variant = label(**options) + ", to Python dicts"
    check = partial(check_rows, timing.result, "c", expected, variant)
    engine_rows(report, workload, variant, timing, n, ((loop_row, None),), check)


def gather(n: int):
    """Plain `asyncio.gather` of n coroutines: (seconds around the gather, results)."""

    async def main():
        start = time.perf_counter()
        results = await asyncio.gather(*(sleep_then_echo(x) for x in range(n)))
        return time.perf_counter() - start, results

    return asyncio.run(main())


def async_bench(report: Report, n: int, repeats: int):
    workload = f"asyncio.sleep(0.1) x {n:,}, async node"
    xs = list(range(n))

    timing = best_of(lambda: gather(n), repeats, self_timed=True)
    assert timing.result == xs
    base = report.add(workload, "asyncio.gather", timing, n)

    df = daft.from_pydict({"x": xs})
    echo = daft.func(sleep_then_echo)
    timing = best_of(lambda: df.select(echo(col("x")).alias("y")).to_pydict(), repeats)
    assert timing.result["y"] == xs, "async @daft.func: wrong results"
    report.add(workload, "async row-wise @daft.func (reference)", timing, n, base)

    echo_node = node(output_name="y", max_concurrency=10_000)(sleep_then_echo)
    pipeline = Pipeline(nodes=[echo_node])
    with closing(DaftEngine()) as engine:
        timing = best_of(
            lambda: pipeline.map(inputs={"x": xs}, map_over="x", engine=engine), repeats
        )
    variant = "DaftEngine(), node max_concurrency=10000"
    check = partial(check_rows, timing.result, "y", xs, variant)
    engine_rows(report, workload, variant, timing, n, ((base, Budget("ratio_max", 1.3)),), check)


def batch_bench(report: Report, path: str, n: int, repeats: int):
    workload = f"batch node x + 1, {n:,} rows of Parquet"
    first, total = list(range(1, 6)), n * (n - 1) // 2 + n

    native = best_of(
        lambda: daft.read_parquet(path).select((col("x") + 1).alias("y")).to_arrow(), repeats
    )
    check_column(native.result, "y", n, first, total, "native expression")
    base = report.add(workload, 'Daft native (col("x") + 1)', native, n)

    pipeline = Pipeline(nodes=[node(output_name="y", batch=True)(add_one_arrow)])
    options = {"collect": False}
    with closing(DaftEngine(**options)) as engine:

        def lazy():
            inputs = read_parquet(path)
            return pipeline.map(inputs=inputs, map_over="x", output_name="y", engine=engine)

        timing = best_of(lambda: lazy().to_arrow(), repeats)
    variant = label(**options) + " + .to_arrow()"
    check = partial(check_column, timing.result, "y", n, first, total, variant)
    engine_rows(report, workload, variant, timing, n, ((base, Budget("ratio_max", 2)),), check)


def main() -> int:
    args = parse_args(__doc__)
    rows, items = (20_000, 200) if args.smoke else (1_000_000, 10_000)
    slow = min(args.repeat, 3)  # workloads of 0.1 s and more: best of 3
    report = Report("DaftEngine vs plain Daft and plain Python", args)
    with tempfile.TemporaryDirectory(prefix="hypernodes-daft-bench-") as tmp:
        path = write_dataset(Path(tmp), rows)
        daft.read_parquet(path).to_arrow()  # start Daft's runner: the best-of-1 row skips it
        chain_bench(report, path, rows, args.repeat)
        async_bench(report, items, slow)
        batch_bench(report, path, rows, args.repeat)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
