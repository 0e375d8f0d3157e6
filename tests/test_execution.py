"""Running pipelines on the sequential engine: errors, async nodes, defaults, nesting."""

import asyncio
import pickle

import pytest

import hypernodes_daft._hashing as hashing
from hypernodes_daft import ExecutionError, HypernodesEngine, Pipeline, node


@node(output_name="ratio")
def invert(x: float) -> float:
    return 1 / x


@node(output_name="label")
def describe(ratio: float) -> str:
    return f"{ratio:.2f}"


def test_error_names_node_item_and_inputs_and_keeps_original_type():
    pipeline = Pipeline(nodes=[invert, describe])
    with pytest.raises(ZeroDivisionError) as info:  # old `except` clauses still match
        pipeline.map(inputs={"x": [1.0, 2.0, 0.0, 4.0]}, map_over="x")
    error = info.value
    assert isinstance(error, ExecutionError)
    assert error.node_name == "invert" and error.item_index == 2
    assert isinstance(error.__cause__, ZeroDivisionError)
    assert str(error).startswith("item 2 > node 'invert' raised ZeroDivisionError: ")
    assert str(error).endswith("division by zero (inputs: x=0.0)")


def test_error_inside_a_mapped_nested_pipeline_gives_the_full_path():
    inner = Pipeline(nodes=[invert], name="inner").as_node(map_over="x", name="per_x")
    outer = Pipeline(nodes=[inner])
    with pytest.raises(ExecutionError) as info:
        outer.map(inputs={"x": [[1.0], [2.0, 0.0]]}, map_over="x")
    assert info.value.path == [1, "per_x", 1, "invert"]
    assert info.value.item_index == 1


def test_execution_error_pickles_with_its_location():
    with pytest.raises(ExecutionError) as info:
        Pipeline(nodes=[invert]).run(inputs={"x": 0.0})
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, ZeroDivisionError) and isinstance(copy, ExecutionError)
    assert str(copy) == str(info.value)


def test_long_inputs_are_truncated_in_the_message():
    @node(output_name="n")
    def fail(items: list) -> int:
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError) as info:
        Pipeline(nodes=[fail]).run(inputs={"items": list(range(10_000))})
    assert len(str(info.value)) < 200 and "items=[0, 1, 2, 3, 4, ...]" in str(info.value)


def test_tuple_output_of_wrong_length_is_an_error_naming_the_node():
    @node(output_name=("a", "b"))
    def split(x: int):
        return x, x, x

    with pytest.raises(ExecutionError, match=r"node 'split'.*2 outputs.*returned 3 values"):
        Pipeline(nodes=[split]).run(inputs={"x": 1})


def test_defaults_are_used_and_overridden():
    @node(output_name="y")
    def scale(x: int, factor: int = 3) -> int:
        return x * factor

    pipeline = Pipeline(nodes=[scale])
    assert pipeline.run(inputs={"x": 2}) == {"y": 6}
    assert pipeline.run(inputs={"x": 2, "factor": 5}) == {"y": 10}
    assert pipeline.bind(factor=7).run(inputs={"x": 2}) == {"y": 14}
    assert pipeline.unfulfilled_args == ("x",)
    assert pipeline.graph.root_args == ["factor", "x"]


def test_bind_changes_are_seen_by_an_outer_pipeline_already_planned():
    @node(output_name="y")
    def add(x: int, k: int) -> int:
        return x + k

    inner = Pipeline(nodes=[add]).bind(k=1)
    outer = Pipeline(nodes=[inner])
    assert outer.run(inputs={"x": 1}) == {"y": 2}
    inner.bind(k=100)
    assert outer.run(inputs={"x": 1}) == {"y": 101}


def test_unconsumed_nested_outputs_are_left_out_as_in_0_4_but_can_be_asked_for():
    @node(output_name="a")
    def f(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def g(x: int) -> int:
        return x * 2

    @node(output_name="c")
    def h(a: int) -> int:
        return a * 10

    outer = Pipeline(nodes=[Pipeline(nodes=[f, g]).as_node(), h])
    assert outer.run(inputs={"x": 1}) == {"a": 2, "c": 20}
    assert outer.run(inputs={"x": 1}, output_name="b") == {"b": 2}
    assert outer.run(inputs={"x": 1}, output_name=["c", "b"]) == {"c": 20, "b": 2}


def test_output_selection_prunes_nodes_inside_nested_pipelines():
    ran = []

    @node(output_name="cheap")
    def cheap(x: int) -> int:
        ran.append("cheap")
        return x

    @node(output_name="costly")
    def costly(x: int) -> int:
        ran.append("costly")
        return x

    outer = Pipeline(nodes=[Pipeline(nodes=[cheap, costly])])
    assert outer.run(inputs={"x": 3}, output_name="cheap") == {"cheap": 3}
    assert ran == ["cheap"]


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_async_nodes_share_one_event_loop_across_items_and_calls():
    loops = []

    @node(output_name="y")
    async def record(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        return await _double(x)

    pipeline = Pipeline(nodes=[record])
    assert pipeline.map(inputs={"x": [1, 2, 3]}, map_over="x") == [{"y": 2}, {"y": 4}, {"y": 6}]
    assert pipeline.run(inputs={"x": 5}) == {"y": 10}
    assert len(loops) == 4 and len({id(loop) for loop in loops}) == 1


def test_run_works_inside_a_running_event_loop():  # as in a Jupyter cell
    @node(output_name="y")
    async def double(x: int) -> int:
        return await _double(x)

    async def cell():
        return Pipeline(nodes=[double]).run(inputs={"x": 21})

    assert asyncio.run(cell()) == {"y": 42}


def test_code_hash_is_computed_once_per_node_not_per_call(monkeypatch):
    counted = []
    original = hashing.hash_code
    monkeypatch.setattr(hashing, "hash_code", lambda f, *a: counted.append(f) or original(f))

    @node(output_name="y")
    def inc(x: int) -> int:
        return x + 1

    assert inc.code_hash == original(inc.func)
    Pipeline(nodes=[inc]).map(inputs={"x": list(range(50))}, map_over="x")
    assert counted == []


def test_code_hash_changes_with_source_and_closure():
    def make(k):
        @node(output_name="y")
        def add(x):
            return x + k

        return add

    assert make(1).code_hash == make(1).code_hash
    assert make(1).code_hash != make(2).code_hash


def test_node_is_still_a_plain_function():
    assert invert(4.0) == 0.25
    assert invert.__name__ == "invert" and invert.__wrapped__(2.0) == 0.5


def test_seq_engine_alias_and_unknown_executor():
    from hypernodes_daft import SeqEngine

    assert issubclass(SeqEngine, HypernodesEngine)
    assert repr(SeqEngine()).startswith("SeqEngine(node_executor='sequential'")
    with pytest.raises(ValueError, match="node_executor 'gpu'"):
        HypernodesEngine(node_executor="gpu")


def test_os_errors_are_wrapped_and_keep_their_attributes():
    """OSError and its subclasses have their own __new__: wrapping them must still work."""

    @node(output_name="y")
    def read(path: str) -> str:
        raise FileNotFoundError(2, "No such file", path)

    with pytest.raises(FileNotFoundError) as caught:
        Pipeline(nodes=[read]).run(inputs={"path": "missing.txt"})
    assert isinstance(caught.value, ExecutionError)
    assert caught.value.original.filename == "missing.txt" and caught.value.node_name == "read"
