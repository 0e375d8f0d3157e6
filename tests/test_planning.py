"""Planning errors: raised before any node runs, naming what is wrong."""

from contextlib import contextmanager

import pytest

from hypernodes_daft import (
    CycleError,
    DependencyError,
    HyperNodesError,
    Pipeline,
    PlanningError,
    node,
)

calls: list[str] = []


@node(output_name="a")
def first(x: int, y: int) -> int:
    calls.append("first")
    return x + y


@node(output_name="b")
def second(a: int, z: int) -> int:
    calls.append("second")
    return a * z


@node(output_name="c")
def third(a: int, z: int = 2) -> int:
    calls.append("third")
    return a - z


@pytest.fixture
def pipeline():
    calls.clear()
    yield Pipeline(nodes=[first, second, third], name="p")
    assert calls == [], "a planning error must be raised before any node runs"


@contextmanager
def raises(error_type, *fragments):
    """pytest.raises that also checks the message names each fragment."""
    with pytest.raises(error_type) as info:
        yield info
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_missing_input_names_the_input_and_every_node_needing_it(pipeline):
    with raises(DependencyError, "'x'", "'z'", "first", "second") as info:
        pipeline.run(inputs={"y": 1})
    assert isinstance(info.value, ValueError)
    assert "third" not in str(info.value).split("'z'")[1]  # third has a default for z


def test_missing_input_only_counts_nodes_needed_for_the_outputs(pipeline):
    assert pipeline.run(inputs={"x": 1, "y": 2}, output_name="c") == {"c": 1}
    calls.clear()


def test_unknown_output_name(pipeline):
    with raises(PlanningError, "['nope']", "Available outputs", "'a', 'b', 'c'"):
        pipeline.run(inputs={"x": 1, "y": 2, "z": 3}, output_name=["a", "nope"])


def test_unknown_map_over_name(pipeline):
    with raises(PlanningError, "['w']", "inputs"):
        pipeline.map(inputs={"x": [1], "y": 1, "z": 1, "w": [1]}, map_over="w")


def test_map_over_missing_from_inputs(pipeline):
    with raises(PlanningError, "'x'", "not found in inputs"):
        pipeline.map(inputs={"y": 1, "z": 1}, map_over="x")


def test_map_over_value_not_a_list(pipeline):
    with raises(PlanningError, "'x'", "not a list", "int"):
        pipeline.map(inputs={"x": 3, "y": 1, "z": 1}, map_over="x")


def test_zip_lengths_differ_names_both_lengths(pipeline):
    with raises(PlanningError, "same length", "'x': 3", "'y': 2"):
        pipeline.map(inputs={"x": [1, 2, 3], "y": [1, 2], "z": 1}, map_over=["x", "y"])


def test_unknown_map_mode(pipeline):
    with raises(PlanningError, "'cartesian'"):
        pipeline.map(inputs={"x": [1], "y": 1, "z": 1}, map_over="x", map_mode="cartesian")


def test_map_over_none_is_a_type_error(pipeline):
    with pytest.raises(TypeError, match="map_over"):
        pipeline.map(inputs={"x": [1], "y": 1, "z": 1})


def test_inputs_must_be_a_dict(pipeline):
    with pytest.raises(TypeError, match="inputs must be a dict"):
        pipeline.run(inputs=[("x", 1)])


def test_two_nodes_producing_one_output():
    @node(output_name="a")
    def other(x: int) -> int:
        return x

    with raises(DependencyError, "'a'", "first", "other"):
        Pipeline(nodes=[first, other])


def test_cycle_names_the_nodes():
    @node(output_name="x")
    def back(b: int) -> int:
        return b

    with raises(CycleError, "Cycle detected", "first", "second", "back") as info:
        Pipeline(nodes=[first, second, back])
    assert isinstance(info.value, HyperNodesError)


def test_plain_function_in_nodes_is_explained():
    def plain(x):
        return x

    with pytest.raises(TypeError, match=r"nodes\[1\].*plain.*@node"):
        Pipeline(nodes=[first, plain])


def test_nested_mapping_errors_name_the_bad_name():
    inner = Pipeline(nodes=[first], name="inner")
    with raises(PlanningError, "'q'", "not an input", "inner"):
        inner.as_node(input_mapping={"outer_x": "q"})
    with raises(PlanningError, "'zz'", "does not produce"):
        inner.as_node(output_mapping={"zz": "out"})
    with raises(PlanningError, "'x'", "not an input"):
        inner.as_node(input_mapping={"xs": "x"}, map_over="x")


def test_nested_map_over_a_non_list_names_the_nested_node():
    calls.clear()
    inner = Pipeline(nodes=[first], name="inner")
    outer = Pipeline(nodes=[inner.as_node(map_over="x", name="per_x")])
    with raises(PlanningError, "per_x", "'x'", "not a list"):
        outer.run(inputs={"x": 5, "y": 1})
    assert calls == []


def test_node_signature_errors():
    with pytest.raises(TypeError, match=r"\*args"):

        @node
        def star(*args):
            return args

    with pytest.raises(TypeError, match="output_name"):

        @node(output_name=("a", 3))
        def bad_names(x):
            return x

    with pytest.raises(ValueError, match="repeats"):

        @node(output_name=("a", "a"))
        def twice(x):
            return x, x


def test_plan_is_printable_data(pipeline):
    plan = pipeline.plan(inputs={"x": 1, "y": 2}, output_name="c")
    assert [s.label for s in plan.steps] == ["first", "third"]
    assert plan.inputs == ("x", "y")
    assert plan.outputs == ("c",)
    text = str(plan)
    assert "first(x, y) -> [a]" in text and "third(a) -> [c]" in text
    map_plan = pipeline.plan(
        inputs={"x": [1, 2], "y": [3, 4], "z": 1}, map_over=["x", "y"], map_mode="product"
    )
    assert map_plan.n_items == 4 and "4 items, product over [x, y]" in str(map_plan)


def test_inputs_of_the_wrong_kind_are_named_by_their_own_type():
    with pytest.raises(TypeError, match="got list"):
        Pipeline(nodes=[_double_node()]).map([1, 2], "x")


def test_map_over_naming_no_input_is_reported_before_dataset_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hypernodes_daft import read_parquet

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "a.parquet")
    dataset = read_parquet(str(tmp_path / "a.parquet"))
    with pytest.raises(PlanningError, match=r"map_over names \['zz'\], which no node takes"):
        Pipeline(nodes=[_double_node()]).map(dataset, ["zz"])


def test_disk_cache_on_a_file_is_a_clear_error(tmp_path):
    from hypernodes_daft import DiskCache

    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        DiskCache(tmp_path / "file")


def _double_node():
    @node(output_name="y")
    def double(x: int) -> int:
        return 2 * x

    return double
