"""The HyperNodes 0.4 public API that user code touches (API doc, section 12), example by example.

Tests taking `lib` run against hypernodes_daft *and* the 0.4 reference, so each one is known to
encode real 0.4 behaviour. Tests of our documented deliberate differences run against
hypernodes_daft only (and say what 0.4 does instead).
"""

from __future__ import annotations

import importlib

import hypernodes as ref
import pytest

import hypernodes_daft as ours

both_libs = pytest.mark.parametrize("lib", [ours, ref], ids=["hypernodes_daft", "hypernodes-0.4"])


# ---------------------------------------------------------------------------------------------
# Small pipelines shared by the tests


def add_pipeline(lib, **kwargs):
    """total = x + y; doubled = 2 * total."""

    @lib.node(output_name="total")
    def add(x, y):
        return x + y

    @lib.node(output_name="doubled")
    def double(total):
        return 2 * total

    return lib.Pipeline(nodes=[add, double], **kwargs)


def inner_pipeline(lib):
    """Inner names: inputs `a`, `k`; outputs `s = a + k`, `p = a * k`."""

    @lib.node(output_name="s")
    def add_k(a, k):
        return a + k

    @lib.node(output_name="p")
    def mul_k(a, k):
        return a * k

    return lib.Pipeline(nodes=[add_k, mul_k], name="inner")


# ---------------------------------------------------------------------------------------------
# Import surface


@both_libs
@pytest.mark.parametrize(
    "module, names",
    [
        ("node", ["Node", "node"]),
        ("pipeline", ["Pipeline"]),
        ("pipeline_node", ["PipelineNode"]),
        ("exceptions", ["HyperNodesError", "CycleError", "DependencyError", "ExecutionError"]),
        ("engines", ["SeqEngine"]),
        ("dual_node", ["DualNode"]),
    ],
)
def test_submodule_import_paths(lib, module, names):
    submodule = importlib.import_module(f"{lib.__name__}.{module}")
    for name in names:
        obj = getattr(submodule, name)
        top_level = getattr(lib, name, None)
        if top_level is not None:  # 0.4 does not export PipelineNode at top level
            assert obj is top_level


@both_libs
def test_top_level_names(lib):
    for name in ["node", "Node", "Pipeline", "SeqEngine", "HyperNode", "DualNode"]:
        assert hasattr(lib, name), name
    for name in ["CycleError", "DependencyError", "ExecutionError"]:
        assert issubclass(getattr(lib, name), lib.HyperNodesError)


def test_seq_engine_importable_from_top_level_and_engines():
    from hypernodes_daft import SeqEngine
    from hypernodes_daft.engines import SeqEngine as EnginesSeqEngine

    assert SeqEngine is EnginesSeqEngine
    pipeline = add_pipeline(ours, engine=SeqEngine())
    assert pipeline.run(inputs={"x": 1, "y": 2}) == {"total": 3, "doubled": 6}


# ---------------------------------------------------------------------------------------------
# @node and Node


@both_libs
def test_bare_decorator_uses_function_name(lib):
    @lib.node
    def double(x):
        return 2 * x

    assert isinstance(double, lib.Node)
    assert double.output_name == "double"
    assert lib.Pipeline(nodes=[double]).run(inputs={"x": 4}) == {"double": 8}


@both_libs
def test_empty_call_decorator_uses_function_name(lib):
    @lib.node()
    def triple(x):
        return 3 * x

    assert isinstance(triple, lib.Node)
    assert triple.output_name == "triple"
    assert lib.Pipeline(nodes=[triple]).run(inputs={"x": 2}) == {"triple": 6}


@both_libs
def test_output_name_and_tuple_outputs(lib):
    @lib.node(output_name=("q", "r"))
    def divmod_node(n, d):
        return divmod(n, d)

    @lib.node(output_name="check")
    def recombine(q, r, d):
        return q * d + r

    assert divmod_node.output_name == ("q", "r")
    result = lib.Pipeline(nodes=[divmod_node, recombine]).run(inputs={"n": 17, "d": 5})
    assert result == {"q": 3, "r": 2, "check": 17}


@both_libs
def test_node_is_still_callable(lib):
    @lib.node(output_name="y")
    def scale(x, factor):
        return x * factor

    assert scale(3, 4) == 12
    assert scale(x=2, factor=5) == 10


@both_libs
def test_node_attributes(lib):
    def original(a, b, c=3):
        """Docstring."""
        return a + b + c

    n = lib.node(output_name="out", cache=False)(original)
    assert n.func is original
    assert n.name == "original"
    assert n.cache is False
    assert n.output_name == "out"
    assert n.root_args == ("a", "b", "c")  # defaults included, signature order
    assert n.is_async is False
    assert n.__name__ == "original"
    assert n.__doc__ == "Docstring."
    assert n.__wrapped__ is original
    assert n.__module__ == original.__module__
    assert n.__qualname__ == original.__qualname__
    assert lib.node(output_name="out")(original).cache is True


@both_libs
def test_node_class_form(lib):
    def inc(x):
        return x + 1

    n = lib.Node(inc, output_name="y")
    assert (n.name, n.output_name, n.cache) == ("inc", "y", True)
    assert lib.Node(inc, "y", cache=False).cache is False
    assert lib.Pipeline(nodes=[n]).run(inputs={"x": 1}) == {"y": 2}


@both_libs
def test_is_async(lib):
    @lib.node(output_name="y")
    async def fetch(x):
        return x + 1

    assert fetch.is_async is True
    assert lib.Pipeline(nodes=[fetch]).run(inputs={"x": 1}) == {"y": 2}


@both_libs
def test_code_hash(lib):
    def f(x):
        return x + 1

    def g(x):
        return x + 2

    nf = lib.node(output_name="y")(f)
    assert isinstance(nf.code_hash, str) and nf.code_hash
    assert nf.code_hash == nf.code_hash == lib.node(output_name="y")(f).code_hash
    assert nf.code_hash != lib.node(output_name="y")(g).code_hash


@both_libs
def test_node_repr_and_equality(lib):
    def double(x):
        return 2 * x

    def other_double(x):
        return x + x

    other_double.__name__ = "double"  # different function, same name

    a = lib.node(output_name="doubled")(double)
    b = lib.node(output_name="doubled")(other_double)
    assert repr(a) == "Node(double, output=doubled)"
    assert repr(lib.node(output_name=("q", "r"))(double)) == "Node(double, output=('q', 'r'))"
    assert a == b and hash(a) == hash(b)
    assert a != lib.node(output_name="other")(double)
    assert a != "double"


# ---------------------------------------------------------------------------------------------
# Pipeline: graph, run


@both_libs
def test_pipeline_keeps_the_nodes_list(lib):
    pipeline = add_pipeline(lib)
    nodes = pipeline.nodes
    assert lib.Pipeline(nodes=nodes).nodes is nodes
    assert [n.name for n in nodes] == ["add", "double"]


@both_libs
def test_graph_root_args_and_outputs_are_sorted_lists(lib):
    @lib.node(output_name="zeta")
    def first(b, a):
        return a + b

    @lib.node(output_name="alpha")
    def second(zeta, c):
        return zeta * c

    pipeline = lib.Pipeline(nodes=[second, first]).bind(c=2)
    assert pipeline.graph.root_args == ["a", "b", "c"]  # bound ones included
    assert pipeline.graph.available_output_names == ["alpha", "zeta"]
    assert pipeline.unfulfilled_args == ("a", "b")


@both_libs
def test_wiring_by_name_and_missing_producer_is_a_root_input(lib):
    pipeline = add_pipeline(lib)
    assert pipeline.graph.root_args == ["x", "y"]
    assert pipeline.run(inputs={"x": 2, "y": 3}) == {"total": 5, "doubled": 10}


@both_libs
def test_duplicate_output_raises_dependency_error_at_construction(lib):
    @lib.node(output_name="y")
    def f(x):
        return x

    @lib.node(output_name="y")
    def g(x):
        return -x

    with pytest.raises(lib.DependencyError):
        lib.Pipeline(nodes=[f, g])


@both_libs
def test_cycle_raises_cycle_error_at_construction(lib):
    @lib.node(output_name="a")
    def f(b):
        return b

    @lib.node(output_name="b")
    def g(a):
        return a

    with pytest.raises(lib.CycleError):
        lib.Pipeline(nodes=[f, g])


@both_libs
def test_output_name_prunes_work(lib):
    calls = []

    @lib.node(output_name="cheap")
    def make_cheap(x):
        calls.append("cheap")
        return x + 1

    @lib.node(output_name="expensive")
    def make_expensive(x):
        calls.append("expensive")
        return x * 100

    pipeline = lib.Pipeline(nodes=[make_cheap, make_expensive])
    assert pipeline.run(inputs={"x": 1}, output_name="cheap") == {"cheap": 2}
    assert calls == ["cheap"]
    assert pipeline.run(inputs={"x": 1}, output_name=["expensive", "cheap"]) == {
        "expensive": 100,
        "cheap": 2,
    }


@both_libs
def test_unknown_output_name_raises_value_error(lib):
    with pytest.raises(ValueError, match="nope"):
        add_pipeline(lib).run(inputs={"x": 1, "y": 2}, output_name="nope")


@both_libs
def test_missing_input_raises_value_error_before_running(lib):
    calls = []

    @lib.node(output_name="y")
    def f(a, b):
        calls.append(1)
        return a + b

    with pytest.raises(ValueError, match="b"):
        lib.Pipeline(nodes=[f]).run(inputs={"a": 1})
    assert calls == []


def test_missing_input_is_a_dependency_error():
    with pytest.raises(ours.DependencyError) as info:
        add_pipeline(ours).run(inputs={"x": 1})
    assert isinstance(info.value, ValueError)
    assert "y" in str(info.value)


@both_libs
def test_extra_input_keys_are_ignored(lib):
    result = add_pipeline(lib).run(inputs={"x": 1, "y": 2, "unused": object()})
    assert result == {"total": 3, "doubled": 6}


@both_libs
def test_defaults_do_not_matter_when_every_input_is_given(lib):
    @lib.node(output_name="y")
    def scale(x, factor=10):
        return x * factor

    assert lib.Pipeline(nodes=[scale]).run(inputs={"x": 2, "factor": 3}) == {"y": 6}


def test_defaults_are_used_when_input_not_given():
    """Deliberate difference: 0.4 raises 'Missing required input(s)'."""

    def build(lib):
        @lib.node(output_name="y")
        def scale(x, factor=10):
            return x * factor

        return lib.Pipeline(nodes=[scale])

    with pytest.raises(ValueError):
        build(ref).run(inputs={"x": 2})
    pipeline = build(ours)
    assert pipeline.run(inputs={"x": 2}) == {"y": 20}
    assert pipeline.graph.root_args == ["factor", "x"]  # still listed as a root arg
    assert pipeline.unfulfilled_args == ("x",)
    assert pipeline.run(inputs={"x": 2, "factor": 3}) == {"y": 6}


# ---------------------------------------------------------------------------------------------
# Pipeline: bind, unbind, with_engine, with_name, repr, equality


@both_libs
def test_fluent_methods_mutate_and_return_self(lib):
    pipeline = add_pipeline(lib)
    engine = lib.SeqEngine()
    assert pipeline.bind(x=1) is pipeline
    assert pipeline.bind(y=2, x=5) is pipeline
    assert pipeline.bound_inputs == {"x": 5, "y": 2}  # a later bind wins
    assert pipeline.with_name("adder") is pipeline
    assert pipeline.name == "adder"
    assert pipeline.with_engine(engine) is pipeline
    assert pipeline.engine is engine
    assert pipeline.run() == {"total": 7, "doubled": 14}
    assert pipeline.unbind("x", "not_bound") is pipeline
    assert pipeline.bound_inputs == {"y": 2}
    assert pipeline.unbind() is pipeline
    assert pipeline.bound_inputs == {}


@both_libs
def test_bound_inputs_returns_a_copy(lib):
    pipeline = add_pipeline(lib).bind(x=1)
    copy = pipeline.bound_inputs
    copy["x"] = 100
    copy["y"] = 100
    assert pipeline.bound_inputs == {"x": 1}
    assert pipeline.unfulfilled_args == ("y",)


@both_libs
def test_call_time_inputs_override_bound_ones(lib):
    pipeline = add_pipeline(lib).bind(x=1, y=2)
    assert pipeline.run(inputs={"y": 10}) == {"total": 11, "doubled": 22}
    assert pipeline.bound_inputs == {"x": 1, "y": 2}
    assert pipeline.map(inputs={"x": [0, 5]}, map_over="x") == [
        {"total": 2, "doubled": 4},
        {"total": 7, "doubled": 14},
    ]


@both_libs
def test_unfulfilled_args(lib):
    pipeline = add_pipeline(lib)
    assert pipeline.unfulfilled_args == ("x", "y")
    pipeline.bind(y=1)
    assert pipeline.unfulfilled_args == ("x",)
    pipeline.bind(x=1)
    assert pipeline.unfulfilled_args == ()


@both_libs
@pytest.mark.parametrize(
    "name, bind, expected",
    [
        (None, {}, "Pipeline(nodes=2, needs=[x, y])"),
        ("adder", {"y": "a"}, "Pipeline(name='adder', nodes=2, bound=[y='a'], needs=[x])"),
        (None, {"x": 10, "y": 2}, "Pipeline(nodes=2, bound=[x=10, y=2])"),
    ],
)
def test_pipeline_repr(lib, name, bind, expected):
    pipeline = add_pipeline(lib, name=name).bind(**bind)
    assert repr(pipeline) == expected


@both_libs
def test_pipelines_compare_by_identity(lib):
    first, second = add_pipeline(lib), add_pipeline(lib)
    assert first == first
    assert first != second
    assert len({first, second}) == 2


# ---------------------------------------------------------------------------------------------
# Pipeline.map


@both_libs
def test_map_zip_is_default_and_keeps_order(lib):
    results = add_pipeline(lib).map(inputs={"x": [1, 2, 3], "y": [10, 20, 30]}, map_over=["x", "y"])
    assert [r["total"] for r in results] == [11, 22, 33]


@both_libs
def test_map_over_str_and_broadcast_inputs(lib):
    @lib.node(output_name="n")
    def count(x, items):
        return x + len(items)

    results = lib.Pipeline(nodes=[count]).map(
        inputs={"x": [1, 2], "items": [7, 7, 7]}, map_over="x"
    )
    assert results == [{"n": 4}, {"n": 5}]  # the unmapped list is passed whole


@both_libs
def test_map_product(lib):
    results = add_pipeline(lib).map(
        inputs={"x": [1, 2], "y": [10, 20, 30]}, map_over=["x", "y"], map_mode="product"
    )
    assert [r["total"] for r in results] == [11, 21, 31, 12, 22, 32]


@both_libs
def test_map_output_name(lib):
    results = add_pipeline(lib).map(
        inputs={"x": [1, 2], "y": 5}, map_over="x", output_name="doubled"
    )
    assert results == [{"doubled": 12}, {"doubled": 14}]


@both_libs
def test_map_empty_zip_gives_empty_list(lib):
    assert add_pipeline(lib).map(inputs={"x": [], "y": []}, map_over=["x", "y"]) == []


@both_libs
@pytest.mark.parametrize(
    "inputs, map_over",
    [
        ({"x": [1, 2], "y": [1]}, ["x", "y"]),  # zip needs equal lengths
        ({"x": (1, 2), "y": 1}, ["x"]),  # mapped values must be lists
        ({"x": [1, 2], "y": 1}, ["x", "z"]),  # mapped name missing from the inputs
    ],
    ids=["unequal-lengths", "tuple-not-list", "unknown-map-over"],
)
def test_map_validation_errors_are_value_errors(lib, inputs, map_over):
    with pytest.raises(ValueError) as info:
        add_pipeline(lib).map(inputs=inputs, map_over=map_over)
    if lib is ours:
        assert isinstance(info.value, ours.HyperNodesError)


@both_libs
def test_map_over_none_is_a_type_error(lib):
    with pytest.raises(TypeError):
        add_pipeline(lib).map(inputs={"x": [1], "y": [2]}, map_over=None)


def test_unknown_map_mode_is_an_error():
    """Deliberate difference: 0.4 silently treats any other mode as 'product'."""
    inputs = {"x": [1, 2], "y": [10, 20]}
    reference = add_pipeline(ref).map(inputs=inputs, map_over=["x", "y"], map_mode="zipp")
    assert len(reference) == 4
    with pytest.raises(ValueError) as info:
        add_pipeline(ours).map(inputs=inputs, map_over=["x", "y"], map_mode="zipp")
    assert isinstance(info.value, ours.HyperNodesError)
    assert "zipp" in str(info.value)


# ---------------------------------------------------------------------------------------------
# PipelineNode / as_node


@both_libs
def test_pipeline_node_attributes(lib):
    inner = inner_pipeline(lib)
    pn = inner.as_node(
        input_mapping={"value": "a"}, output_mapping={"s": "total"}, map_over="value"
    )
    assert isinstance(pn, importlib.import_module(f"{lib.__name__}.pipeline_node").PipelineNode)
    assert pn.pipeline is inner
    assert pn.input_mapping == {"value": "a"}
    assert pn.output_mapping == {"s": "total"}
    assert pn.map_over == ["value"]
    assert pn.map_mode == "zip"
    assert pn.cache is True
    assert pn.name == "inner"  # falls back to the pipeline's name
    assert isinstance(pn.code_hash, str) and pn.code_hash

    plain = inner.as_node(name="renamed", cache=False, map_mode="product")
    assert (plain.input_mapping, plain.output_mapping, plain.map_over) == ({}, {}, None)
    assert (plain.name, plain.cache, plain.map_mode) == ("renamed", False, "product")
    assert inner.with_name(None).as_node().name is None


@both_libs
def test_pipeline_node_output_name_str_or_tuple(lib):
    inner = inner_pipeline(lib)
    assert inner.as_node().output_name == ("p", "s")
    assert inner.as_node(output_mapping={"s": "total"}).output_name == "total"
    both = inner.as_node(output_mapping={"s": "total", "p": "product"})
    assert set(both.output_name) == {"total", "product"}
    assert isinstance(both.output_name, tuple)


@both_libs
def test_pipeline_node_root_args_are_outer_names(lib):
    inner = inner_pipeline(lib)
    pn = inner.as_node(input_mapping={"value": "a"})
    assert pn.root_args == pn.unfulfilled_args == ("value", "k")
    inner.bind(k=3)  # computed live
    assert pn.root_args == pn.unfulfilled_args == ("value",)
    assert pn.bound_inputs == {"k": 3}
    copy = pn.bound_inputs
    copy["k"] = 99
    assert inner.bound_inputs == {"k": 3}


@both_libs
def test_pipeline_node_map_over_is_appended_when_missing(lib):
    inner = inner_pipeline(lib).bind(a=1)
    pn = inner.as_node(input_mapping={"value": "a"}, map_over="value")
    assert pn.root_args == ("k", "value")


@both_libs
def test_pipeline_node_is_callable(lib):
    inner = inner_pipeline(lib)
    pn = inner.as_node(input_mapping={"value": "a"}, output_mapping={"s": "total"})
    assert pn(value=2, k=5) == {"total": 7}
    mapped = inner.as_node(input_mapping={"values": "a"}, map_over="values")
    assert mapped(values=[1, 2], k=10) == {"s": [11, 12], "p": [10, 20]}


@both_libs
def test_pipeline_node_repr(lib):
    inner = inner_pipeline(lib)
    assert repr(inner.as_node()) == "PipelineNode(inner, needs=[a, k])"
    inner.bind(k=1)
    assert repr(inner.as_node()) == "PipelineNode(inner, bound=[k], needs=[a])"
    inner.bind(a=1).with_name(None)
    assert repr(inner.as_node()) == "PipelineNode(unnamed, bound=[k, a])"


@both_libs
def test_pipeline_node_repr_without_bound_or_needs(lib):
    @lib.node(output_name="c")
    def const():
        return 1

    inner = lib.Pipeline(nodes=[const])
    assert repr(inner.as_node()) == "PipelineNode(Pipeline(nodes=1))"


@both_libs
def test_pipeline_nodes_compare_by_identity(lib):
    inner = inner_pipeline(lib)
    first, second = inner.as_node(), inner.as_node()
    assert first == first
    assert first != second


@both_libs
def test_as_node_input_and_output_mapping(lib):
    @lib.node(output_name="value")
    def make_value(seed):
        return seed + 1

    @lib.node(output_name="report")
    def report(total):
        return f"total={total}"

    nested = inner_pipeline(lib).as_node(
        input_mapping={"value": "a", "factor": "k"}, output_mapping={"s": "total"}
    )
    outer = lib.Pipeline(nodes=[make_value, nested, report])
    assert outer.graph.root_args == ["factor", "seed"]
    assert outer.graph.available_output_names == ["report", "total", "value"]
    assert outer.run(inputs={"seed": 1, "factor": 10}) == {
        "value": 2,
        "total": 12,
        "report": "total=12",
    }  # `p` is not mapped, so not exposed


@both_libs
def test_inner_bindings_are_hidden_from_outer_requirements(lib):
    nested = inner_pipeline(lib).bind(k=100).as_node(output_mapping={"s": "s", "p": "p"})
    outer = lib.Pipeline(nodes=[nested])
    assert outer.graph.root_args == ["a"]
    assert outer.run(inputs={"a": 1, "k": -5}) == {"s": 101, "p": 100}


@both_libs
def test_as_node_map_over_returns_lists_in_order(lib):
    @lib.node(output_name="summary")
    def summarize(s, p):
        return list(zip(s, p, strict=True))

    nested = inner_pipeline(lib).as_node(input_mapping={"values": "a"}, map_over="values")
    outer = lib.Pipeline(nodes=[nested, summarize])
    result = outer.run(inputs={"values": [3, 1, 2], "k": 10})
    assert result == {
        "p": [30, 10, 20],
        "s": [13, 11, 12],
        "summary": [(13, 30), (11, 10), (12, 20)],
    }


@both_libs
def test_as_node_map_over_product(lib):
    nested = inner_pipeline(lib).as_node(
        input_mapping={"values": "a", "ks": "k"}, map_over=["values", "ks"], map_mode="product"
    )
    result = lib.Pipeline(nodes=[nested]).run(inputs={"values": [1, 2], "ks": [10, 20]})
    assert result == {"s": [11, 21, 12, 22], "p": [10, 20, 20, 40]}


def test_pipeline_directly_in_nodes_works_like_as_node():
    """Deliberate difference: 0.4 raises AttributeError ('no attribute output_name')."""

    @ref.node(output_name="z")
    def ref_use(s):
        return s

    with pytest.raises(AttributeError):
        ref.Pipeline(nodes=[inner_pipeline(ref), ref_use])

    @ours.node(output_name="z")
    def use(s):
        return -s

    outer = ours.Pipeline(nodes=[inner_pipeline(ours), use])
    as_node = ours.Pipeline(nodes=[inner_pipeline(ours).as_node(), use])
    # `p` is not consumed: left out, as 0.4 leaves out a nested pipeline's unused outputs
    assert outer.run(inputs={"a": 2, "k": 3}) == {"s": 5, "z": -5}
    assert as_node.run(inputs={"a": 2, "k": 3}) == {"s": 5, "z": -5}
    assert outer.run(inputs={"a": 2, "k": 3}, output_name=["p", "z"]) == {"p": 6, "z": -5}


@both_libs
def test_positional_signatures(lib):
    """Pipeline(nodes, engine, name), run(inputs, output_name), map(inputs, map_over, map_mode,
    output_name), as_node(input_mapping, output_mapping, map_over, map_mode, name, cache)."""
    pipeline = lib.Pipeline(add_pipeline(lib).nodes, lib.SeqEngine(), "adder")
    assert pipeline.name == "adder"
    assert pipeline.run({"x": 1, "y": 2}, "total") == {"total": 3}
    assert pipeline.map({"x": [1, 2], "y": [10, 20]}, ["x", "y"], "product", "total") == [
        {"total": 11},
        {"total": 21},
        {"total": 12},
        {"total": 22},
    ]
    pn = inner_pipeline(lib).as_node({"v": "a"}, {"s": "sum"}, "v", "zip", "named", False)
    assert (pn.map_over, pn.name, pn.cache) == (["v"], "named", False)
    assert lib.Pipeline([pn]).run({"v": [1, 2], "k": 3}) == {"sum": [4, 5]}
