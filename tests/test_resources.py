"""Resource-aware nodes on this machine: requests parsed and checked, groups split by what
they ask for, local engines bounded by what the machine holds, replicas of a `@stateful`
model. On a Ray cluster: tests/ray/test_resources_on_ray.py."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from hypernodes_daft import DaftEngine, HypernodesEngine, Pipeline, node, stateful
from hypernodes_daft.engines.daft.groups import plan_groups
from hypernodes_daft.resources import ResourceError, Resources, parse_memory
from hypernodes_daft.stateful import ReplicaSlots, request_of

# -- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [(1024, 1024), ("4GiB", 4 * 2**30), ("512MB", 512 * 10**6), ("1.5 GB", 1_500_000_000),
     ("2k", 2000), ("10b", 10)],
)  # fmt: skip
def test_memory_is_bytes_or_a_size_string(given, expected):
    assert parse_memory(given, "node 'n'") == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": "lots"}, "memory 'lots' is not a size"),
        ({"memory": 0}, "memory must be > 0"),
        ({"gpus": -1}, "gpus must be a number >= 0"),
        ({"gpus": 1.5}, "gpus above 1 must be a whole number"),
        ({"resources": {"model_host": 0}}, "resources must map names to amounts > 0"),
        ({"resources": {"GPU": 1}}, "ask for GPU with cpus=/gpus=/memory="),
    ],
)
def test_a_bad_request_names_the_node_and_the_value(options, message):
    with pytest.raises(ValueError, match="node 'embed'") as error:
        node(output_name="v", **options)(embed)
    assert message in str(error.value)


def embed(text: str) -> str:
    return text


def test_a_request_reads_as_asked_and_merges_by_the_larger_amount():
    asking = node(output_name="v", gpus=1, memory="4GiB", resources={"model_host": 1})(embed)
    request = asking.options.request
    assert str(request) == "gpus=1, memory=4GiB, model_host=1"
    assert request.as_ray() == {"GPU": 1.0, "memory": float(4 * 2**30), "model_host": 1.0}
    merged = request.merged(Resources(cpus=2, gpus=0.5))
    assert (merged.cpus, merged.gpus, merged.memory) == (2.0, 1.0, 4 * 2**30)
    assert Resources(gpus=1).copies_on({"CPU": 8, "GPU": 2}) == 2
    assert Resources(cpus=3).copies_on({"CPU": 8}) == 2
    assert not Resources() and node(output_name="w")(embed).options.request == Resources()


def test_stateful_takes_resources_and_replicas():
    @stateful(gpus=1, replicas=2)
    class Encoder:
        def encode(self, text: str) -> int:
            return len(text)

    request, replicas = request_of(Encoder())
    assert (request, replicas) == (Resources(gpus=1.0), 2)
    assert request_of("a plain value") == (Resources(), 0)
    assert Encoder().encode("abc") == 3  # still lazy and usable as before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="@stateful class 'Encoder': replicas"):
            stateful(replicas=bad)(type("Encoder", (), {}))


# -- planning: groups --------------------------------------------------------------------------


@stateful(cpus=1, replicas=2)
class Model:
    def __init__(self, directory: str | None = None):
        if directory:  # each construction leaves a file: the tests count them
            Path(directory, f"{os.getpid()}-{time.monotonic_ns()}").touch()

    def predict(self, x: int) -> int:
        time.sleep(0.002)
        return x * 3


@node(output_name="a")
def prepare(x: int) -> int:
    return x + 1


@node(output_name="b")
def score(a: int, model: Model) -> int:
    return model.predict(a)


@node(output_name="c", cpus=1)
def adjust(b: int) -> int:
    return b - 2


@node(output_name="d", cpus=1)
def finish(c: int) -> int:
    return c * 10


PIPELINE = [prepare, score, adjust, finish]


def test_nodes_asking_for_different_resources_never_share_a_function():
    plan = Pipeline(nodes=PIPELINE).plan(inputs={"x": [1], "model": Model()}, map_over="x").item
    groups = plan_groups(plan, {"model": Model()})
    assert [str(g) for g in groups] == [
        "sync: prepare",
        "sync: score [cpus=1, replicas=2]",  # the model's request is the node's
        "sync: adjust+finish [cpus=1]",  # equal requests fuse, unequal ones do not
    ]


def test_explain_shows_what_each_function_asks_for(capsys):
    pipeline = Pipeline(nodes=PIPELINE, engine=DaftEngine(collect=False))
    frame = pipeline.map(inputs={"x": [1, 2], "model": Model()}, map_over="x")
    frame.explain()
    shown = capsys.readouterr().out
    assert "score[cpus=1, replicas=2]" in shown and "adjust+finish[cpus=1]" in shown
    assert "prepare[" not in shown


# -- local engines -----------------------------------------------------------------------------

running = {"now": 0, "peak": 0}
_lock = threading.Lock()


@node(output_name="y", gpus=1)
def on_gpu(x: int) -> int:
    with _lock:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
    time.sleep(0.02)
    with _lock:
        running["now"] -= 1
    return x * 2


@pytest.mark.parametrize("executor", ["threaded", "async"])
def test_a_gpu_node_runs_at_most_one_call_per_visible_gpu(monkeypatch, executor):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    running.update(now=0, peak=0)
    engine = HypernodesEngine(map_executor=executor, node_executor="threaded", max_workers=8)
    results = Pipeline(nodes=[on_gpu], engine=engine).map(
        inputs={"x": list(range(24))}, map_over="x"
    )
    assert [r["y"] for r in results] == [2 * x for x in range(24)]
    assert running["peak"] == 2


def test_a_gpu_node_on_a_machine_without_one_fails_before_any_call(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    running.update(now=0, peak=0)
    for engine in (HypernodesEngine(), DaftEngine()):
        with pytest.raises(ResourceError) as error:
            Pipeline(nodes=[on_gpu], engine=engine).map(inputs={"x": [1, 2]}, map_over="x")
        assert "node 'on_gpu' asked for gpus=1" in str(error.value)
        assert "this machine cannot hold: it has {cpus=" in str(error.value)
        assert "gpus=0" in str(error.value)
    assert running["peak"] == 0  # nothing ran


def test_custom_ray_resources_do_not_bound_local_runs():
    @node(output_name="y", resources={"model_host": 1})
    def hosted(x: int) -> int:
        return x + 1

    for engine in (HypernodesEngine(), DaftEngine()):
        results = Pipeline(nodes=[hosted], engine=engine).map(inputs={"x": [1, 2]}, map_over="x")
        assert [r["y"] for r in results] == [2, 3]


def test_replica_slots_give_each_concurrent_batch_its_own_instance(tmp_path):
    model, slots = Model(str(tmp_path)), ReplicaSlots(2)
    both_in, seen = threading.Barrier(2), []

    def batch() -> None:
        with slots.held():
            model.predict(1)
            seen.append(id(model._made[slots_slot()]))
            both_in.wait(timeout=10)

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2 and len(list(tmp_path.iterdir())) == 2
    with slots.held():  # a later batch reuses a replica
        model.predict(2)
    assert len(list(tmp_path.iterdir())) == 2


def slots_slot() -> int:
    from hypernodes_daft.stateful import _replica

    return _replica.get()


def test_replicas_on_the_native_runner_build_at_most_that_many_models(tmp_path):
    pipeline = Pipeline(nodes=PIPELINE[:2], engine=DaftEngine())
    xs = list(range(2000))
    results = pipeline.map(inputs={"x": xs, "model": Model(str(tmp_path))}, map_over="x")
    assert [r["b"] for r in results] == [(x + 1) * 3 for x in xs]
    assert 1 <= len(list(tmp_path.iterdir())) <= 2


def test_a_process_pool_runs_at_most_replicas_workers_for_a_replicated_model(tmp_path):
    engine = HypernodesEngine(map_executor="parallel", max_workers=4)
    try:
        results = Pipeline(nodes=PIPELINE[:2], engine=engine).map(
            inputs={"x": list(range(200)), "model": Model(str(tmp_path))}, map_over="x"
        )
    finally:
        engine.shutdown()
    assert [r["b"] for r in results] == [(x + 1) * 3 for x in range(200)]
    pids = {p.name.split("-")[0] for p in tmp_path.iterdir()}
    assert 1 <= len(pids) <= 2 and len(list(tmp_path.iterdir())) == len(pids)


def test_an_async_node_with_a_replicated_model_holds_a_replica_per_batch(tmp_path):
    @node(output_name="b")
    async def ascore(a: int, model: Model) -> int:
        await asyncio.sleep(0.001)
        return model.predict(a)

    xs = list(range(600))
    results = Pipeline(nodes=[prepare, ascore], engine=DaftEngine()).map(
        inputs={"x": xs, "model": Model(str(tmp_path))}, map_over="x"
    )
    assert [r["b"] for r in results] == [(x + 1) * 3 for x in xs]
    assert 1 <= len(list(tmp_path.iterdir())) <= 2


def test_replicas_beyond_the_cores_are_fine_on_the_native_runner():
    @stateful(replicas=8)
    class Client:
        def ask(self, x: int) -> int:
            return x + 100

    @node(output_name="y")
    def ask(x: int, client: Client) -> int:
        return client.ask(x)

    results = Pipeline(nodes=[ask], engine=DaftEngine()).map(
        inputs={"x": [1, 2, 3], "client": Client()}, map_over="x"
    )
    assert [r["y"] for r in results] == [101, 102, 103]
