"""The local engine's executors against plain Python doing the same work (issue 4).

Each `HypernodesEngine(node_executor=..., map_executor=..., max_workers=...,
max_concurrency=...)` variant is compared with a baseline measured in the same run:
- CPU-bound: 8 x fib(27), map_executor="parallel", warm pool: >= 1.7x faster than the
  sequential engine and <= 1.1x a warm plain ProcessPoolExecutor; cold first calls reported.
- sync `time.sleep(0.1)`, 50 items, map_executor="threaded", max_workers=50: <= 1.2x a plain
  ThreadPoolExecutor(50).
- async `asyncio.sleep(0.1)`, map_executor="async": 50 items <= 1.05x `asyncio.gather`;
  10,000 items with max_concurrency=10000 <= 1.3x `asyncio.gather`.
- trivial sync 3-node chain, 10,000 items, map_executor="async": <= 30 us per item.
- a diamond, load_data -> (compute_a, compute_b) -> combine, 0.1 s each,
  node_executor="threaded": <= 0.35 s (sequential: about 0.4 s).
Executors the engine does not support yet show as "unsupported".
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from itertools import repeat  # noqa: E402

from _common import (  # noqa: E402
    Budget,
    Report,
    best_of,
    call_label,
    chain,
    chain_outputs,
    closing,
    parse_args,
)

import hypernodes_daft  # noqa: E402
from hypernodes_daft import HypernodesEngine, Pipeline, node  # noqa: E402


class Unsupported(Exception):
    """This version of the engine does not accept the options."""


def local_engine(**options):
    """A `HypernodesEngine(**options)`, closed afterwards; Unsupported when it rejects them."""
    try:
        engine = HypernodesEngine(**options)
    except ValueError as error:  # an executor name the engine does not know (yet)
        raise Unsupported(str(error)) from error
    except TypeError as error:  # an option the engine does not take (yet)
        if "unexpected keyword argument" not in str(error):
            raise
        raise Unsupported(str(error)) from error
    return closing(engine)


def label(**options) -> str:
    return call_label("HypernodesEngine", **options)


def engine_rows(report, workload, options, measure, items, judged=((None, None),), note=""):
    """`measure(options)` once, then one row per (baseline, budget) of `judged`; rows say
    "unsupported" when the engine rejects `options`."""
    variant = label(**options) + note
    try:
        timing = measure(options)
    except Unsupported as reason:
        for baseline, budget in judged:
            report.skip(workload, variant, "unsupported", str(reason), baseline, budget)
        return
    for baseline, budget in judged:
        report.add(workload, variant, timing, items, baseline, budget)


def mapper(pipeline, inputs, map_over, expected, repeats):
    """A `measure(options)`: best-of-N `pipeline.map` on one engine, results checked."""

    def measure(options):
        with local_engine(**options) as engine:
            timing = best_of(lambda: pipeline.map(inputs, map_over, engine=engine), repeats)
        assert timing.result == expected, f"{label(**options)}: wrong results"
        return timing

    return measure


def sequential(pipeline, inputs, map_over, expected, repeats):
    """Best-of-N `pipeline.map` on the default sequential engine, results checked."""
    engine = HypernodesEngine()
    timing = best_of(lambda: pipeline.map(inputs, map_over, engine=engine), repeats)
    assert timing.result == expected, "sequential engine: wrong results"
    return timing


# -- workloads: module-level so that worker processes can import them ----------------------


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def sleep_sync(x, delay):
    time.sleep(delay)
    return x


async def sleep_async(x, delay):
    await asyncio.sleep(delay)
    return x


def gather(n, delay):
    """Plain `asyncio.gather` of n coroutines: (seconds around the gather, results)."""

    async def main():
        start = time.perf_counter()
        results = await asyncio.gather(*(sleep_async(x, delay) for x in range(n)))
        return time.perf_counter() - start, results

    return asyncio.run(main())


@node(output_name="data")
def load_data(delay):
    time.sleep(delay)
    return [1, 2, 3, 4, 5]


@node(output_name="stat_a")
def compute_a(data, delay):
    time.sleep(delay)
    return sum(data)


@node(output_name="stat_b")
def compute_b(data, delay):
    time.sleep(delay)
    return max(data)


@node(output_name="result")
def combine(stat_a, stat_b, delay):
    time.sleep(delay)
    return {"sum": stat_a, "max": stat_b}


# -- benchmarks ------------------------------------------------------------------------------


def cpu_bound(report, smoke, repeats):
    n, count = (18, 4) if smoke else (27, 8)
    workers = os.cpu_count()
    workload = f"fib({n}) x {count}, CPU-bound, {workers} cores"
    pipeline = Pipeline(nodes=[node(output_name="value")(fib)])
    inputs, ns, expected = {"n": [n] * count}, [n] * count, [{"value": fib(n)}] * count
    parallel = {"map_executor": "parallel"}

    seq_row = report.add(
        workload, "sequential engine", sequential(pipeline, inputs, "n", expected, repeats), count
    )
    with ProcessPoolExecutor(workers) as pool:  # best_of's warm-up call starts the workers
        warm = best_of(lambda: list(pool.map(fib, ns)), repeats)
    pool_row = report.add(workload, f"ProcessPoolExecutor({workers}), warm", warm, count)
    judged = ((seq_row, Budget("speedup_min", 1.7)), (pool_row, Budget("ratio_max", 1.1)))
    measure = mapper(pipeline, inputs, "n", expected, repeats)
    engine_rows(report, workload, parallel, measure, count, judged, ", warm")

    def cold_pool():  # start-up and first call; shutting down is not timed
        start = time.perf_counter()
        pool = ProcessPoolExecutor(workers)
        results = list(pool.map(fib, ns))
        elapsed = time.perf_counter() - start
        pool.shutdown()
        return elapsed, results

    def cold_engine(options):  # a new engine each time: start-up and first call
        def first_call():
            start = time.perf_counter()
            with local_engine(**options) as engine:
                results = pipeline.map(inputs, "n", engine=engine)
                return time.perf_counter() - start, results

        timing = best_of(first_call, min(repeats, 3), warmup=0, self_timed=True)
        assert timing.result == expected
        return timing

    cold = best_of(cold_pool, min(repeats, 3), warmup=0, self_timed=True)
    start_method = multiprocessing.get_start_method()
    variant = f"ProcessPoolExecutor({workers}), cold incl. start ({start_method})"
    cold_row = report.add(workload, variant, cold, count)
    judged = ((cold_row, None),)
    engine_rows(report, workload, parallel, cold_engine, count, judged, ", cold incl. start")


def threaded_io(report, smoke, repeats):
    count, delay = 50, (0.01 if smoke else 0.1)
    workload = f"time.sleep({delay}) x {count}, sync I/O"
    xs = list(range(count))

    with ThreadPoolExecutor(count) as pool:  # reused, like the engine's pool
        timing = best_of(lambda: list(pool.map(sleep_sync, xs, repeat(delay))), repeats)
    assert timing.result == xs
    base = report.add(workload, f"ThreadPoolExecutor({count}), warm", timing, count)
    pipeline = Pipeline(nodes=[node(output_name="slept")(sleep_sync)])
    measure = mapper(pipeline, {"x": xs, "delay": delay}, "x", [{"slept": x} for x in xs], repeats)
    options = {"map_executor": "threaded", "max_workers": count}
    engine_rows(report, workload, options, measure, count, ((base, Budget("ratio_max", 1.2)),))


def async_io(report, smoke, repeats):
    delay = 0.01 if smoke else 0.1
    pipeline = Pipeline(nodes=[node(output_name="slept")(sleep_async)])
    for count, limit, options in (
        (50, 1.05, {"map_executor": "async"}),
        (200 if smoke else 10_000, 1.3, {"map_executor": "async", "max_concurrency": 10_000}),
    ):
        workload = f"asyncio.sleep({delay}) x {count:,}, async I/O"
        xs = list(range(count))
        timing = best_of(lambda n=count: gather(n, delay), repeats, self_timed=True)
        assert timing.result == xs
        base = report.add(workload, "asyncio.gather", timing, count)
        expected = [{"slept": x} for x in xs]
        measure = mapper(pipeline, {"x": xs, "delay": delay}, "x", expected, repeats)
        engine_rows(
            report, workload, options, measure, count, ((base, Budget("ratio_max", limit)),)
        )


def async_overhead(report, smoke, repeats):
    count = 200 if smoke else 10_000
    workload = f"trivial sync 3-node chain, {count:,} items"
    pipeline = Pipeline(nodes=chain(hypernodes_daft))
    inputs, expected = {"x": list(range(count))}, chain_outputs(range(count))
    seq = sequential(pipeline, inputs, "x", expected, repeats)
    base = report.add(workload, "sequential engine", seq, count)
    measure = mapper(pipeline, inputs, "x", expected, repeats)
    judged = ((base, Budget("us_per_item_max", 30)),)
    engine_rows(report, workload, {"map_executor": "async"}, measure, count, judged)


def node_level(report, smoke, repeats):
    delay = 0.01 if smoke else 0.1
    workload = f"diamond: load -> (a, b) -> combine, {delay} s each"
    pipeline = Pipeline(nodes=[load_data, compute_a, compute_b, combine])
    inputs = {"delay": delay}
    expected = {"data": [1, 2, 3, 4, 5], "stat_a": 15, "stat_b": 5, "result": {"sum": 15, "max": 5}}

    def measure(options):
        with local_engine(**options) as engine:
            timing = best_of(lambda: pipeline.run(inputs, engine=engine), repeats)
        assert timing.result == expected, f"{label(**options)}: wrong results"
        return timing

    base = report.add(workload, "sequential engine", measure({}))
    judged = ((base, Budget("seconds_max", round(3.5 * delay, 3))),)
    engine_rows(report, workload, {"node_executor": "threaded"}, measure, 1, judged)


def main() -> int:
    args = parse_args(__doc__)
    report = Report("local executors vs plain Python", args)
    slow = min(args.repeat, 3)  # workloads of 0.1 s and more: best of 3
    cpu_bound(report, args.smoke, args.repeat)  # first: forks before any thread is started
    threaded_io(report, args.smoke, args.repeat)
    async_io(report, args.smoke, slow)
    async_overhead(report, args.smoke, args.repeat)
    node_level(report, args.smoke, slow)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
