"""`Pipeline.estimate`: a random sample run for real, projected to the whole input.

The projection (`project`, `wall_model`) is checked on plain numbers; the sample's run on
the async executor and DaftEngine, with deterministic checks only (sample size, calls,
cache hits, cost), no timing beyond generous sanity.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hypernodes_daft import (
    DaftEngine,
    HypernodesEngine,
    MemoryCache,
    Pipeline,
    PlanningError,
    node,
    read_parquet,
)
from hypernodes_daft.callbacks import MetricsCallback
from hypernodes_daft.cli import main
from hypernodes_daft.estimate import (
    Concurrency,
    NodeSample,
    Sample,
    _resampled,  # the bootstrap's shortcut and the sample's runs, checked alone
    _run_sizes,
    describe,
    measure,
    project,
    wall_model,
)

ASYNC = Concurrency("HypernodesEngine(map_executor='async')", items_in_flight=100)
DAFT = Concurrency("DaftEngine(runner='native')", model="stages", batch_rows=131072)


def sampled(*nodes: NodeSample, items=2000, size=20, seconds=0.0, concurrency=ASYNC) -> Sample:
    return Sample("p", items, size, seconds, nodes, concurrency)


def timed(name: str, calls: int, seconds: float, **options) -> NodeSample:
    return NodeSample(name, calls=calls, seconds=(seconds,) * calls, **options)


# -- the projection, on plain numbers ----------------------------------------------------------


def test_calls_scale_from_the_sample_to_the_whole_input():
    estimate = project(sampled(timed("ask", 20, 0.01)))
    assert estimate.nodes["ask"].calls == 2000
    assert estimate.nodes["ask"].sample_calls == 20
    assert estimate.nodes["ask"].calls_range == (2000, 2000)  # once per item, no hits: exact
    assert estimate.nodes["ask"].seconds == pytest.approx(20.0)


def test_a_node_inside_a_nested_map_scales_by_the_calls_per_item_seen():
    per_word = NodeSample("per_word", calls=20, seconds=(0.03,) * 20, nested=True)
    inner = timed("embed", 60, 0.01, top_level=False)  # 3 words an item in the sample
    estimate = project(sampled(per_word, inner))
    assert estimate.nodes["embed"].calls == 6000
    low, high = estimate.nodes["embed"].calls_range
    assert low < 6000 < high  # how many words the others have is not known exactly
    # the nested pipeline's time is its inner node's: counted once in an item's time
    assert wall_model((per_word, inner), 20, 2000, ASYNC) == pytest.approx(2000 * 0.03 / 100)


def test_cost_is_calls_times_cost_per_call():
    estimate = project(sampled(timed("ask", 20, 0.01, cost_per_call=0.002), timed("free", 20, 0)))
    assert estimate.nodes["ask"].cost == pytest.approx(4.0)
    assert estimate.nodes["free"].cost is None
    assert estimate.cost == pytest.approx(4.0)
    assert estimate.cost_range == pytest.approx((4.0, 4.0))
    assert project(sampled(timed("free", 20, 0))).cost is None


def test_cache_hits_are_not_calls_and_cost_nothing():
    hit = NodeSample("ask", calls=15, cached=5, seconds=(0.01,) * 15, cost_per_call=0.002)
    estimate = project(sampled(hit))
    assert estimate.nodes["ask"].calls == 1500
    assert estimate.nodes["ask"].cached == 500
    assert estimate.cost == pytest.approx(3.0)
    low, high = estimate.nodes["ask"].calls_range
    assert low < 1500 < high  # how many of the others are stored is a sampling question


@pytest.mark.parametrize(
    ("executor", "in_flight", "expected"),
    [("sequential", 1, 2000 * 0.11), ("async", 100, 2000 * 0.11 / 100)],
)
def test_local_wall_time_is_items_over_their_rate(executor, in_flight, expected):
    nodes = (timed("fast", 20, 0.01, is_async=True), timed("slow", 20, 0.1, is_async=True))
    concurrency = Concurrency(executor, items_in_flight=in_flight)
    assert wall_model(nodes, 20, 2000, concurrency) == pytest.approx(expected)


def test_a_node_limit_or_rate_limit_is_the_bottleneck():
    fast = timed("fast", 20, 0.01, is_async=True)
    limited = timed("slow", 20, 0.1, is_async=True, max_concurrency=10)
    assert wall_model((fast, limited), 20, 2000, ASYNC) == pytest.approx(2000 * 0.1 / 10)
    rated = timed("slow", 20, 0.1, is_async=True, rate_limit=50)
    assert wall_model((fast, rated), 20, 2000, ASYNC) == pytest.approx(2000 / 50 + 0.1)
    # the parallel executor: limits are per process
    parallel = Concurrency("parallel", items_in_flight=4, processes=4)
    assert wall_model((rated,), 20, 2000, parallel) == pytest.approx(2000 * 0.1 / 4)


def test_calls_of_varying_length_end_later_than_their_mean_says():
    """100 slots, 20 items each: the slot that ends last is about 2.5 standard deviations
    of its 20 items' sum late."""
    varied = NodeSample("ask", calls=20, seconds=(0.05, 0.15) * 10, is_async=True)
    expected_last = statistics.NormalDist().inv_cdf((100 - 0.375) / (100 + 0.25))
    late = 0.05 * math.sqrt(20) * expected_last  # pstdev of (0.05, 0.15) is 0.05
    assert wall_model((varied,), 20, 2000, ASYNC) == pytest.approx(2.0 + late)
    assert wall_model((varied,), 20, 2000, DAFT) == pytest.approx(2.0 + late)
    constant = timed("ask", 20, 0.1, is_async=True)
    assert wall_model((constant,), 20, 2000, ASYNC) == pytest.approx(2.0)


def test_sync_nodes_share_the_async_executors_threads():
    sync = timed("read", 20, 0.1)
    threads = Concurrency("async", items_in_flight=100, sync_threads=10)
    assert wall_model((sync,), 20, 2000, threads) == pytest.approx(2000 * 0.1 / 10)


def test_daft_stages_run_their_calls_at_once_up_to_the_limit():
    fast = timed("fast", 20, 0.01, is_async=True)
    slow = timed("slow", 20, 0.1, is_async=True)
    # one batch: the stages one after the other, each 2,000 calls 100 at a time
    assert wall_model((fast, slow), 20, 2000, DAFT) == pytest.approx(0.2 + 2.0)
    # a sync node runs its rows one after another; with max_concurrency, on threads
    assert wall_model((timed("s", 20, 0.01),), 20, 2000, DAFT) == pytest.approx(20.0)
    threaded = timed("s", 20, 0.01, max_concurrency=10)
    assert wall_model((threaded,), 20, 2000, DAFT) == pytest.approx(2.0)
    # many batches overlap the stages: the slowest, plus the others' share of one batch
    small = Concurrency("daft", model="stages", batch_rows=200)
    assert wall_model((fast, slow), 20, 2000, small) == pytest.approx(2.0 + 0.2 / 10)


def test_the_samples_unexplained_time_is_a_fixed_cost_added_once():
    nodes = (timed("slow", 20, 0.1, is_async=True),)
    estimate = project(sampled(*nodes, seconds=0.35))  # modelled: 0.1 s
    assert estimate.fixed_seconds == pytest.approx(0.25)
    assert estimate.wall_seconds == pytest.approx(2000 * 0.1 / 100 + 0.25)


def test_the_first_runs_extra_time_is_start_up_left_out_of_the_wall_time():
    nodes = (timed("slow", 20, 0.1, is_async=True),)
    runs = ((1, 0.5), (19, 0.15))  # modelled: 0.1 s each; 0.4 s and 0.05 s unexplained
    estimate = project(Sample("p", 2000, 20, 0.65, nodes, ASYNC, runs))
    assert estimate.fixed_seconds == pytest.approx(0.05)
    assert estimate.startup_seconds == pytest.approx(0.35)
    assert estimate.wall_seconds == pytest.approx(2.0 + 0.05)
    assert "start-up:  0.35 s" in estimate.table()


def test_the_sample_runs_first_one_item_then_no_more_than_any_nodes_limit():
    free, limited = NodeSample("a"), NodeSample("b", max_concurrency=5)
    assert _run_sizes(20, 2000, [free]) == [1, 19]
    assert _run_sizes(20, 2000, [free, limited]) == [1, 5, 5, 5, 4]
    assert _run_sizes(20, 20, [limited]) == [20]  # the whole input: the map itself
    assert _run_sizes(1, 2000, [limited]) == [1]


def test_the_range_comes_from_the_spread_and_is_reproducible():
    spread = NodeSample("ask", calls=20, seconds=tuple(0.05 + 0.01 * i for i in range(20)))
    first, again = project(sampled(spread), seed=7), project(sampled(spread), seed=7)
    low, high = first.wall_range
    assert low < first.wall_seconds < high
    assert again.wall_range == first.wall_range
    assert first.nodes["ask"].p50 < first.nodes["ask"].p95


def test_many_calls_are_resampled_in_part_with_the_spread_of_a_full_resample():
    node = NodeSample("ask", calls=1000, seconds=tuple(float(i) for i in range(1000)))
    rng = random.Random(0)
    means = [statistics.fmean(_resampled(node, rng)) for _ in range(2000)]
    assert len(_resampled(node, rng)) == 200
    assert statistics.fmean(means) == pytest.approx(node.mean_seconds, rel=0.01)
    full = statistics.pstdev(node.seconds) / math.sqrt(1000)  # a full resample's
    assert statistics.pstdev(means) == pytest.approx(full, rel=0.1)


def test_a_sample_of_the_whole_input_is_a_measurement():
    estimate = project(sampled(timed("ask", 20, 0.01), items=20, seconds=0.5))
    assert estimate.measured
    assert estimate.wall_seconds == 0.5 and estimate.wall_range == (0.5, 0.5)
    assert "this is a measurement" in estimate.table()


def test_the_table_shows_every_node_the_wall_time_and_cost():
    text = str(project(sampled(timed("ask", 20, 0.01, cost_per_call=0.5)), seed=1))
    assert "| ask " in text and "2,000" in text
    assert "wall time: 0.20 s" in text
    assert "cost:      1,000.0000" in text
    assert "estimated from a sample of 20" in text


# -- the sample, run for real ------------------------------------------------------------------


@node(output_name="a", cost_per_call=0.001)
async def fast(x: int) -> int:
    await asyncio.sleep(0.001)
    return x + 1


@node(output_name="b")
async def slow(a: int) -> int:
    await asyncio.sleep(0.002)
    return a * 2


ENGINES = {
    "async": lambda cache=None: HypernodesEngine(map_executor="async", cache=cache),
    "daft": lambda cache=None: DaftEngine(cache=cache),
}


def pipeline() -> Pipeline:
    return Pipeline(nodes=[fast, slow], name="two")


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_the_sample_runs_for_real_and_projects_calls(engine):
    estimate = pipeline().estimate(
        inputs={"x": list(range(2000))}, map_over="x", engine=ENGINES[engine](), seed=1
    )
    assert estimate.items == 2000 and estimate.sample_size == 20
    for name in ("fast", "slow"):
        assert estimate.nodes[name].sample_calls == 20
        assert estimate.nodes[name].calls == 2000
        assert estimate.nodes[name].p50 > 0
    assert estimate.cost == pytest.approx(2.0)
    assert 0 < estimate.wall_seconds < 60  # generous: a 2 ms node, 2,000 items
    assert estimate.wall_range[0] <= estimate.wall_seconds <= estimate.wall_range[1]

    # each call timed (on DaftEngine the sample runs one row per batch): the spread is seen
    sample = measure(pipeline(), {"x": list(range(2000))}, "x", engine=ENGINES[engine]())
    slow_node = next(n for n in sample.nodes if n.name == "slow")
    assert slow_node.per_call and len(set(slow_node.seconds)) == 20


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_the_sample_lands_in_the_cache_so_the_map_calls_only_the_rest(engine):
    cache = MemoryCache()
    inputs = {"x": list(range(200))}
    pipeline().estimate(inputs=inputs, map_over="x", sample=20, engine=ENGINES[engine](cache))
    metrics = MetricsCallback()
    full = Pipeline(nodes=[fast, slow], callbacks=[metrics], cache=cache)
    results = full.map(inputs=inputs, map_over="x", engine=ENGINES[engine]())
    assert [r["b"] for r in results] == [(x + 1) * 2 for x in range(200)]
    assert metrics.summary()["slow"]["calls"] == 180
    assert metrics.summary()["slow"]["cached"] == 20


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_cache_hits_in_the_sample_are_reported_not_counted_as_calls(engine):
    engine = ENGINES[engine](MemoryCache())
    inputs = {"x": list(range(100))}
    pipeline().estimate(inputs=inputs, map_over="x", engine=engine, seed=3)
    again = pipeline().estimate(inputs=inputs, map_over="x", engine=engine, seed=3)
    assert again.nodes["slow"].sample_calls == 0
    assert again.nodes["slow"].sample_cached == 20
    assert again.nodes["slow"].calls == 0 and again.nodes["slow"].cached == 100
    assert again.cost == 0


def test_a_call_waiting_for_its_nodes_limit_is_not_timed_waiting():
    @node(output_name="y", max_concurrency=1)
    async def one_at_a_time(x: int) -> int:
        await asyncio.sleep(0.02)
        return x

    sample = measure(
        Pipeline(nodes=[one_at_a_time]), {"x": list(range(100))}, "x", sample=10,
        engine=ENGINES["async"](),
    )  # fmt: skip
    assert [items for items, _ in sample.runs] == [1] * 10
    # in one run of 10, the last call would wait 9 x 20 ms for its turn
    assert max(sample.nodes[0].seconds) < 0.1  # generous: 20 ms each


def test_the_seed_picks_the_same_random_items():
    seen: list[int] = []

    @node(output_name="y")
    def record(x: int) -> int:
        seen.append(x)
        return x

    recorder = Pipeline(nodes=[record])
    for _ in range(2):
        recorder.estimate(inputs={"x": list(range(1000))}, map_over="x", sample=10, seed=5)
    first, second = seen[:10], seen[10:]
    assert first == second and len(set(first)) == 10
    assert first != list(range(10))  # random, not the first items
    recorder.estimate(inputs={"x": list(range(1000))}, map_over="x", sample=10, seed=6)
    assert seen[20:] != first


@node(output_name="words")
def split(text: str) -> list[str]:
    return text.split()


@node(output_name="n")
def count(word: str) -> int:
    return len(word)


def nested() -> Pipeline:
    per_word = Pipeline(nodes=[count], name="per_word").as_node(
        input_mapping={"words": "word"}, output_mapping={"n": "ns"}, map_over="words"
    )
    return Pipeline(nodes=[split, per_word])


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_a_nested_map_over_makes_several_calls_per_item(engine):
    texts = ["a b c"] * 500  # three inner calls per item
    estimate = nested().estimate(
        inputs={"text": texts}, map_over="text", engine=ENGINES[engine](), seed=2
    )
    assert estimate.nodes["count"].sample_calls == 60
    assert estimate.nodes["count"].calls == 1500
    assert estimate.nodes["split"].calls == 500


def test_product_mode_samples_the_combinations():
    @node(output_name="s")
    def add(a: int, b: int) -> int:
        return a + b

    estimate = Pipeline(nodes=[add]).estimate(
        inputs={"a": list(range(40)), "b": list(range(50))},
        map_over=["a", "b"],
        map_mode="product",
        engine=ENGINES["async"](),
    )
    assert estimate.items == 2000 and estimate.nodes["add"].calls == 2000


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_dataset_inputs_are_sampled_by_row(tmp_path, engine):
    pq.write_table(pa.table({"id": range(300), "x": range(300)}), tmp_path / "data.parquet")
    estimate = pipeline().estimate(
        inputs=read_parquet(str(tmp_path / "data.parquet")), engine=ENGINES[engine](), seed=4
    )
    assert estimate.items == 300 and estimate.nodes["fast"].calls == 300


def test_a_lazy_daft_engine_still_runs_the_sample():
    cache, metrics = MemoryCache(), MetricsCallback()
    lazy = Pipeline(nodes=[fast, slow], callbacks=[metrics])  # the pipeline's callbacks too
    estimate = lazy.estimate(
        inputs={"x": list(range(100))}, map_over="x", engine=DaftEngine(collect=False, cache=cache)
    )
    assert metrics.summary()["slow"]["calls"] == 20
    assert estimate.nodes["slow"].sample_calls == 20 and estimate.nodes["slow"].calls == 100
    assert len(cache) == 40  # both nodes' calls of the 20 items, stored


def test_the_engine_defaults_to_the_pipelines():
    estimate = pipeline().estimate(inputs={"x": list(range(50))}, map_over="x")
    assert estimate.engine == "HypernodesEngine(map_executor='sequential')"


def test_describe_reads_the_engines_concurrency():
    assert describe(HypernodesEngine(map_executor="async", max_concurrency=7)).items_in_flight == 7
    threaded = describe(HypernodesEngine(map_executor="threaded", max_workers=3))
    assert threaded.items_in_flight == 3 and threaded.processes == 1
    assert describe(HypernodesEngine(map_executor="parallel", max_workers=2)).processes == 2
    daft = describe(DaftEngine(max_concurrency=9))
    assert daft.model == "stages" and daft.node_limit == 9 and daft.batch_rows


def test_a_sample_as_large_as_the_input_says_it_is_a_measurement():
    estimate = pipeline().estimate(inputs={"x": list(range(5))}, map_over="x", sample=20)
    assert estimate.measured and estimate.sample_size == 5
    assert estimate.wall_seconds == estimate.sample_seconds
    assert "the sample was the whole input (5 items)" in estimate.table()


@pytest.mark.parametrize("sample", [0, -1, 2.5, "3", True])
def test_a_bad_sample_names_the_pipeline_and_the_argument(sample):
    with pytest.raises(ValueError, match=r"pipeline 'two': estimate\(sample=\.\.\.\) must be"):
        pipeline().estimate(inputs={"x": [1, 2]}, map_over="x", sample=sample)


def test_a_missing_map_over_names_the_pipeline_and_the_argument():
    with pytest.raises(TypeError, match=r"pipeline 'two': estimate\(\) needs map_over="):
        pipeline().estimate(inputs={"x": [1, 2]})


def test_other_bad_inputs_are_the_maps_planning_errors():
    with pytest.raises(PlanningError, match="pipeline 'two'.*'y'"):
        pipeline().estimate(inputs={"x": [1, 2]}, map_over="y")
    with pytest.raises(ValueError, match="pipeline 'two': estimate.. over an empty input"):
        pipeline().estimate(inputs={"x": []}, map_over="x")


# -- the command -------------------------------------------------------------------------------

COMMAND_PIPELINE = """
from hypernodes_daft import Pipeline, node

@node(output_name="doubled", cost_per_call=0.01)
def double(x: int) -> int:
    return 2 * x

@node(output_name="labelled")
def label(doubled: int) -> str:
    return f"n{doubled}"

pipeline = Pipeline(nodes=[double, label], name="doubler")
"""


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    (tmp_path / "pipe.py").write_text(textwrap.dedent(COMMAND_PIPELINE))
    pq.write_table(pa.table({"id": range(500), "x": range(500)}), tmp_path / "data.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("engine", ["local", "daft"])
def test_the_estimate_command_prints_the_table(project_dir, capsys, engine):
    args = ["estimate", "pipe.py:pipeline", "--input", "data.parquet", "--engine", engine]
    assert main([*args, "--sample", "10", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "pipeline 'doubler'" in out and "500 items" in out and "a sample of 10" in out
    assert "| double " in out and "cost:      5.0000" in out


def test_the_estimate_command_runs_as_a_process(project_dir):
    command = [sys.executable, "-m", "hypernodes_daft.cli", "estimate", "pipe.py:pipeline"]
    done = subprocess.run(
        [*command, "--input", "data.parquet", "--engine", "local", "--sample", "5"],
        cwd=project_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "a sample of 5" in done.stdout and "wall time:" in done.stdout


def test_the_estimate_command_estimates_only_the_outputs_asked_for(project_dir, capsys):
    args = ["estimate", "pipe.py:pipeline", "--input", "data.parquet", "--engine", "local"]
    assert main([*args, "--outputs", "labelled"]) == 0
    assert "| label " in capsys.readouterr().out
    assert main([*args, "--outputs", "doubled"]) == 0
    assert "| label " not in capsys.readouterr().out


def test_the_estimate_command_caches_the_sample(project_dir, capsys):
    args = ["estimate", "pipe.py:pipeline", "--input", "data.parquet", "--cache", "c"]
    assert main([*args, "--sample", "10", "--engine", "local"]) == 0
    assert len(list((project_dir / "c").glob("*/*.pkl"))) == 20  # 10 rows x 2 nodes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "0"], "estimate(sample=...) must be an int >= 1, got 0"),
        (["--map-over", "nope"], "--map-over names ['nope']"),
    ],
)
def test_estimate_command_errors_are_one_line_and_exit_1(project_dir, capsys, args, message):
    assert main(["estimate", "pipe.py:pipeline", "--input", "data.parquet", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
