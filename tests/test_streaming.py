"""`pipeline.iter_map` / `aiter_map`: results as items finish, in bounded memory."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc

import pytest

from hypernodes_daft import DaftEngine, ExecutionError, HypernodesEngine, Pipeline, node

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=3),
    "async": lambda: HypernodesEngine(map_executor="async", max_concurrency=4),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(),
}


@node(output_name="y")
def triple(x: int) -> int:
    if x == -1:
        raise ValueError("negative")
    return 3 * x


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_iter_map_streams_every_item_once_with_its_index(name):
    engine = ENGINES[name]()
    pipeline = Pipeline(nodes=[triple])
    inputs = {"x": list(range(50))}
    try:
        streamed = list(pipeline.iter_map(inputs=inputs, map_over="x", engine=engine))
        mapped = pipeline.map(inputs=inputs, map_over="x", engine=engine)
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()
    assert sorted(i for i, _ in streamed) == list(range(50))
    assert dict(streamed) == dict(enumerate(mapped))


def test_sequential_stream_is_in_order_and_lazy():
    started = []

    @node(output_name="y")
    def record(x: int) -> int:
        started.append(x)
        return x

    stream = Pipeline(nodes=[record]).iter_map(inputs={"x": list(range(100))}, map_over="x")
    assert next(stream) == (0, {"y": 0}) and next(stream) == (1, {"y": 1})
    assert started == [0, 1]  # nothing runs ahead of the consumer


def test_async_stream_yields_in_completion_order():
    @node(output_name="y")
    async def wait(x: int) -> int:
        await asyncio.sleep(0.02 * (5 - x))
        return x

    engine = HypernodesEngine(map_executor="async")
    order = [
        i for i, _ in Pipeline(nodes=[wait]).iter_map({"x": list(range(5))}, "x", engine=engine)
    ]
    assert order == [4, 3, 2, 1, 0]


def test_leaving_a_threaded_stream_early_stops_the_rest():
    started = []
    lock = threading.Lock()

    @node(output_name="y")
    def slow(x: int) -> int:
        with lock:
            started.append(x)
        time.sleep(0.01)
        return x

    with HypernodesEngine(map_executor="threaded", max_workers=2) as engine:
        stream = Pipeline(nodes=[slow]).iter_map({"x": list(range(1000))}, "x", engine=engine)
        for count, _ in enumerate(stream, 1):
            if count == 3:
                break
        stream.close()
    time.sleep(0.05)
    assert len(started) <= 3 + 2 * 2  # what was consumed plus one window


def test_an_async_stream_of_many_items_holds_no_list_of_results():
    @node(output_name="y")
    async def echo(x: int) -> int:
        return x

    inputs = {"x": list(range(100_000))}
    engine = HypernodesEngine(map_executor="async", max_concurrency=50)
    pipeline = Pipeline(nodes=[echo])
    tracemalloc.start()
    try:
        total = sum(out["y"] for _, out in pipeline.iter_map(inputs, "x", engine=engine))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == sum(range(100_000))
    assert peak < 5_000_000  # 100,000 result dicts alone would be over 15 MB


@pytest.mark.parametrize("name", ["sequential", "threaded", "async"])
def test_a_failing_item_stops_the_stream_with_its_index(name):
    engine = ENGINES[name]()
    stream = Pipeline(nodes=[triple]).iter_map({"x": [1, 2, -1, 4]}, "x", engine=engine)
    with pytest.raises(ExecutionError) as caught:
        list(stream)
    assert caught.value.item_index == 2 and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name", ["sequential", "async", "daft"])
def test_aiter_map_streams_to_async_code(name):
    engine = ENGINES[name]()
    pipeline = Pipeline(nodes=[triple])

    async def collect():
        return [entry async for entry in pipeline.aiter_map({"x": [1, 2, 3]}, "x", engine=engine)]

    assert sorted(asyncio.run(collect())) == [(0, {"y": 3}), (1, {"y": 6}), (2, {"y": 9})]
