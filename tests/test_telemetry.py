"""TelemetryCallback: HyperNodes 0.4's spans on OpenTelemetry, nested as the run is, on
every engine; span_data; the waterfall chart; the error without the optional packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hypernodes_daft import DaftEngine, HypernodesEngine, MemoryCache, Pipeline, node
from hypernodes_daft.telemetry import ProgressCallback, TelemetryCallback

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

LOCAL = {
    "sequential": lambda: HypernodesEngine(),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=2),
    "async": lambda: HypernodesEngine(map_executor="async"),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
}


@pytest.fixture
def exported():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


PIPELINES: dict[str, str] = {}  # "pipeline:<id>" -> "pipeline:<name>", for readable trees


def build() -> Pipeline:
    @node(output_name="a")
    def add_one(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def double(a: int) -> int:
        return a * 2

    inner = Pipeline(nodes=[double], name="inner")
    outer = Pipeline(nodes=[add_one, inner.as_node(name="nested")], name="outer")
    for pipeline in (inner, outer):  # spans name pipelines by id, as 0.4's do
        PIPELINES[f"pipeline:{pipeline.id}"] = f"pipeline:{pipeline.name}"
    return outer


def tree(exporter) -> list[tuple[str, str | None]]:
    """(span name, its parent's name) for every finished span, sorted."""
    spans = exporter.get_finished_spans()
    names = {span.context.span_id: PIPELINES.get(span.name, span.name) for span in spans}
    return sorted(
        (names[s.context.span_id], names.get(s.parent.span_id) if s.parent else None) for s in spans
    )


def item_tree(index: int) -> list[tuple[str, str | None]]:
    return [
        ("node:add_one", "pipeline:outer"),
        ("node:double", "pipeline:inner"),
        ("node:nested", "pipeline:outer"),
        ("pipeline:inner", "node:nested"),
        ("pipeline:outer", f"map_item[{index}]"),
        (f"map_item[{index}]", "map_operation"),
    ]


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_spans_nest_as_the_map_runs_on_every_local_engine(exported, name):
    provider, exporter = exported
    telemetry = TelemetryCallback(tracer_provider=provider)
    with LOCAL[name]() as engine:
        engine.callbacks.append(telemetry)
        result = build().map(inputs={"x": [1, 2]}, map_over="x", engine=engine)
    assert result == [{"a": 2, "b": 4}, {"a": 3, "b": 6}]
    expected = sorted([("map_operation", None), *item_tree(0), *item_tree(1)])
    assert tree(exporter) == expected
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["map_operation"].attributes["total_items"] == 2
    assert by_name["map_item[1]"].attributes["item_index"] == 1
    assert by_name["node:add_one"].attributes["node_id"] == "add_one"


def test_run_spans_and_span_data(exported):
    provider, exporter = exported
    telemetry = TelemetryCallback(tracer_provider=provider)
    engine = HypernodesEngine(callbacks=[telemetry])
    assert build().run(inputs={"x": 1}, engine=engine) == {"a": 2, "b": 4}
    assert ("node:add_one", "pipeline:outer") in tree(exporter)
    kinds = sorted(
        (d["type"], PIPELINES.get(f"pipeline:{d['name']}", d["name"])) for d in telemetry.span_data
    )
    assert kinds == [
        ("node", "add_one"),
        ("node", "double"),
        ("node", "nested"),
        ("pipeline", "pipeline:inner"),
        ("pipeline", "pipeline:outer"),
    ]
    assert all(d["duration"] >= 0 and d["start_time"] > 0 for d in telemetry.span_data)


def test_cached_nodes_and_items_are_marked(exported):
    provider, exporter = exported
    telemetry = TelemetryCallback(tracer_provider=provider, trace_map_items=False)
    engine = HypernodesEngine(cache=MemoryCache(), callbacks=[telemetry])
    pipeline = build()
    pipeline.map(inputs={"x": [1]}, map_over="x", engine=engine)
    exporter.clear()
    pipeline.map(inputs={"x": [1]}, map_over="x", engine=engine)
    cached = [s for s in exporter.get_finished_spans() if s.attributes.get("cached")]
    assert {s.name for s in cached} >= {"node:add_one"}
    assert not any(s.name.startswith("map_item") for s in exporter.get_finished_spans())


def test_a_failing_node_span_records_the_error(exported):
    from opentelemetry.trace import StatusCode

    provider, exporter = exported

    @node(output_name="y")
    def fail(x: int) -> int:
        raise ValueError("no")

    telemetry = TelemetryCallback(tracer_provider=provider)
    with pytest.raises(ValueError):
        Pipeline(nodes=[fail], engine=HypernodesEngine(callbacks=[telemetry])).run(inputs={"x": 1})
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "node:fail"]
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error_type"] == "ValueError"


def test_daft_reports_a_span_per_batch_under_the_map(exported):
    provider, exporter = exported
    telemetry = TelemetryCallback(tracer_provider=provider)
    engine = DaftEngine(callbacks=[telemetry])
    result = build().map(inputs={"x": list(range(30))}, map_over="x", engine=engine)
    assert result == [{"a": x + 1, "b": 2 * (x + 1)} for x in range(30)]
    spans = exporter.get_finished_spans()
    rows = {}
    for span in spans:
        if span.name.startswith("node:"):
            rows[span.name] = rows.get(span.name, 0) + span.attributes["rows"]
    assert rows == {"node:add_one": 30, "node:double": 30}
    assert {parent for name, parent in tree(exporter) if name.startswith("node:")} == {
        "map_operation"
    }
    assert all(d["rows"] for d in telemetry.span_data if d["type"] == "node")


def test_the_waterfall_chart_has_a_bar_per_span(exported):
    pytest.importorskip("plotly")
    provider, _ = exported
    telemetry = TelemetryCallback(tracer_provider=provider)
    build().run(inputs={"x": 1}, engine=HypernodesEngine(callbacks=[telemetry]))
    figure = telemetry.get_waterfall_chart()
    (bar,) = figure.data
    assert len(bar.y) == len(telemetry.span_data) == 5


def test_the_0_4_import_path():
    import hypernodes_daft.telemetry as telemetry

    assert telemetry.__all__ == ["ProgressCallback", "TelemetryCallback"]
    assert ProgressCallback.__module__ == "hypernodes_daft.callbacks.progress"


def test_without_opentelemetry_one_import_error_names_the_extra():
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from hypernodes_daft.telemetry import TelemetryCallback\n"
        "try:\n"
        "    TelemetryCallback()\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'hypernodes_daft[telemetry]'" in done.stdout
