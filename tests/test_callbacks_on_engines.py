"""Callbacks, progress, metrics and the execution context, fired by real engines.

The hook order is checked against HyperNodes 0.4.8 itself (the reference we stay compatible
with): the same pipeline runs on its SeqEngine and on ours, and the recorded hook sequences
must be equal once pipeline ids are replaced by names.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections import Counter

import hypernodes as ref
import pytest

from hypernodes_daft import (
    DaftEngine,
    HypernodesEngine,
    MemoryCache,
    Pipeline,
    SeqEngine,
    current_node,
    node,
    report_progress,
)
from hypernodes_daft.callbacks import MetricsCallback, PipelineCallback, ProgressCallback

LOCAL = {
    "sequential": lambda **kw: HypernodesEngine(**kw),
    "threaded": lambda **kw: HypernodesEngine(
        node_executor="threaded", map_executor="threaded", **kw
    ),
    "async": lambda **kw: HypernodesEngine(node_executor="async", map_executor="async", **kw),
    "parallel": lambda **kw: HypernodesEngine(map_executor="parallel", max_workers=2, **kw),
}
ENGINES = {**LOCAL, "daft": lambda **kw: DaftEngine(**kw)}


class Recorder(PipelineCallback):
    """Every hook call as a tuple; ids and contexts kept apart so tests can compare them."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.contexts: list = []
        self._lock = threading.Lock()

    def _add(self, *event) -> None:
        with self._lock:
            self.events.append(event[:-1])
            self.contexts.append(event[-1])

    def on_pipeline_start(self, pipeline_id, inputs, ctx):
        self._add("pipeline_start", pipeline_id, ctx)

    def on_pipeline_end(self, pipeline_id, outputs, duration, ctx):
        self._add("pipeline_end", pipeline_id, ctx)

    def on_node_start(self, node_id, inputs, ctx):
        self._add("node_start", node_id, ctx)

    def on_node_end(self, node_id, outputs, duration, ctx):
        self._add("node_end", node_id, ctx)

    def on_node_cached(self, node_id, signature, ctx):
        self._add("node_cached", node_id, ctx)

    def on_error(self, node_id, error, ctx):
        self._add("error", node_id, type(error).__name__, ctx)

    def on_nested_pipeline_start(self, parent_id, child_pipeline_id, ctx):
        self._add("nested_start", parent_id, child_pipeline_id, ctx)

    def on_nested_pipeline_end(self, parent_id, child_pipeline_id, duration, ctx):
        self._add("nested_end", parent_id, child_pipeline_id, ctx)

    def on_map_start(self, total_items, ctx):
        self._add("map_start", total_items, ctx)

    def on_map_item_start(self, item_index, ctx):
        self._add("item_start", item_index, ctx)

    def on_map_item_end(self, item_index, duration, ctx):
        self._add("item_end", item_index, ctx)

    def on_map_item_cached(self, item_index, signature, ctx):
        self._add("item_cached", item_index, ctx)

    def on_map_end(self, total_duration, ctx):
        self._add("map_end", ctx)

    def named(self, names: dict[str, str]) -> list[tuple]:
        return [tuple(names.get(x, x) if isinstance(x, str) else x for x in e) for e in self.events]

    def counts(self) -> Counter:
        return Counter(e[:2] if e[0].startswith("node") else e[:1] for e in self.events)


# --------------------------------------------------------------------------------------
# The same pipeline in both libraries
# --------------------------------------------------------------------------------------


def build(lib, fail_on=None):
    """double -> (inner: add_one) -> total; returns (outer, inner)."""

    @lib.node(output_name="doubled")
    def double(x: int) -> int:
        if x == fail_on:
            raise ValueError(f"no {x}")
        return 2 * x

    @lib.node(output_name="plus")
    def add_one(doubled: int) -> int:
        return doubled + 1

    @lib.node(output_name="total")
    def total(doubled: int, plus: int) -> int:
        return doubled + plus

    inner = lib.Pipeline(nodes=[add_one], name="inner")
    outer = lib.Pipeline(nodes=[double, inner.as_node(name="nest"), total], name="outer")
    return outer, inner


def names_of(outer, inner) -> dict[str, str]:
    return {outer.id: "outer", inner.id: "inner"}


def reference_events(call, cache=None, fail_on=None):
    outer, inner = build(ref, fail_on)
    recorder = Recorder()
    outer.engine = ref.SeqEngine(cache=cache, callbacks=[recorder])
    with contextlib.suppress(ValueError):
        call(outer)
    return recorder.named(names_of(outer, inner))


def our_events(call, engine_name="sequential", cache=None, fail_on=None):
    outer, inner = build(__import__("hypernodes_daft"), fail_on)
    recorder = Recorder()
    engine = ENGINES[engine_name](callbacks=[recorder], cache=cache)
    outer.with_engine(engine)
    try:
        call(outer)
    except ValueError:
        pass
    finally:
        getattr(engine, "shutdown", lambda: None)()
    return recorder.named(names_of(outer, inner)), recorder


def run_once(p):
    return p.run(inputs={"x": 3})


def map_three(p):
    return p.map(inputs={"x": [1, 2, 3]}, map_over="x")


@pytest.mark.parametrize("call", [run_once, map_three], ids=["run", "map"])
def test_hook_order_equals_hypernodes_0_4(call):
    assert our_events(call)[0] == reference_events(call)


def test_hook_order_with_cache_hits_equals_hypernodes_0_4(tmp_path):
    reference_cache = ref.DiskCache(str(tmp_path / "ref"))
    reference_events(map_three, reference_cache)  # warm
    ours = MemoryCache()
    our_events(map_three, cache=ours)
    # 0.4 caches the nested pipeline as a whole; ours caches its nodes: compare the
    # top-level nodes' sequence, where both libraries fire node_cached + item_cached
    expected = [e for e in reference_events(map_three, reference_cache) if "nest" not in e]
    got = [
        e
        for e in our_events(map_three, cache=ours)[0]
        if "nest" not in e and "inner" not in e and "add_one" not in e
    ]
    assert [e for e in got if e[0] != "item_cached"] == [
        e for e in expected if e[0] != "item_cached"
    ]
    assert Counter(e[0] for e in got)["node_cached"] == 6  # double and total, 3 items


def test_error_hooks_equal_hypernodes_0_4():
    expected = reference_events(map_three, fail_on=2)
    got = our_events(map_three, fail_on=2)[0]
    assert got == expected
    assert got[-1] == ("error", "double", "ValueError")
    assert ("map_end",) not in got and ("item_end", 1) not in got


def test_nested_pipeline_hooks_get_a_context_of_their_own():
    _, recorder = our_events(run_once)
    pairs = list(zip(recorder.events, recorder.contexts, strict=True))
    depth = {e: ctx.depth for e, ctx in pairs}
    inner_ctx = {id(c) for e, c in pairs if "add_one" in e}
    outer_ctx = {id(c) for e, c in pairs if "double" in e}
    assert len(inner_ctx) == 1 and len(outer_ctx) == 1 and inner_ctx != outer_ctx
    assert set(depth.values()) == {1}  # 0.4: every context has its pipeline pushed once


# --------------------------------------------------------------------------------------
# Every engine
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ENGINES)
def test_every_engine_fires_each_node_once_per_item(engine_name):
    _, recorder = our_events(map_three, engine_name)
    counts = recorder.counts()
    for name in ("double", "add_one", "total"):
        assert counts[("node_start", name)] == 3, (name, counts)
        assert counts[("node_end", name)] == 3, (name, counts)
    assert counts[("map_start",)] == 1 and counts[("map_end",)] == 1
    assert counts[("item_end",)] == 3
    assert sorted(e[1] for e in recorder.events if e[0] == "item_end") == [0, 1, 2]


@pytest.mark.parametrize("engine_name", LOCAL)
def test_local_engines_fire_the_same_sequence_per_item(engine_name):
    """Concurrent executors interleave items; each item's own sequence is 0.4's."""
    expected, _ = our_events(map_three, "sequential")
    got, recorder = our_events(map_three, engine_name)
    assert Counter(got) == Counter(expected)
    assert got[0] == ("map_start", 3) and got[-1] == ("map_end",)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_second_map_with_a_cache_reports_hits_not_calls(engine_name, tmp_path):
    from hypernodes_daft import DiskCache

    cache = DiskCache(tmp_path / "cache")
    our_events(map_three, engine_name, cache=cache)
    _, recorder = our_events(map_three, engine_name, cache=cache)
    counts = recorder.counts()
    # the nested pipeline is not cached as a whole (its nodes are): it still starts
    started = [e for e in recorder.events if e[0] == "node_start" and e[1] != "nest"]
    assert not started, recorder.events
    for name in ("double", "add_one", "total"):
        assert counts[("node_cached", name)] == 3, (name, counts)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_errors_fire_on_error_for_the_failing_node(engine_name):
    _, recorder = our_events(map_three, engine_name, fail_on=2)
    errors = [e for e in recorder.events if e[0] == "error"]
    assert errors and errors[0] == ("error", "double", "ValueError")
    assert ("map_end",) not in recorder.events


@pytest.mark.parametrize("engine_name", ENGINES)
def test_metrics_count_calls_and_hits_on_every_engine(engine_name):
    cache = MemoryCache() if engine_name != "parallel" else None
    metrics = MetricsCallback()
    outer, _ = build(__import__("hypernodes_daft"))
    engine = ENGINES[engine_name](callbacks=[metrics], cache=cache)
    items = {"x": list(range(20))}
    try:
        outer.map(inputs=items, map_over="x", engine=engine)
        if cache is not None:
            outer.map(inputs=items, map_over="x", engine=engine)
    finally:
        getattr(engine, "shutdown", lambda: None)()
    summary = metrics.summary()
    for name in ("double", "add_one", "total"):
        assert summary[name]["calls"] == 20, summary
        assert summary[name]["cached"] == (20 if cache is not None else 0), summary
        assert summary[name]["p50"] is not None and summary[name]["errors"] == 0
    assert "| double |" in metrics.table().replace("  ", " ")


@pytest.mark.parametrize("engine_name", ENGINES)
def test_progress_bars_count_items_and_nodes(engine_name):
    progress = ProgressCallback(file=io.StringIO())
    outer, _ = build(__import__("hypernodes_daft"))
    engine = ENGINES[engine_name](callbacks=[progress])
    try:
        outer.map(inputs={"x": list(range(12))}, map_over="x", engine=engine)
    finally:
        getattr(engine, "shutdown", lambda: None)()
    assert progress.main_bar.n == 12 and progress.main_bar.total == 12
    assert progress.node_bars["double"].n == 12
    assert progress.node_bars["total"].n == 12


def test_supported_engines_are_checked_before_anything_runs():
    calls = []

    class OnlyDaft(PipelineCallback):
        supported_engines = ["DaftEngine"]

    @node(output_name="y")
    def f(x: int) -> int:
        calls.append(x)
        return x

    with pytest.raises(ValueError, match="not compatible with engine HypernodesEngine"):
        Pipeline(nodes=[f], engine=HypernodesEngine(callbacks=[OnlyDaft()])).run(inputs={"x": 1})
    # named as the user made it, in 0.4's words
    with pytest.raises(ValueError) as raised:
        Pipeline(nodes=[f], engine=SeqEngine(callbacks=[OnlyDaft()])).run(inputs={"x": 1})
    assert str(raised.value) == (
        "Callback OnlyDaft is not compatible with engine SeqEngine. "
        "Supported engines: ['DaftEngine']"
    )
    assert calls == []

    class OnlySeq(PipelineCallback):  # 0.4 code names the local engine SeqEngine
        supported_engines = ["SeqEngine"]

    Pipeline(nodes=[f], engine=HypernodesEngine(callbacks=[OnlySeq()])).run(inputs={"x": 1})
    assert calls == [1]


def test_pipeline_callbacks_and_cache_are_used_with_the_engines_own():
    engine_recorder, pipeline_recorder = Recorder(), Recorder()
    cache = MemoryCache()
    calls = []

    @node(output_name="y")
    def f(x: int) -> int:
        calls.append(x)
        return x + 1

    engine = HypernodesEngine(callbacks=[engine_recorder])
    pipeline = Pipeline(nodes=[f], engine=engine, cache=cache, callbacks=[pipeline_recorder])
    assert pipeline.run(inputs={"x": 1}) == {"y": 2}
    assert pipeline.run(inputs={"x": 1}) == {"y": 2}
    assert calls == [1]  # the pipeline's cache served the second run
    assert engine_recorder.events == pipeline_recorder.events
    assert ("node_cached", "f") in pipeline_recorder.events


# --------------------------------------------------------------------------------------
# The execution context and a node's own progress
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", [n for n in ENGINES if n != "daft"])
def test_nodes_see_their_name_pipeline_path_and_item(engine_name):
    @node(output_name="where")
    def where(x: int) -> tuple:
        here = current_node()
        return (here.node_name, here.pipeline_path, here.item_index)

    @node(output_name="inner_where")
    def inner_where(where: tuple) -> tuple:
        here = current_node()
        return (here.node_name, here.pipeline_path, here.item_index)

    inner = Pipeline(nodes=[inner_where], name="inner")
    outer = Pipeline(nodes=[where, inner.as_node(name="nest")], name="outer")
    engine = ENGINES[engine_name]()
    try:
        results = outer.map(inputs={"x": [10, 20, 30]}, map_over="x", engine=engine)
        single = outer.run(inputs={"x": 1}, engine=engine)
    finally:
        getattr(engine, "shutdown", lambda: None)()
    assert [r["where"] for r in results] == [("where", ("outer",), i) for i in range(3)]
    assert [r["inner_where"] for r in results] == [
        ("inner_where", ("outer", "nest"), i) for i in range(3)
    ]
    assert single["where"] == ("where", ("outer",), None)
    assert current_node() is None


def test_mapped_nested_nodes_see_the_inner_item_index():
    @node(output_name="seen")
    def seen(y: int) -> int | None:
        return current_node().item_index

    inner = Pipeline(nodes=[seen], name="inner")
    outer = Pipeline(
        nodes=[
            inner.as_node(map_over="ys", input_mapping={"ys": "y"}, output_mapping={"seen": "s"})
        ]
    )
    assert outer.run(inputs={"ys": [5, 6, 7]}) == {"s": [0, 1, 2]}


def test_a_long_node_reports_its_own_progress_under_the_bar():
    progress = ProgressCallback(file=io.StringIO())
    seen_totals = []

    @node(output_name="y")
    def long(x: int) -> int:
        for step in range(1, 6):
            report_progress(step, 5)
            bars = list(progress.sub_bars.values())
            seen_totals.append((bars[0].n, bars[0].total) if bars else None)
        return x

    Pipeline(nodes=[long], engine=HypernodesEngine(callbacks=[progress])).map(
        inputs={"x": [1, 2]}, map_over="x"
    )
    assert seen_totals[:4] == [(1, 5), (2, 5), (3, 5), (4, 5)]  # the 5th closes the sub-bar
    assert progress.sub_bars == {}


def test_daft_nodes_see_their_name_for_sync_async_and_batch_nodes():
    """On DaftEngine a node's calls run a batch at a time: the name is known, the item
    index is not (None)."""

    @node(output_name="a")
    def sync_name(x: int) -> str:
        return current_node().node_name

    @node(output_name="b")
    async def async_name(a: str) -> str:
        return current_node().node_name

    @node(output_name="c", batch=True)
    def batch_name(b):
        return [current_node().node_name] * len(b)

    pipeline = Pipeline(nodes=[sync_name, async_name, batch_name])
    results = pipeline.map(inputs={"x": [1, 2]}, map_over="x", engine=DaftEngine())
    assert results == [{"a": "sync_name", "b": "async_name", "c": "batch_name"}] * 2


@pytest.mark.parametrize("executor", ["threaded", "async"])
def test_concurrent_nodes_of_one_item_each_see_their_own_name(executor):
    """Nodes of one generation run together; each reads its own name, and the item."""
    barrier = threading.Barrier(2, timeout=5)

    def reader(name: str):
        def read(x: int) -> tuple:
            barrier.wait()  # both nodes are running at once here
            here = current_node()
            return here.node_name, here.item_index

        read.__name__ = name
        return node(output_name=name)(read)

    engine = HypernodesEngine(node_executor=executor, map_executor="sequential")
    pipeline = Pipeline(nodes=[reader("left"), reader("right")], engine=engine)
    try:
        results = pipeline.map(inputs={"x": [1, 2]}, map_over="x")
    finally:
        engine.shutdown()
    assert results == [{"left": ("left", i), "right": ("right", i)} for i in range(2)]


@pytest.mark.parametrize(
    "make",
    [
        lambda cbs: HypernodesEngine(callbacks=cbs),
        lambda cbs: DaftEngine(callbacks=cbs),
        lambda cbs: Pipeline(nodes=[], callbacks=cbs),
    ],
    ids=["HypernodesEngine", "DaftEngine", "Pipeline"],
)
def test_a_bare_callback_is_refused_with_a_clear_message(make):
    with pytest.raises(TypeError, match=r"callbacks must be a list .* callbacks=\[MetricsCallback"):
        make(MetricsCallback())
