"""Per-item overhead of the sequential engine (issue 3).

A 3-node chain of trivial functions (x + 1, * 2, - 3) mapped over 10,000 items with the
default `HypernodesEngine()`, no cache. Budget: <= 5 us per item. Measured in the same run
for comparison: a plain Python loop calling the three functions, HyperNodes 0.4.8 (the
reference implementation) mapping the same chain with its default SeqEngine, and
`pipeline.run` called once per item in a loop; plus the cost of `.run()` on one item.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import sys  # noqa: E402
from importlib import metadata  # noqa: E402
from time import perf_counter  # noqa: E402

from _common import (  # noqa: E402
    Budget,
    Report,
    add_one,
    best_of,
    chain,
    chain_outputs,
    double,
    minus_three,
    parse_args,
)

import hypernodes_daft  # noqa: E402
from hypernodes_daft import HypernodesEngine, Pipeline  # noqa: E402

BUDGET_US_PER_ITEM = 5


def main() -> int:
    args = parse_args(__doc__)
    n = 200 if args.smoke else 10_000
    xs = list(range(n))
    expected = chain_outputs(xs)
    workload = f"3-node chain, {n:,} items"
    report = Report("overhead: sequential engine, trivial 3-node chain", args)

    def check(timing, variant):
        assert timing.result == expected, f"{variant}: wrong results"
        return timing

    loop = best_of(lambda: [minus_three(double(add_one(x))) for x in xs], args.repeat)
    assert loop.result == [e["c"] for e in expected]
    base = report.add(workload, "plain Python loop", loop, n)

    pipeline = Pipeline(nodes=chain(hypernodes_daft), engine=HypernodesEngine())
    mapped = best_of(lambda: pipeline.map(inputs={"x": xs}, map_over="x"), args.repeat)
    report.add(
        workload,
        "hypernodes_daft map, HypernodesEngine()",
        check(mapped, "map"),
        n,
        base,
        Budget("us_per_item_max", BUDGET_US_PER_ITEM),
    )

    try:
        import hypernodes as upstream
    except ImportError:
        report.skip(
            workload,
            "hypernodes 0.4.8 map, SeqEngine",
            "skipped",
            "hypernodes is not installed (pip install -e '.[test]')",
            base,
        )
    else:
        version = metadata.version("hypernodes")
        reference = upstream.Pipeline(nodes=chain(upstream), engine=upstream.SeqEngine())
        timing = best_of(lambda: reference.map(inputs={"x": xs}, map_over="x"), args.repeat)
        report.add(
            workload, f"hypernodes {version} map, SeqEngine", check(timing, "upstream"), n, base
        )

    per_run = best_of(lambda: [pipeline.run(inputs={"x": x}) for x in xs], args.repeat)
    report.add(
        workload, "hypernodes_daft run() per item, in a loop", check(per_run, "run loop"), n, base
    )

    one = "one item"
    calls = 100 if args.smoke else 10_000  # calls of a few microseconds: many per sample
    plain_one = report.add(
        one,
        "plain call of the three functions",
        best_of(lambda: minus_three(double(add_one(1))), args.repeat, number=calls),
    )
    warm = best_of(lambda: pipeline.run(inputs={"x": 1}), args.repeat, number=calls)
    report.add(one, "hypernodes_daft run(), warm", warm, 1, plain_one)

    def first_run():  # a new pipeline's first run: includes planning and compiling
        fresh = Pipeline(nodes=chain(hypernodes_daft), engine=HypernodesEngine())
        start = perf_counter()
        result = fresh.run(inputs={"x": 1})
        return perf_counter() - start, result

    cold = best_of(first_run, 5 if args.smoke else 50, self_timed=True)
    assert warm.result == cold.result == {"a": 2, "b": 4, "c": 1}
    report.add(one, "hypernodes_daft run(), first call of a new pipeline", cold, 1, plain_one)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
