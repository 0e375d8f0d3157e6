"""Jobs the Ray integration tests run, each in its own process: Daft keeps one runner per
process, and the test session itself runs Daft on the native runner.

    python tests/ray/jobs.py <job> <ray address, or - for none> [argument]

The last line printed is the job's report, as JSON. With `-`, `DaftEngine(runner="ray")`
finds the cluster itself, as in a script submitted with `ray job submit`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

from hypernodes_daft._local_only import keep_local

keep_local()

import cloudpickle  # noqa: E402
import ray  # noqa: E402

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node, stateful  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))
import scenarios  # noqa: E402

# The workers have no copy of the tests: send the scenarios' functions by value.
cloudpickle.register_pickle_by_value(scenarios)


def where() -> str:
    return ray.get_runtime_context().get_node_id()


def job_scenarios(engine: DaftEngine, _: str) -> dict:
    """Every shared scenario: True when the result equals the oracle's."""
    report = {}
    for scenario in scenarios.SCENARIOS:
        result = scenario.execute(engine)
        if scenario.name == "python_objects":
            ok = [r["index"] for r in result] == [{"a": 1, "b": 1}, {"c": 2}] and [
                r["doc"].words for r in result
            ] == [("a", "b"), ("c",)]
        else:
            ok = result == scenario.expected
        report[scenario.name] = ok or repr(result)[:500]
    return report


def job_spread(engine: DaftEngine, _: str) -> dict:
    """The node each row ran on; closures over driver values travel with the node. The
    engine's default partitions (twice the cluster's CPUs) spread a list over the nodes."""
    engine = DaftEngine(runner="ray", address=engine.address)
    offset = 1000

    @node(output_name="out")
    def tag(x: int) -> str:
        time.sleep(0.002)
        return f"{x + offset}@{where()}"

    rows = Pipeline(nodes=[tag]).map(inputs={"x": list(range(400))}, map_over="x", engine=engine)
    values, nodes = zip(*(r["out"].split("@") for r in rows), strict=True)
    return {"values": [int(v) for v in values], "rows_per_node": _count(nodes)}


def job_async_bound(engine: DaftEngine, _: str) -> dict:
    """Peak calls in flight per worker process of an async node with max_concurrency=3."""

    @node(output_name="peak", max_concurrency=3)
    async def slow(x: int) -> list:
        state = _process_state()
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return [os.getpid(), state["peak"], x]

    rows = Pipeline(nodes=[slow]).map(inputs={"x": list(range(120))}, map_over="x", engine=engine)
    peaks: dict[str, int] = {}
    for pid, peak, _x in (r["peak"] for r in rows):
        peaks[str(pid)] = max(peaks.get(str(pid), 0), peak)
    return {"peaks": peaks, "xs": [r["peak"][2] for r in rows]}


@stateful
class Model:
    def __init__(self, weight: int):
        _process_state()["inits"] += 1
        self.weight = weight

    def predict(self, x: int) -> int:
        return x * self.weight


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def job_stateful(engine: DaftEngine, _: str) -> dict:
    """How many times each worker process built the @stateful model."""

    @node(output_name="y")
    def predict(x: int, model: Model) -> list:
        return [model.predict(x), os.getpid(), _process_state()["inits"]]

    rows = Pipeline(nodes=[predict]).map(
        inputs={"x": list(range(300)), "model": Model(3)}, map_over="x", engine=engine
    )
    inits = {str(pid): n for _, pid, n in (r["y"] for r in rows)}
    return {"ys": [r["y"][0] for r in rows], "inits": inits}


def job_dataset(engine: DaftEngine, directory: str) -> dict:
    """A Parquet dataset opened before the first map still runs on Ray, every row once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hypernodes_daft import read_parquet

    for part in range(4):
        ids = list(range(part * 50, part * 50 + 50))
        pq.write_table(pa.table({"id": ids}), f"{directory}/part-{part}.parquet")
    reviews = read_parquet(f"{directory}/*.parquet")

    @node(output_name="tag")
    def tag(id: int) -> str:
        return f"{id}@{where()}"

    pipeline = Pipeline(nodes=[tag])
    rows = pipeline.map(inputs=reviews, map_over="id", engine=engine)
    ids = sorted(int(r["tag"].split("@")[0]) for r in rows)
    return {"ids": ids, "nodes": len({r["tag"].split("@")[1] for r in rows})}


def job_cache(engine: DaftEngine, directory: str) -> dict:
    """A DiskCache on a path every worker reaches: the second map calls no node."""
    from hypernodes_daft import DiskCache

    calls = Path(directory, "calls")
    calls.mkdir()

    @node(output_name="y")
    def square(x: int) -> int:
        Path(calls, f"{x}-{os.getpid()}-{time.monotonic_ns()}").touch()
        return x * x

    cached = DaftEngine(runner="ray", address=engine.address, cache=DiskCache(f"{directory}/c"))
    pipeline = Pipeline(nodes=[square])
    first = pipeline.map(inputs={"x": list(range(60))}, map_over="x", engine=cached)
    after_first = len(list(calls.iterdir()))
    second = pipeline.map(inputs={"x": list(range(60))}, map_over="x", engine=cached)
    return {
        "same": first == second == [{"y": x * x} for x in range(60)],
        "calls": [after_first, len(list(calls.iterdir()))],
    }


def job_switch(engine: DaftEngine, _: str) -> dict:
    """Running on the native runner first, then asking for Ray, is a clear error."""
    pipeline = Pipeline(nodes=[node(output_name="y")(lambda x: x)])
    pipeline.map(inputs={"x": [1]}, map_over="x", engine=DaftEngine())
    try:
        pipeline.map(inputs={"x": [1]}, map_over="x", engine=engine)
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}
    return {"error": None}


def job_unpicklable(engine: DaftEngine, _: str) -> dict:
    """A node closing over a lock cannot travel to Ray workers: a clear error."""
    lock = threading.Lock()

    @node(output_name="y")
    def guarded(x: int) -> int:
        with lock:
            return x

    try:
        Pipeline(nodes=[guarded]).map(inputs={"x": [1, 2]}, map_over="x", engine=engine)
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}
    return {"error": None}


def job_fault(engine: DaftEngine, pid_dir: str) -> dict:
    """A slow map whose worker processes announce themselves in `pid_dir` (the test kills
    one of them mid-job)."""

    @node(output_name="y")
    def slow(x: int) -> int:
        Path(pid_dir, str(os.getpid())).touch()
        time.sleep(0.05)
        return x * 2

    rows = Pipeline(nodes=[slow]).map(inputs={"x": list(range(240))}, map_over="x", engine=engine)
    return {"ys": [r["y"] for r in rows]}


def job_callbacks(engine: DaftEngine, _: str) -> dict:
    """Node events from the Ray workers reach the driver's callbacks: per-node calls and
    hits (MetricsCallback takes aggregates) and 0.4 hooks per row (a plain callback)."""
    from hypernodes_daft import MetricsCallback, PipelineCallback

    class Ends(PipelineCallback):
        def __init__(self) -> None:
            self.ends: dict[str, int] = {}
            self.items = 0

        def on_node_end(self, node_id, outputs, duration, ctx):
            self.ends[node_id] = self.ends.get(node_id, 0) + 1

        def on_map_item_end(self, item_index, duration, ctx):
            self.items += 1

    @node(output_name="y")
    def double(x: int) -> int:
        return 2 * x

    @node(output_name="z")
    async def slow_inc(y: int) -> int:
        await asyncio.sleep(0.001)
        return y + 1

    metrics, ends = MetricsCallback(), Ends()
    engine = DaftEngine(
        runner="ray", address=engine.address, partitions=4, callbacks=[metrics, ends]
    )
    rows = Pipeline(nodes=[double, slow_inc]).map(
        inputs={"x": list(range(200))}, map_over="x", engine=engine
    )
    summary = {
        k: {"calls": v["calls"], "cached": v["cached"]} for k, v in metrics.summary().items()
    }
    return {
        "zs": [r["z"] for r in rows],
        "metrics": summary,
        "ends": ends.ends,
        "items": ends.items,
    }


def job_collect(engine: DaftEngine, _: str) -> dict:
    """on_error="collect" on Ray: failed rows come back as error records, in order, and the
    workers' failure counts reach the driver's metrics."""
    from hypernodes_daft import MetricsCallback

    @node(output_name="y")
    def invert(x: int) -> float:
        return 1 / (x % 7)

    @node(output_name="z")
    async def label(y: float) -> str:
        return f"{y:.3f}"

    metrics = MetricsCallback()
    engine = DaftEngine(runner="ray", address=engine.address, partitions=4, callbacks=[metrics])
    rows = Pipeline(nodes=[invert, label]).map(
        inputs={"x": list(range(70))}, map_over="x", engine=engine, on_error="collect"
    )
    return {
        "failed": [r.index for r in rows.errors],
        "types": sorted({r.error_type for r in rows.errors}),
        "nodes": sorted({r.node for r in rows.errors}),
        "ok": [r["z"] for r in rows.ok],
        "errors": {k: v["errors"] for k, v in metrics.summary().items()},
    }


def job_cluster_limit(engine: DaftEngine, _: str) -> dict:
    """Peak calls in flight across the whole cluster, from each call's own start and end
    times (one machine, one clock): max_concurrency=3 per worker process, then a
    ClusterLimit(3) shared by every process."""
    from hypernodes_daft import ClusterLimit

    def timed(bound: object) -> object:
        @node(output_name="span", max_concurrency=bound)
        async def call(x: int) -> list:
            start = time.time()
            await asyncio.sleep(0.05)
            return [start, time.time(), os.getpid()]

        return call

    def peak(spans: list) -> int:
        events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
        now = best = 0
        for _, step in events:  # an end before a start at the same instant
            now += step
            best = max(best, now)
        return best

    def measured(bound: object) -> dict:
        rows = Pipeline(nodes=[timed(bound)]).map(
            inputs={"x": list(range(180))}, map_over="x", engine=engine
        )
        spans = [r["span"] for r in rows]
        return {"peak": peak(spans), "processes": len({p for _, _, p in spans})}

    engine = DaftEngine(runner="ray", address=engine.address, partitions=6)
    quota = ClusterLimit(3, name="test-quota")
    runs = []  # Ray may run every partition in one process: measure until two took part
    while len(runs) < 4 and not any(run["processes"] >= 2 for run in runs):
        runs.append(measured(quota))
    return {"per_process": measured(3), "cluster": runs}


def job_cluster_priority(engine: DaftEngine, _: str) -> dict:
    """The order calls start in at a ClusterLimit(1) held by the cluster's slot actor: the
    first call holds the slot until 20 low-priority calls and then 5 high-priority ones
    (priority 5: their node's 2 plus their item's 3) wait in the actor."""
    from hypernodes_daft import ClusterLimit
    from hypernodes_daft.engines.daft.placement import connect
    from hypernodes_daft.runtime.priority import item_priority_reset, item_priority_set

    connect(engine.address)
    quota = ClusterLimit(1, name="test-priority-quota")
    started: list = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def work(name: str) -> None:
            started.append(name)
            if name == "first":
                await release.wait()

        low, high = quota.bound(work, True, 0), quota.bound(work, True, 2)

        async def urgent(name: str) -> None:
            token = item_priority_set(3)
            try:
                await high(name)
            finally:
                item_priority_reset(token)

        async def until_waiting(count: int) -> None:
            while await quota._slots().waiting.remote() < count:
                await asyncio.sleep(0.01)

        first = asyncio.ensure_future(low("first"))
        while not started:
            await asyncio.sleep(0.01)
        lows = [asyncio.ensure_future(low(f"low{i}")) for i in range(20)]
        await until_waiting(20)
        highs = [asyncio.ensure_future(urgent(f"high{i}")) for i in range(5)]
        await until_waiting(25)
        release.set()
        await asyncio.gather(first, *lows, *highs)

    asyncio.run(scenario())
    return {"started": started}


def _process_state() -> dict:
    # one dict per worker process, kept on a module every process has
    if not hasattr(threading, "_hypernodes_test_state"):
        threading._hypernodes_test_state = {"now": 0, "peak": 0, "inits": 0}
    return threading._hypernodes_test_state


def _count(items) -> dict:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _node_with(resource: str) -> str:
    (found,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource)]
    return found


def job_placement(engine: DaftEngine, _: str) -> dict:
    """Where each row of a plain, a `gpus=1` and a custom-resource node ran, and the same
    pipeline's results on a local engine. The engine's default partitions, as users get."""
    engine = DaftEngine(runner="ray", address=engine.address)

    @node(output_name="a")
    def anywhere(x: int) -> list:
        time.sleep(0.002)
        return [x + 1, where()]

    @node(output_name="b", gpus=1)
    def on_gpu(a: list) -> list:
        return [a[0] * 2, where(), os.environ.get("CUDA_VISIBLE_DEVICES")]

    @node(output_name="c", resources={"model_host": 1})
    def on_host(b: list) -> list:
        return [b[0] - 3, where()]

    pipeline = Pipeline(nodes=[anywhere, on_gpu, on_host])
    rows = pipeline.map(inputs={"x": list(range(400))}, map_over="x", engine=engine)
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"  # the local engine's one GPU, declared
    local = pipeline.map(inputs={"x": list(range(400))}, map_over="x", engine=HypernodesEngine())
    return {
        "values": [r["c"][0] for r in rows],
        "local": [r["c"][0] for r in local],
        "gpu_node": _node_with("GPU"),
        "host_node": _node_with("model_host"),
        "anywhere": _count(r["a"][1] for r in rows),
        "on_gpu": _count(r["b"][1] for r in rows),
        "devices": sorted({str(r["b"][2]) for r in rows}),
        "on_host": _count(r["c"][1] for r in rows),
    }


@stateful(replicas=2)
class Replicated:
    """A model held by exactly two instances; each construction leaves a file behind."""

    def __init__(self, directory: str):
        Path(directory, f"{os.getpid()}-{time.monotonic_ns()}").touch()
        self.pid = os.getpid()

    def predict(self, x: int) -> list:
        return [x * 3, self.pid]


def job_replicas(engine: DaftEngine, directory: str) -> dict:
    """How many times a `@stateful(replicas=2)` model serving 10,000 rows was built."""

    @node(output_name="y")
    def predict(x: int, model: Replicated) -> list:
        return model.predict(x)

    rows = Pipeline(nodes=[predict]).map(
        inputs={"x": list(range(10_000)), "model": Replicated(directory)},
        map_over="x",
        engine=engine,
    )
    return {
        "ys": [r["y"][0] for r in rows],
        "constructed": len(list(Path(directory).iterdir())),
        "served_by": _count(str(r["y"][1]) for r in rows),
    }


def job_unsatisfiable(engine: DaftEngine, what: str) -> dict:
    """A request nothing in the cluster holds: the error, how long it took, and whether
    every resource of the cluster is free again afterwards."""

    class Model:
        def predict(self, x: int) -> int:
            return x

    requests = {"gpus": {"gpus": 2}, "memory": {"memory": "1TiB"}, "replicas": {}}
    model = stateful(replicas=8)(Model)() if what == "replicas" else Model()

    @node(output_name="y", **requests[what])
    def ask(x: int, model: Model) -> int:
        return model.predict(x)

    started = time.monotonic()
    try:
        Pipeline(nodes=[ask]).map(
            inputs={"x": list(range(20)), "model": model}, map_over="x", engine=engine
        )
        error = None
    except Exception as failure:  # the error is what the test reads
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.monotonic() - started
    time.sleep(1)  # resources a started task held are given back within this
    free = ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU")
    return {"error": error, "seconds": seconds, "all_free": free}


def job_s3_cache(engine: DaftEngine, argument: str) -> dict:
    """200 calls of a 50 ms node with a DiskCache on S3 (its URL and the directory of
    start/end marks, space-separated): the result's sum and the nodes the calls ran on."""
    import uuid

    from hypernodes_daft import DiskCache

    url, marks = argument.split()

    @node(output_name="y")
    def slow_square(x: int) -> int:
        Path(marks, f"start-{x}-{uuid.uuid4().hex}").touch()
        time.sleep(0.05)
        Path(marks, f"end-{x}-{uuid.uuid4().hex}-{where()}").touch()
        return x * x

    cached = DaftEngine(runner="ray", address=engine.address, cache=DiskCache(url))
    rows = Pipeline(nodes=[slow_square]).map(
        inputs={"x": list(range(200))}, map_over="x", engine=cached
    )
    return {"sum": sum(row["y"] for row in rows)}


def job_native(engine: DaftEngine, _: str) -> dict:
    """A chain of arithmetic on Ray: traced into expressions (no Python function in the
    plan) and the same results as with tracing off."""
    import io

    pipeline = scenarios._chain()  # a = x + 1, b = a * 2, c = b - 3
    inputs = {"x": list(range(-100, 100))}
    lazy = pipeline.map(inputs=inputs, map_over="x", engine=engine.lazy())
    plan = io.StringIO()
    lazy.explain(show_all=True, file=plan)
    python = DaftEngine(runner="ray", address=engine.address, native=False)
    return {
        "udfs": plan.getvalue().split("== Physical Plan ==")[-1].count("UDF hypernodes."),
        "same": pipeline.map(inputs=inputs, map_over="x", engine=engine)
        == pipeline.map(inputs=inputs, map_over="x", engine=python)
        == [{"a": x + 1, "b": 2 * x + 2, "c": 2 * x - 1} for x in range(-100, 100)],
    }


def job_estimate(engine: DaftEngine, _: str) -> dict:
    """A 20-item estimate of the issue's map (a 10 ms and a 100 ms async node, 2,000
    items) on Ray, then the map: the calls projected, the estimate and the wall time."""

    @node(output_name="a")
    async def wait_10ms(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    @node(output_name="b")
    async def wait_100ms(a: int) -> int:
        await asyncio.sleep(0.1)
        return a

    pipeline = Pipeline(nodes=[wait_10ms, wait_100ms], engine=engine)
    inputs = {"x": list(range(2000))}
    estimate = pipeline.estimate(inputs=inputs, map_over="x", sample=20, seed=1)
    started = time.perf_counter()
    results = pipeline.map(inputs=inputs, map_over="x")
    return {
        "calls": [round(estimate.nodes[n].calls) for n in ("wait_10ms", "wait_100ms")],
        "same": results == [{"a": x, "b": x} for x in range(2000)],
        "estimate": estimate.wall_seconds,
        "range": estimate.wall_range,
        "measured": time.perf_counter() - started,
    }


JOBS = {name[4:]: job for name, job in globals().items() if name.startswith("job_")}

if __name__ == "__main__":
    job, address, argument = sys.argv[1], sys.argv[2], (sys.argv[3:] or [""])[0]
    engine = DaftEngine(runner="ray", address=None if address == "-" else address, partitions=8)
    print(json.dumps(JOBS[job](engine, argument)), flush=True)
