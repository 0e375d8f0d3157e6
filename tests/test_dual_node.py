"""DualNode: which of its two functions runs where, its 0.4 attributes, its errors; the
results on every engine are in the scenario matrix (tests/scenarios.py)."""

from __future__ import annotations

import hypernodes as ref
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hypernodes_daft import (
    DaftEngine,
    DualNode,
    HypernodesEngine,
    MemoryCache,
    Pipeline,
    node,
    stateful,
)


class Recorder:
    """Both functions of a DualNode, noting each call and what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def triple_one(self, x: int, offset: int = 0) -> int:
        self.calls.append(("singular", {"x": x, "offset": offset}))
        return x * 3 + offset

    def triple_batch(self, x, offset=0):
        self.calls.append(("batch", {"x": x, "offset": offset}))
        return pc.add(pc.multiply(x, 3), offset)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def dual(recorder: Recorder, **kwargs) -> DualNode:
    return DualNode("y", recorder.triple_one, recorder.triple_batch, **kwargs)


def test_the_attributes_of_0_4(recorder):
    made = dual(recorder)
    assert made.name == "triple"  # `_one` dropped
    assert made.output_name == "y" and made.root_args == ("x", "offset")
    assert made.singular == recorder.triple_one and made.func == recorder.triple_one
    assert made.batch == recorder.triple_batch and made.cache is True
    assert made.is_dual_node and made.is_stateful and made.instance is recorder
    assert repr(made) == "DualNode(name=triple, output=y, stateful=True)"

    def score_single(x):
        return x

    plain = DualNode("s", score_single, lambda x: x, cache=False)
    assert plain.name == "score" and not plain.is_stateful and plain.instance is None
    assert plain.cache is False


def test_the_code_hash_covers_both_functions():
    def one(x):
        return x + 1

    def many(x):
        return pc.add(x, 1)

    def many_edited(x):
        return pc.add(x, 2)

    assert DualNode("y", one, many).code_hash != DualNode("y", one, many_edited).code_hash
    assert DualNode("y", one, many).code_hash == DualNode("y", one, many).code_hash


def test_run_and_maps_with_other_nodes_call_singular_per_item(recorder):
    @node(output_name="z")
    def negate(y: int) -> int:
        return -y

    pipeline = Pipeline(nodes=[dual(recorder), negate])
    assert pipeline.run(inputs={"x": 2}) == {"y": 6, "z": -6}
    assert pipeline.map(inputs={"x": [1, 2]}, map_over="x") == [
        {"y": 3, "z": -3},
        {"y": 6, "z": -6},
    ]
    assert recorder.kinds() == ["singular"] * 3


def test_a_map_of_one_dual_node_calls_batch_once_with_arrays(recorder):
    """0.4's fast path: mapped and constant inputs alike arrive as one Array each."""
    pipeline = Pipeline(nodes=[dual(recorder)])
    assert pipeline.map(inputs={"x": [1, 2, 3], "offset": 10}, map_over="x") == [
        {"y": 13},
        {"y": 16},
        {"y": 19},
    ]
    assert recorder.kinds() == ["batch"]
    given = recorder.calls[0][1]
    assert given["x"] == pa.array([1, 2, 3]) and given["offset"] == pa.array([10, 10, 10])


def test_with_a_cache_each_item_goes_through_singular_and_is_cached(recorder):
    pipeline = Pipeline(nodes=[dual(recorder)], engine=HypernodesEngine(cache=MemoryCache()))
    first = pipeline.map(inputs={"x": [1, 2]}, map_over="x")
    again = pipeline.map(inputs={"x": [1, 2]}, map_over="x")
    assert first == again == [{"y": 3}, {"y": 6}]
    assert recorder.kinds() == ["singular", "singular"]


def test_daft_calls_batch_per_batch_and_never_singular(recorder):
    @node(output_name="z")
    def negate(y: int) -> int:
        return -y

    pipeline = Pipeline(nodes=[dual(recorder), negate], engine=DaftEngine())
    result = pipeline.map(inputs={"x": list(range(50)), "offset": 1}, map_over="x")
    assert result == [{"y": 3 * x + 1, "z": -(3 * x + 1)} for x in range(50)]
    assert set(recorder.kinds()) == {"batch"}
    assert all(isinstance(given["x"], pa.Array) for _, given in recorder.calls)


@stateful
class Model:
    def __init__(self, weight: int):
        self.weight = weight

    def predict_one(self, x: int) -> int:
        return x * self.weight

    def predict_batch(self, x):
        return pc.multiply(x, self.weight)


def test_stateful_methods_and_a_stateful_input():
    model = Model(5)
    made = DualNode("y", model.predict_one, model.predict_batch)
    assert made.is_stateful and made.name == "predict"
    pipeline = Pipeline(nodes=[made])
    assert pipeline.map(inputs={"x": [1, 2]}, map_over="x") == [{"y": 5}, {"y": 10}]

    seen = []

    def apply_one(x: int, model: Model) -> int:
        return model.predict_one(x)

    def apply_batch(x, model):
        seen.append(model)  # a @stateful input stays the object, not an array
        return model.predict_batch(x)

    uses = Pipeline(nodes=[DualNode("y", apply_one, apply_batch)])
    assert uses.map(inputs={"x": [3], "model": model}, map_over="x") == [{"y": 15}]
    assert seen == [model]


def test_results_match_hypernodes_0_4():
    def build(lib):
        def score_one(x, k):
            return x * k

        def score_batch(x, k):
            return pc.multiply(x, k)

        @lib.node(output_name="label")
        def label_of(score):
            return f"#{score}"

        made = lib.DualNode(output_name="score", singular=score_one, batch=score_batch)
        return lib.Pipeline(nodes=[made]), lib.Pipeline(nodes=[made, label_of])

    for ours, theirs in zip(build(__import__("hypernodes_daft")), build(ref), strict=True):
        assert ours.run(inputs={"x": 3, "k": 2}) == theirs.run(inputs={"x": 3, "k": 2})
        inputs = {"x": [1, 2, 3], "k": 4}
        assert ours.map(inputs=inputs, map_over="x") == theirs.map(inputs=inputs, map_over="x")


def wrong_length(x):
    return pa.array([1])


def not_an_array(x):
    return 7


@pytest.mark.parametrize("engine", [HypernodesEngine, DaftEngine], ids=["local", "daft"])
def test_a_batch_of_the_wrong_length_names_the_node_and_both_lengths(engine):
    pipeline = Pipeline(nodes=[DualNode("y", lambda x: x, wrong_length)], engine=engine())
    with pytest.raises(RuntimeError) as raised:
        pipeline.map(inputs={"x": [1, 2, 3]}, map_over="x")
    assert isinstance(raised.value, ValueError)  # also what a batch=True node raises
    message = str(raised.value)
    assert "'<lambda>'" in message and "returned 1 values for 3 rows" in message


@pytest.mark.parametrize("engine", [HypernodesEngine, DaftEngine], ids=["local", "daft"])
def test_a_batch_returning_no_array_is_a_type_error_naming_the_node(engine):
    def keep_one(x):
        return x

    pipeline = Pipeline(nodes=[DualNode("y", keep_one, not_an_array)], engine=engine())
    with pytest.raises(TypeError, match="batch node 'keep' returned int"):
        pipeline.map(inputs={"x": [1, 2]}, map_over="x")
