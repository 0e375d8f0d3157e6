"""Unit tests of hypernodes_daft.callbacks, calling the hooks directly (no engine)."""

import asyncio
import contextvars
import dataclasses
import inspect
import io
import pickle
import statistics
import sys
import threading

import pytest

from hypernodes_daft.callbacks import (
    HOOKS,
    CallbackContext,
    Callbacks,
    MetricsCallback,
    NodeContext,
    PipelineCallback,
    ProgressCallback,
    current_node,
    node_context,
    report_progress,
)
from hypernodes_daft.callbacks import progress as progress_module


def root_ctx(pipeline_id: str = "root") -> CallbackContext:
    """A context as the engine hands it to hooks: the root pipeline pushed (depth 1)."""
    ctx = CallbackContext()
    ctx.push_pipeline(pipeline_id)
    return ctx


@pytest.fixture
def progress():
    bar = ProgressCallback(file=io.StringIO())
    yield bar
    bar.close()  # never leave a session registered for report_progress in other tests


# --------------------------------------------------------------------------------------
# CallbackContext
# --------------------------------------------------------------------------------------


def test_context_stack_depth_and_ids():
    ctx = CallbackContext()
    assert (ctx.depth, ctx.current_pipeline_id, ctx.parent_pipeline_id) == (0, None, None)
    ctx.push_pipeline("outer")
    ctx.push_pipeline("inner")
    assert ctx.depth == 2
    assert ctx.current_pipeline_id == "inner" and ctx.parent_pipeline_id == "outer"
    assert ctx.hierarchy_path == ["outer", "inner"]
    assert ctx.pop_pipeline() == "inner"
    assert (ctx.depth, ctx.current_pipeline_id, ctx.parent_pipeline_id) == (1, "outer", None)


def test_hierarchy_path_is_a_copy():
    ctx = root_ctx()
    ctx.hierarchy_path.append("intruder")
    assert ctx.hierarchy_path == ["root"]


def test_context_data_and_pipeline_metadata():
    ctx = root_ctx()
    ctx.set("k", 1)
    assert ctx.get("k") == 1 and ctx.get("missing") is None and ctx.get("missing", 7) == 7
    assert ctx.data["k"] == 1  # `data` is the plain dict, as in 0.4
    assert ctx.get_pipeline_metadata("root") == {}
    meta = {"total_nodes": 2, "pipeline_name": "p", "node_ids": ["a", "b"]}
    ctx.set_pipeline_metadata("root", meta)
    assert ctx.get_pipeline_metadata("root") == meta
    assert ctx.data["_pipeline_metadata:root"] == meta  # the 0.4 key
    assert ctx.setdefault("k", 2) == 1 and ctx.setdefault("new", []) == []


def test_context_setdefault_is_atomic_across_threads():
    ctx = root_ctx()
    seen = []
    barrier = threading.Barrier(8)

    def create():
        barrier.wait()
        seen.append(ctx.setdefault("state", object()))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1


def test_context_pickles_with_a_fresh_lock():
    ctx = root_ctx()
    ctx.set("k", [1, 2])
    copy = pickle.loads(pickle.dumps(ctx))
    assert copy.get("k") == [1, 2] and copy.hierarchy_path == ["root"]
    copy.push_pipeline("inner")  # the lock works
    assert copy.depth == 2 and ctx.depth == 1


# --------------------------------------------------------------------------------------
# PipelineCallback: 0.4's hooks
# --------------------------------------------------------------------------------------


def test_hooks_match_hypernodes_0_4_names_and_arguments():
    reference = pytest.importorskip("hypernodes.callbacks").PipelineCallback
    theirs = {name for name in vars(reference) if name.startswith("on_")}
    assert set(HOOKS) == theirs
    for hook in HOOKS:
        ours = list(inspect.signature(getattr(PipelineCallback, hook)).parameters)
        expected = list(inspect.signature(getattr(reference, hook)).parameters)
        assert ours == expected, hook


def test_base_hooks_do_nothing_and_support_every_engine():
    callback = PipelineCallback()
    ctx = root_ctx()
    callback.on_pipeline_start("p", {}, ctx)
    callback.on_node_end("n", {"y": 1}, 0.1, ctx)
    callback.on_map_end(1.0, ctx)
    assert callback.supported_engines is None


# --------------------------------------------------------------------------------------
# Callbacks dispatcher
# --------------------------------------------------------------------------------------


class Recorder(PipelineCallback):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_node_start(self, node_id, inputs, ctx):
        self.log.append((self.name, "start", node_id))

    def on_node_end(self, node_id, outputs, duration, ctx):
        self.log.append((self.name, "end", node_id))


def test_fire_calls_each_callback_in_list_order():
    log = []
    callbacks = Callbacks([Recorder("first", log), Recorder("second", log)])
    ctx = root_ctx()
    callbacks.fire("on_node_start", "a", {}, ctx)
    callbacks.fire("on_node_end", "a", {"a": 1}, 0.1, ctx)
    assert log == [
        ("first", "start", "a"),
        ("second", "start", "a"),
        ("first", "end", "a"),
        ("second", "end", "a"),
    ]


def test_duck_typed_callbacks_and_wants():
    class OnlyMapEnd:  # not a PipelineCallback, one hook only
        def __init__(self):
            self.durations = []

        def on_map_end(self, total_duration, ctx):
            self.durations.append(total_duration)

    log = []
    only = OnlyMapEnd()
    callbacks = Callbacks([only, Recorder("r", log)])
    callbacks.fire("on_map_end", 2.5, root_ctx())
    callbacks.fire("on_pipeline_start", "p", {}, root_ctx())  # nobody implements it
    assert only.durations == [2.5]
    assert callbacks.wants("on_map_end") and callbacks.wants("on_node_start")
    assert not callbacks.wants("on_pipeline_start")  # the base class's no-op does not count


def test_unknown_hook_is_an_error():
    with pytest.raises(ValueError, match="on_node_finish"):
        Callbacks([PipelineCallback()]).fire("on_node_finish", "a")
    with pytest.raises(ValueError):
        Callbacks().wants("nope")


def test_callback_exceptions_propagate_and_stop_later_callbacks():
    class Broken(PipelineCallback):
        def on_node_start(self, node_id, inputs, ctx):
            raise KeyError("broken callback")

    log = []
    callbacks = Callbacks([Broken(), Recorder("after", log)])
    with pytest.raises(KeyError, match="broken callback"):
        callbacks.fire("on_node_start", "a", {}, root_ctx())
    assert log == []


def test_empty():
    assert Callbacks().empty and Callbacks(None).empty and Callbacks([]).empty
    assert not Callbacks([PipelineCallback()]).empty
    assert len(Callbacks([PipelineCallback(), PipelineCallback()])) == 2


class DaftOnly(PipelineCallback):
    @property
    def supported_engines(self):
        return ["DaftEngine"]


def test_check_engine_rejects_an_excluded_engine():
    class Everywhere(PipelineCallback):
        @property
        def supported_engines(self):
            return []

    callbacks = Callbacks([PipelineCallback(), Everywhere(), DaftOnly()])
    callbacks.check_engine("DaftEngine")
    with pytest.raises(ValueError, match="DaftOnly is not compatible with engine SeqEngine"):
        callbacks.check_engine("SeqEngine")
    Callbacks([object()]).check_engine("SeqEngine")  # no supported_engines at all: fine


def test_aggregated_events_reach_the_callbacks_that_take_them(progress):
    metrics = MetricsCallback()
    callbacks = Callbacks([progress, metrics, PipelineCallback()])
    assert callbacks.wants_batches and not Callbacks([PipelineCallback()]).wants_batches
    callbacks.fire("on_map_start", 10, root_ctx())
    callbacks.record_batch("embed", 4, 2.0, cached=6)
    callbacks.advance_items(10, cached=6)
    assert progress.node_bars["embed"].n == 10
    assert progress.main_bar.n == 10
    assert metrics.summary()["embed"]["calls"] == 4


def test_engine_hooks_are_declared_with_the_dispatchers_argument_names():
    dispatcher = {
        "record_batch": ["node_id", "rows", "seconds", "cached", "errors"],
        "advance_items": ["n", "cached"],
        "record_retry": ["node_id"],
    }
    for hook, names in dispatcher.items():
        ours = list(inspect.signature(getattr(PipelineCallback, hook)).parameters)
        assert ours == ["self", *names], hook
        # the dispatcher's method of the same name starts with the same arguments
        theirs = list(inspect.signature(getattr(Callbacks, hook)).parameters)
        assert theirs[1 : 1 + len(names)] == names, hook
    callback = PipelineCallback()  # the defaults do nothing
    callback.record_batch("a", 2, 0.1, cached=1, errors=1)
    callback.advance_items(3, cached=1)
    callback.record_retry("a")


def test_engine_hooks_left_as_inherited_get_the_per_row_hooks():
    log = []

    class PerRow(Recorder):  # inherits record_batch/advance_items unchanged
        def on_error(self, node_id, error, ctx):
            log.append((self.name, "error", node_id, type(error).__name__))

        def on_map_item_end(self, item_index, duration, ctx):
            log.append((self.name, "item", item_index))

    class Batches(PipelineCallback):
        def record_batch(self, node_id, rows, seconds, cached=0, errors=0):
            log.append(("batches", node_id, rows, cached, errors))

        def on_node_start(self, node_id, inputs, ctx):  # not called per row: it takes batches
            log.append(("batches", "start", node_id))

    class Duck:  # not a PipelineCallback: having the method is implementing it
        def advance_items(self, n, cached=0):
            log.append(("duck", n, cached))

        def record_retry(self, node_id):
            log.append(("duck", "retry", node_id))

    callbacks = Callbacks([PerRow("rows", log), Batches(), Duck()])
    assert callbacks.wants_batches
    callbacks.record_batch("a", 2, 1.0, cached=0, errors=1, ctx=root_ctx())
    callbacks.advance_items(2, 0, root_ctx(), first=5, seconds=1.0)
    callbacks.record_retry("a", 2)
    assert log == [
        ("batches", "a", 2, 0, 1),
        ("rows", "start", "a"),
        ("rows", "end", "a"),
        ("rows", "start", "a"),
        ("rows", "error", "a", "RowFailed"),
        ("duck", 2, 0),
        ("rows", "item", 5),
        ("rows", "item", 6),
        ("duck", "retry", "a"),
        ("duck", "retry", "a"),
    ]
    assert not Callbacks([PerRow("rows", [])]).wants_batches


# --------------------------------------------------------------------------------------
# MetricsCallback
# --------------------------------------------------------------------------------------


def run_calls(metrics, node_id, durations, ctx=None):
    ctx = ctx or root_ctx()
    for duration in durations:
        metrics.on_node_start(node_id, {}, ctx)
        metrics.on_node_end(node_id, {node_id: 1}, duration, ctx)


def test_latency_percentiles():
    metrics = MetricsCallback()
    durations = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    run_calls(metrics, "a", durations)
    stats = metrics.summary()["a"]
    expected = statistics.quantiles(durations, n=100, method="inclusive")
    assert stats["p50"] == pytest.approx(expected[49]) == pytest.approx(0.0505)
    assert stats["p95"] == pytest.approx(expected[94]) == pytest.approx(0.09505)
    assert stats["max"] == 0.1
    assert stats["calls"] == 100 and stats["in_flight_peak"] == 1


def test_one_latency_and_none():
    metrics = MetricsCallback()
    run_calls(metrics, "once", [0.25])
    metrics.on_node_cached("never_ran", "sig", root_ctx())
    summary = metrics.summary()
    assert (summary["once"]["p50"], summary["once"]["p95"], summary["once"]["max"]) == (
        0.25,
        0.25,
        0.25,
    )
    assert summary["never_ran"]["p50"] is None and summary["never_ran"]["calls"] == 0


def test_counts_cache_hits_errors_and_retries():
    metrics = MetricsCallback()
    ctx = root_ctx()
    run_calls(metrics, "a", [0.1, 0.2], ctx)
    metrics.on_node_cached("a", "sig", ctx)
    metrics.on_node_start("a", {}, ctx)
    metrics.record_retry("a")
    metrics.record_retry("a")
    metrics.on_error("a", RuntimeError("boom"), ctx)
    stats = metrics.summary()["a"]
    assert stats["calls"] == 3 and stats["cached"] == 1
    assert stats["errors"] == 1 and stats["retries"] == 2
    assert stats["max"] == 0.2  # a failed call has no latency


def test_in_flight_never_goes_negative():
    metrics = MetricsCallback()
    metrics.on_error("a", ValueError(), root_ctx())  # an error with no start before it
    run_calls(metrics, "a", [0.1])
    assert metrics.summary()["a"]["in_flight_peak"] == 1 and metrics.in_flight_peak == 1


def test_in_flight_peak_under_threads():
    metrics = MetricsCallback()
    ctx = root_ctx()
    all_started = threading.Barrier(8)

    def call(node_id):
        metrics.on_node_start(node_id, {}, ctx)
        all_started.wait()  # 8 calls are running at once here
        metrics.on_node_end(node_id, {}, 0.01, ctx)

    threads = [threading.Thread(target=call, args=("ab"[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = metrics.summary()
    assert summary["a"]["in_flight_peak"] == 4 and summary["b"]["in_flight_peak"] == 4
    assert metrics.in_flight_peak == 8
    assert summary["a"]["calls"] == 4 and len(metrics._nodes["a"].latencies) == 4
    run_calls(metrics, "a", [0.01])
    assert metrics.in_flight_peak == 8  # the peak stays, the count went back to 0


def test_counters_are_exact_under_contention():
    metrics = MetricsCallback()
    ctx = root_ctx()

    def many():
        run_calls(metrics, "hot", [0.001] * 2000, ctx)

    threads = [threading.Thread(target=many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.summary()["hot"]["calls"] == 8000
    assert len(metrics._nodes["hot"].latencies) == 8000


def test_record_batch_counts_each_row_at_the_mean_latency():
    metrics = MetricsCallback()
    metrics.record_batch("embed", rows=4, seconds=2.0, cached=3, errors=1)
    metrics.record_batch("embed", rows=0, seconds=0.0, cached=5)  # an all-cached batch
    run_calls(metrics, "embed", [1.5])
    stats = metrics.summary()["embed"]
    assert stats["calls"] == 5 and stats["cached"] == 8 and stats["errors"] == 1
    assert metrics._nodes["embed"].latencies == [0.5, 0.5, 0.5, 0.5, 1.5]
    assert stats["p50"] == 0.5 and stats["max"] == 1.5


def test_summary_dict_and_table_text():
    metrics = MetricsCallback()
    run_calls(metrics, "tokenize", [0.001, 0.003])
    metrics.on_node_cached("embed", "sig", root_ctx())
    summary = metrics.summary()
    assert list(summary) == ["tokenize", "embed"]  # first-seen order
    assert set(summary["tokenize"]) == {
        "calls",
        "cached",
        "errors",
        "retries",
        "p50",
        "p95",
        "max",
        "total",
        "in_flight_peak",
    }
    lines = metrics.table().splitlines()
    assert lines[0].split("|")[1:-1] == [
        f" {h} "
        for h in [
            "node    ",
            "calls",
            "cached",
            "errors",
            "retries",
            "p50 ms",
            "p95 ms",
            "max ms",
            "total s",
            "in-flight peak",
        ]
    ]
    assert lines[1].startswith("|:---")
    tokenize = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert tokenize == ["tokenize", "2", "0", "0", "0", "2.00", "2.90", "3.00", "0.004", "1"]
    embed = [cell.strip() for cell in lines[3].split("|")[1:-1]]
    assert embed == ["embed", "0", "1", "0", "0", "-", "-", "-", "-", "0"]
    assert lines[-1] == "overall in-flight peak: 1"
    assert len({len(line) for line in lines[:4]}) == 1  # columns line up
    assert str(metrics) == metrics.table()


def test_otel_needs_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match="pip install opentelemetry-api"):
        MetricsCallback(otel=True)
    MetricsCallback()  # without otel nothing is imported


@pytest.fixture
def spans():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_otel_span_per_call_with_node_and_item(spans):
    from opentelemetry.trace import StatusCode

    provider, exporter = spans
    metrics = MetricsCallback(otel=True, tracer_provider=provider)
    ctx = root_ctx()
    with node_context("double", ("root",), 3):
        metrics.on_node_start("double", {}, ctx)
        metrics.on_node_end("double", {}, 0.01, ctx)
    ctx.set("_map_item_index", 4)  # without node_context the engine's ctx key is used
    metrics.on_node_start("fail", {}, ctx)
    metrics.on_error("fail", ValueError("bad"), ctx)
    metrics.on_node_cached("double", "sig", ctx)
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["node:double", "node:fail", "node:double"]
    ok, failed, cached = finished
    assert dict(ok.attributes) == {"hypernodes.node_id": "double", "hypernodes.item_index": 3}
    assert failed.attributes["hypernodes.item_index"] == 4
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.events[0].name == "exception"
    assert cached.attributes["hypernodes.cached"] is True


def test_otel_spans_match_their_calls_across_interleaved_tasks(spans):
    provider, exporter = spans
    metrics = MetricsCallback(otel=True, tracer_provider=provider)
    ctx = root_ctx()
    first_started, second_ended = asyncio.Event(), asyncio.Event()

    async def call(index):
        with node_context("fetch", (), index):
            metrics.on_node_start("fetch", {}, ctx)
            if index == 0:
                first_started.set()
                await second_ended.wait()  # item 0 ends after item 1 on the same thread
            else:
                await first_started.wait()
            metrics.on_node_end("fetch", {}, 0.0, ctx)
            if index == 1:
                second_ended.set()

    async def main():
        await asyncio.gather(call(0), call(1))

    asyncio.run(main())
    by_item = {s.attributes["hypernodes.item_index"]: s for s in exporter.get_finished_spans()}
    assert by_item[1].end_time < by_item[0].end_time  # each end closed its own span


def test_otel_batch_span_covers_the_batch(spans):
    provider, exporter = spans
    metrics = MetricsCallback(otel=True, tracer_provider=provider)
    metrics.record_batch("embed", rows=10, seconds=0.5, cached=2)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["hypernodes.rows"] == 10
    assert span.attributes["hypernodes.cached_rows"] == 2
    assert span.end_time - span.start_time == pytest.approx(0.5e9, rel=1e-6)


# --------------------------------------------------------------------------------------
# ProgressCallback
# --------------------------------------------------------------------------------------


def fire_map_item(callbacks, ctx, index, computed=("a",), cached=()):
    """The 0.4 sequence of one map item on a shared context."""
    ctx.set("_in_map", True)
    ctx.set("_map_item_index", index)
    callbacks.fire("on_map_item_start", index, ctx)
    callbacks.fire("on_pipeline_start", "root", {}, ctx)
    for node_id in cached:
        callbacks.fire("on_node_cached", node_id, "sig", ctx)
        callbacks.fire("on_map_item_cached", index, "sig", ctx)
    for node_id in computed:
        callbacks.fire("on_node_start", node_id, {}, ctx)
        callbacks.fire("on_node_end", node_id, {node_id: 1}, 0.01, ctx)
    callbacks.fire("on_pipeline_end", "root", {}, 0.02, ctx)
    callbacks.fire("on_map_item_end", index, 0.02, ctx)


def test_map_bars_count_items_and_nodes(progress):
    callbacks = Callbacks([progress])
    ctx = root_ctx()
    callbacks.fire("on_map_start", 3, ctx)
    fire_map_item(callbacks, ctx, 0, computed=("a", "b"))
    fire_map_item(callbacks, ctx, 1, computed=("b",), cached=("a",))
    assert progress.main_bar.total == 3 and progress.main_bar.n == 2
    assert progress.main_bar.postfix == "cached 1"
    fire_map_item(callbacks, ctx, 2, computed=(), cached=("a", "b"))  # two hits, one item
    assert progress.main_bar.n == 3 and progress.main_bar.postfix == "cached 2"
    a, b = progress.node_bars["a"], progress.node_bars["b"]
    assert (a.n, a.total, a.postfix) == (3, 3, "cached 2")
    assert (b.n, b.total, b.postfix) == (3, 3, "cached 1")
    assert not progress.main_bar.disable  # the items' pipeline_end did not close anything
    callbacks.fire("on_map_end", 0.1, ctx)
    assert progress.main_bar.disable and a.disable and b.disable  # closed
    assert "items ✓" in progress.main_bar.desc


def test_run_bars_count_nodes(progress):
    ctx = root_ctx("p1")
    ctx.set_pipeline_metadata("p1", {"total_nodes": 2, "pipeline_name": "etl", "node_ids": []})
    progress.on_pipeline_start("p1", {}, ctx)
    assert (progress.main_bar.total, progress.main_bar.desc) == (2, "etl")
    progress.on_node_start("load", {}, ctx)
    progress.on_node_end("load", {}, 0.1, ctx)
    progress.on_node_cached("save", "sig", ctx)
    assert progress.main_bar.n == 2
    assert [(bar.n, bar.total) for bar in progress.node_bars.values()] == [(1, 1), (1, 1)]
    progress.on_pipeline_end("p1", {}, 0.2, ctx)
    assert progress.main_bar.disable and progress.sub_bars == {}


def test_nested_pipelines_count_on_node_bars_only(progress):
    ctx = root_ctx()
    progress.on_map_start(2, ctx)
    # 0.4: a nested pipeline gets a new context, also at depth 1
    inner = root_ctx("inner")
    progress.on_map_start(5, inner)
    progress.on_node_end("tokenize", {}, 0.1, inner)
    progress.on_map_item_end(0, 0.1, inner)
    progress.on_map_end(0.1, inner)
    # a shared context with the nested pipeline pushed (depth 2)
    ctx.push_pipeline("inner2")
    progress.on_node_end("tokenize", {}, 0.1, ctx)
    progress.on_pipeline_end("inner2", {}, 0.1, ctx)
    progress.on_map_end(0.1, ctx)
    ctx.pop_pipeline()
    assert progress.main_bar.n == 0 and not progress.main_bar.disable
    tokenize = progress.node_bars["tokenize"]
    assert (tokenize.n, tokenize.total) == (2, None)  # a nested node: no known total
    progress.on_map_end(0.2, ctx)
    assert progress.main_bar.disable and progress.main_bar.n == 2


def test_error_closes_the_bars_and_late_events_are_ignored(progress):
    ctx = root_ctx()
    progress.on_map_start(4, ctx)
    fire_map_item(Callbacks([progress]), ctx, 0)
    progress.on_node_start("a", {}, ctx)
    progress.on_error("a", ZeroDivisionError(), ctx)
    failed_main = progress.main_bar
    assert failed_main.disable and "✗" in failed_main.desc
    assert "a ✗" in progress.node_bars["a"].desc
    fire_map_item(Callbacks([progress]), ctx, 1)  # a thread that was still running
    progress.on_map_start(4, ctx)
    assert progress.main_bar is failed_main and failed_main.n == 1
    progress.on_map_start(1, root_ctx())  # the next run opens new bars
    assert progress.main_bar is not failed_main


def test_aggregated_progress(progress):
    ctx = root_ctx()
    progress.on_map_start(1000, ctx)
    progress.advance("embed", calls=500, cached=200)
    progress.advance("embed", cached=100)
    progress.advance_items(700, cached=250)
    embed = progress.node_bars["embed"]
    assert (embed.n, embed.total, embed.postfix) == (800, 1000, "cached 300")
    assert (progress.main_bar.n, progress.main_bar.postfix) == (700, "cached 250")
    progress.on_map_end(1.0, ctx)
    assert progress.main_bar.n == 1000 and progress.main_bar.disable


def test_events_without_a_session_are_ignored(progress):
    progress.advance("a", calls=3)
    progress.advance_items(3)
    progress.on_node_end("a", {}, 0.1, root_ctx())
    assert progress.main_bar is None and progress.node_bars == {}


def test_node_bar_counts_are_exact_from_many_threads(progress):
    ctx = root_ctx()
    progress.on_map_start(4000, ctx)

    def items(start):
        for i in range(start, start + 1000):
            progress.on_node_end("a", {}, 0.0, ctx)
            progress.on_map_item_end(i, 0.0, ctx)

    threads = [threading.Thread(target=items, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.node_bars["a"].n == 4000 and progress.main_bar.n == 4000


def test_disabled_progress_needs_no_tqdm_and_does_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="pip install 'tqdm"):
        ProgressCallback()
    off = ProgressCallback(enable=False)
    ctx = root_ctx()
    off.on_map_start(3, ctx)
    off.on_node_end("a", {}, 0.1, ctx)
    off.advance("a", 1)
    assert off.main_bar is None and off.node_bars == {}


def test_progress_writes_only_to_its_file(capsys):
    out = io.StringIO()
    bar = ProgressCallback(file=out)
    ctx = root_ctx()
    bar.on_map_start(2, ctx)
    fire_map_item(Callbacks([bar]), ctx, 0)
    fire_map_item(Callbacks([bar]), ctx, 1)
    bar.on_map_end(0.1, ctx)
    assert "items ✓" in out.getvalue() and "2/2" in out.getvalue()
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------------------
# NodeContext, current_node, report_progress
# --------------------------------------------------------------------------------------


def test_node_context_sets_and_restores():
    assert current_node() is None
    with node_context("outer", ["p"], 1) as outer:
        assert outer == NodeContext("outer", ("p",), 1) and current_node() == outer
        with node_context("inner", ("p", "nested")):
            assert current_node() == NodeContext("inner", ("p", "nested"), None)
        assert current_node() == outer
    assert current_node() is None
    with pytest.raises(RuntimeError):
        with node_context("fails"):
            raise RuntimeError
    assert current_node() is None


def test_node_context_is_frozen_and_hashable():
    node = NodeContext("a", ("p",), 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.item_index = 1  # type: ignore[misc]
    assert {node: 1}[NodeContext("a", ("p",), 0)] == 1


def test_each_thread_sees_its_own_node():
    barrier = threading.Barrier(4)
    seen = {}

    def work(i):
        with node_context("n", ("p",), i):
            barrier.wait()  # all four are inside their node at once
            seen[i] = current_node().item_index

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {0: 0, 1: 1, 2: 2, 3: 3} and current_node() is None


def test_new_threads_inherit_the_node_only_through_copy_context():
    results = {}
    with node_context("n", (), 7):
        plain = threading.Thread(target=lambda: results.setdefault("plain", current_node()))
        plain.start()
        plain.join()
        ctx = contextvars.copy_context()
        copied = threading.Thread(
            target=ctx.run, args=(lambda: results.update(copied=current_node()),)
        )
        copied.start()
        copied.join()
    assert results["plain"] is None
    assert results["copied"] == NodeContext("n", (), 7)


def test_asyncio_tasks_see_their_own_node():
    async def item(i):
        with node_context("fetch", ("p",), i):
            await asyncio.sleep(0)  # let the other tasks run in between
            in_thread = await asyncio.to_thread(current_node)
            child = await asyncio.create_task(_current())
            return current_node().item_index, in_thread.item_index, child.item_index

    async def main():
        return await asyncio.gather(*(item(i) for i in range(5)))

    assert asyncio.run(main()) == [(i, i, i) for i in range(5)]


async def _current():
    return current_node()


def test_report_progress_without_an_active_progress_does_nothing():
    report_progress(1, 10)
    with node_context("n"):
        report_progress(5)


def test_report_progress_shows_a_sub_bar(progress):
    ctx = root_ctx()
    progress.on_map_start(2, ctx)
    node = NodeContext("slow", ("root",), 1)
    with node_context("slow", ("root",), 1):
        report_progress(3, 10)
        bar = progress.sub_bars[node]
        assert (bar.n, bar.total) == (3, 10) and "slow[1]" in bar.desc
        report_progress(7, 10)
        assert bar.n == 7
        report_progress(10, 10)  # done: the sub-bar goes away
        assert node not in progress.sub_bars and bar.disable
        report_progress(2)  # a new call with an unknown total
        assert progress.sub_bars[node].total is None
        progress.on_node_end("slow", {}, 0.1, ctx)  # the call ended: sub-bar closed
    assert progress.sub_bars == {}
    progress.on_map_end(0.1, ctx)
    assert progress not in progress_module._ACTIVE_PROGRESS


def test_report_progress_from_threads_reaches_every_active_progress():
    first = ProgressCallback(file=io.StringIO())
    second = ProgressCallback(file=io.StringIO())
    try:
        first.on_map_start(4, root_ctx())
        second.on_map_start(4, root_ctx())
        barrier = threading.Barrier(4)

        def work(i):
            with node_context("slow", (), i):
                report_progress(i + 1, 100)
                barrier.wait()  # all sub-bars open together

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for progress in (first, second):
            bars = progress.sub_bars
            assert {node.item_index: bar.n for node, bar in bars.items()} == {
                0: 1,
                1: 2,
                2: 3,
                3: 4,
            }
    finally:
        first.close()
        second.close()
    assert (
        first not in progress_module._ACTIVE_PROGRESS
        and second not in progress_module._ACTIVE_PROGRESS
    )
    report_progress(1, 2)  # nothing active any more: no error
