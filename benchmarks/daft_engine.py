"""DaftEngine against plain Daft and plain Python doing the same work (issue 5).

Every baseline is measured in the same run, over the same deterministic Parquet files
(1,000,000 rows; 20,000 in --smoke), written to a temp dir: one int64 column `x`, 0..n-1,
and one string column `s`, "abcd-0", "abcd-1", ...:
- trivial sync 3-node chain (a = x + 1, b = a * 2, c = b - 3), `DaftEngine(collect=False)`
  over `read_parquet(path)`, collected with `.to_arrow()`: the nodes run as native Daft
  expressions; <= 2x Daft's native `(col("x") + 1) * 2 - 3` over the same file (the frame's
  planning, sample and verification queries included), >= 20x faster than one row-wise
  `@daft.func` per node chained over the same Parquet (best of 1, no warm-up: ~10 s), and
  <= 3x a plain Python loop over the column already in memory as a list.
  `DaftEngine(collect=False, native=False)` (the nodes as one Python function): <= 3x the
  loop. `DaftEngine(collect=True)` (to Python dicts) is reported, with no budget.
- a 3-node chain that cannot be traced (each node returns its string's `.translate(TABLE)`,
  TABLE a `str.maketrans`) over `s`, `DaftEngine(collect=False)` + `.to_arrow()`: <= 1.5x a
  plain Python loop calling the three functions over the column in memory. For reference,
  a hand-written `@daft.func.batch` running the loop on each batch (what Daft itself costs:
  the column to a list and back, its threads) is reported, and the engine against it.
- async node awaiting `asyncio.sleep(0.1)`, `max_concurrency=10000`, 10,000 items from a
  dict input, `DaftEngine()`: <= 1.3x `asyncio.gather` of the same 10,000 coroutines (timed
  around the gather). A row-wise async `@daft.func` is reported for reference.
- batch node (`pyarrow.compute.add(x, 1)` on a pyarrow Array), `DaftEngine(collect=False)`
  + `.to_arrow()` over the Parquet: <= 2x Daft's native `(col("x") + 1)` expression.
Each engine row's note says which nodes ran natively and which as Python functions (the
`UDF hypernodes.<node>+<node>` entries of the lazy frame's physical plan).
Results are checked (row counts, first values, sums; every value for Python rows and
strings): an engine row with wrong results says WRONG and the script exits 1 after the
table.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
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


TABLE = str.maketrans("abcd", "bcda")  # three passes are not the identity


def swap1(s: str) -> str:  # `.translate` has no Daft expression: the node stays in Python
    return s.translate(TABLE)


def swap2(s1: str) -> str:
    return s1.translate(TABLE)


def swap3(s2: str) -> str:
    return s2.translate(TABLE)


CHAIN = [
    node(output_name="a")(add_one),
    node(output_name="b")(double),
    node(output_name="c")(minus_three),
]
SWAPS = [
    node(output_name="s1")(swap1),
    node(output_name="s2")(swap2),
    node(output_name="s3")(swap3),
]


def label(**options) -> str:
    return call_label("DaftEngine", **options)


def write_dataset(directory: Path, n: int) -> tuple[str, str]:
    """Two Parquet files of n rows (deterministic): an int64 column `x` = 0..n-1, and a
    string column `s` = "abcd-0", "abcd-1", ..."""
    paths = directory / "x.parquet", directory / "s.parquet"
    pq.write_table(pa.table({"x": pa.array(range(n), type=pa.int64())}), paths[0])
    pq.write_table(pa.table({"s": pa.array([f"abcd-{i}" for i in range(n)])}), paths[1])
    return str(paths[0]), str(paths[1])


def mapped(pipeline: Pipeline, path: str, column: str, output: str, engine: DaftEngine):
    """`pipeline` mapped over the Parquet file's `column` (a lazy frame with collect=False)."""
    inputs = read_parquet(path)
    return pipeline.map(inputs=inputs, map_over=column, output_name=output, engine=engine)


def how_nodes_ran(frame: daft.DataFrame, nodes: list) -> str:
    """Which of `nodes` the lazy frame's physical plan runs natively (no Python function)
    and which as Python functions: Daft names each function `hypernodes.<node>+<node>...`
    (the nodes it runs together), then its requests and why its nodes are not native."""
    buffer = io.StringIO()
    frame.explain(show_all=True, file=buffer)
    physical = buffer.getvalue().split("== Physical Plan ==")[-1]
    functions = re.findall(r"UDF hypernodes\.([^:(\[\s]+)", physical)
    python = {name for function in functions for name in function.split("+")}
    native = [n.name for n in nodes if n.name not in python]
    return "; ".join(
        [f"native: {', '.join(native)}"] * bool(native)
        + [f"python: {', '.join(functions)}"] * bool(functions)
    )


def engine_rows(report, workload, variant, timing, items, judged, check, note=""):
    """One row per (baseline, budget) of `judged` for an engine measurement; when `check()`
    finds wrong results the rows say WRONG (whatever the time) and the script exits 1 after
    printing the table, so the other workloads are still measured. `note`: how its nodes
    ran (`how_nodes_ran`), prefixed with the workload (several share a variant's name)."""
    wrong = check_failure(check)
    if wrong:
        wrong = wrong.removeprefix(variant + ": ")
    note = f"{workload}: {note}" if note else ""
    for baseline, budget in judged:
        report.add(workload, variant, timing, items, baseline, budget, note, wrong)


def arrow_rows(report, workload, pipeline, source, repeats, options, judged, check):
    """`pipeline` mapped over `source` (Parquet path, column, output, rows) by
    `DaftEngine(**options)` (collect=False) and collected with `.to_arrow()`: its rows, with
    how the nodes ran; `check(table, who)` asserts the table is right."""
    path, column, output, n = source
    with closing(DaftEngine(**options)) as engine:
        timing = best_of(lambda: mapped(pipeline, path, column, output, engine).to_arrow(), repeats)
        ran = how_nodes_ran(mapped(pipeline, path, column, output, engine), pipeline.nodes)
    variant = label(**options) + " + .to_arrow()"
    check = partial(check, timing.result, variant)
    engine_rows(report, workload, variant, timing, n, judged, check, ran)


def check_column(table: pa.Table, name: str, n: int, first: list[int], total: int, who: str):
    """`table[name]` has n rows, starts with `first`, ends like it should and sums to total."""
    assert table.num_rows == n, f"{who}: {table.num_rows} rows, expected {n}"
    column = table.column(name)
    head = column.slice(0, len(first)).to_pylist()
    assert head == first, f"{who}: {name} starts with {head}, expected {first}"
    assert pc.sum(column).as_py() == total, f"{who}: wrong sum of {name}"


def check_rows(rows: list[dict], name: str, expected: list, who: str):
    """`rows` (collect=True, or a table's `to_pylist()`) are one dict per item, in order,
    with `name` right."""
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

    expression = ((col("x") + 1) * 2 - 3).alias("c")
    native = best_of(lambda: daft.read_parquet(path).select("x", expression).to_arrow(), repeats)
    check_column(native.result, "c", n, first, total, "native expression")
    native_row = report.add(workload, 'Daft native ((col("x") + 1) * 2 - 3)', native, n)

    fa, fb, fc = daft.func(add_one), daft.func(double), daft.func(minus_three)

    def udfs():
        df = daft.read_parquet(path)
        df = df.with_column("a", fa(col("x"))).with_column("b", fb(col("a")))
        return df.with_column("c", fc(col("b"))).select("x", "c").to_arrow()

    rowwise = best_of(udfs, repeat=1, warmup=0)  # ~10 s a call on 1M rows
    check_column(rowwise.result, "c", n, first, total, "row-wise @daft.func")
    udf_row = report.add(workload, "one row-wise @daft.func per node, best of 1", rowwise, n)

    pipeline = Pipeline(nodes=CHAIN)
    source = path, "x", "c", n
    within = Budget("ratio_max", 3)

    def check(table, who):
        check_column(table, "c", n, first, total, who)

    judged = (udf_row, Budget("speedup_min", 20)), (loop_row, within)
    judged += ((native_row, Budget("ratio_max", 2)),)
    arrow_rows(report, workload, pipeline, source, repeats, {"collect": False}, judged, check)
    python = {"collect": False, "native": False}  # tracing off: the nodes run in Python
    arrow_rows(report, workload, pipeline, source, repeats, python, ((loop_row, within),), check)

    options = {"collect": True}
    with closing(DaftEngine(**options)) as engine:
        timing = best_of(lambda: mapped(pipeline, path, "x", "c", engine), min(repeats, 3))
    with closing(DaftEngine(collect=False)) as engine:  # the same plan, left lazy
        ran = how_nodes_ran(mapped(pipeline, path, "x", "c", engine), pipeline.nodes)
    variant = label(**options) + ", to Python dicts"
    check = partial(check_rows, timing.result, "c", expected, variant)
    engine_rows(report, workload, variant, timing, n, ((loop_row, None),), check, ran)


def untraced_bench(report: Report, path: str, n: int, repeats: int):
    workload = f"3-node str.translate chain (not traceable), {n:,} rows of Parquet"
    texts = pq.read_table(path).column("s").to_pylist()  # the loop's input, in memory
    expected = [swap3(swap2(swap1(s))) for s in texts]

    loop = best_of(lambda: [swap3(swap2(swap1(s))) for s in texts], repeats)
    assert loop.result == expected
    loop_row = report.add(workload, "plain Python loop over a list in memory", loop, n)

    def check(table, who):
        check_rows(table.to_pylist(), "s3", expected, who)

    # Daft's own floor for Python code: the column to a list, the loop, the list to Arrow
    @daft.func.batch(return_dtype=daft.DataType.string())
    def swaps(s: pa.Array) -> pa.Array:
        return pa.array([swap3(swap2(swap1(text))) for text in s.to_pylist()])

    batch = best_of(
        lambda: daft.read_parquet(path).select("s", swaps(col("s")).alias("s3")).to_arrow(),
        repeats,
    )
    check(batch.result, "@daft.func.batch")
    variant = "one @daft.func.batch running the three functions (reference)"
    batch_row = report.add(workload, variant, batch, n, loop_row)

    judged = (loop_row, Budget("ratio_max", 1.5)), (batch_row, None)
    source = path, "s", "s3", n
    options = {"collect": False}
    arrow_rows(report, workload, Pipeline(nodes=SWAPS), source, repeats, options, judged, check)


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
    with closing(DaftEngine(collect=False)) as engine:  # the same plan, left lazy
        ran = how_nodes_ran(
            pipeline.map(inputs={"x": xs}, map_over="x", engine=engine), pipeline.nodes
        )
    variant = "DaftEngine(), node max_concurrency=10000"
    check = partial(check_rows, timing.result, "y", xs, variant)
    judged = ((base, Budget("ratio_max", 1.3)),)
    engine_rows(report, workload, variant, timing, n, judged, check, ran)


def batch_bench(report: Report, path: str, n: int, repeats: int):
    workload = f"batch node x + 1, {n:,} rows of Parquet"
    first, total = list(range(1, 6)), n * (n - 1) // 2 + n

    native = best_of(
        lambda: daft.read_parquet(path).select((col("x") + 1).alias("y")).to_arrow(), repeats
    )
    check_column(native.result, "y", n, first, total, "native expression")
    base = report.add(workload, 'Daft native (col("x") + 1)', native, n)

    pipeline = Pipeline(nodes=[node(output_name="y", batch=True)(add_one_arrow)])

    def check(table, who):
        check_column(table, "y", n, first, total, who)

    judged = ((base, Budget("ratio_max", 2)),)
    source = path, "x", "y", n
    arrow_rows(report, workload, pipeline, source, repeats, {"collect": False}, judged, check)


def main() -> int:
    args = parse_args(__doc__)
    rows, items = (20_000, 200) if args.smoke else (1_000_000, 10_000)
    slow = min(args.repeat, 3)  # workloads of 0.1 s and more: best of 3
    report = Report("DaftEngine vs plain Daft and plain Python", args)
    with tempfile.TemporaryDirectory(prefix="hypernodes-daft-bench-") as tmp:
        path, strings = write_dataset(Path(tmp), rows)
        daft.read_parquet(path).to_arrow()  # start Daft's runner: the best-of-1 row skips it
        chain_bench(report, path, rows, args.repeat)
        untraced_bench(report, strings, rows, args.repeat)
        async_bench(report, items, slow)
        batch_bench(report, path, rows, args.repeat)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
