"""DaftEngine runs plain sync node bodies as Daft expressions when they give Python's results
(engines/daft/native.py), and keeps every other node in Python, saying why."""

from __future__ import annotations

import io
import re

import daft
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import _chain

from hypernodes_daft import DaftEngine, DiskCache, Pipeline, node
from hypernodes_daft.callbacks import MetricsCallback


def plans(frame: daft.DataFrame) -> tuple[str, list[str]]:
    """The unoptimized plan as text, and the names of the Python functions it runs."""
    buffer = io.StringIO()
    frame.explain(show_all=True, file=buffer)
    text = re.sub(r"\s*\n\|\s+", " ", buffer.getvalue())  # long lines unwrapped
    physical = text.split("== Physical Plan ==")[-1]
    return text, re.findall(r"UDF hypernodes\.([^:(]+?)(?: \(python|:)", physical)


def both_ways(nodes: list, inputs: dict, map_over, **options) -> tuple[list, list, str, list]:
    """The map's results with tracing on and off, the plan and Python functions with it on."""
    pipeline = Pipeline(nodes=nodes)
    native = pipeline.map(inputs=inputs, map_over=map_over, engine=DaftEngine(**options))
    python = pipeline.map(
        inputs=inputs, map_over=map_over, engine=DaftEngine(native=False, **options)
    )
    lazy = pipeline.map(
        inputs=inputs, map_over=map_over, engine=DaftEngine(collect=False, **options)
    )
    return (native, python, *plans(lazy))


add_one, double, minus_three = _chain().nodes  # a = x + 1, b = a * 2, c = b - 3


def test_a_chain_of_arithmetic_runs_as_one_projection_with_python_results():
    native, python, plan, functions = both_ways(
        [add_one, double, minus_three], {"x": [3, -4, 0, 10**9]}, "x"
    )
    assert native == python == [{"a": x + 1, "b": 2 * x + 2, "c": 2 * x - 1} for x in
                                [3, -4, 0, 10**9]]  # fmt: skip
    assert functions == []  # no Python function at all
    # one projection: each node's expression is over the input column (Daft's optimizer
    # then computes the shared parts once)
    unoptimized = plan.split("== Optimized")[0]
    assert re.search(r"\(\(x \+ Literal\(Int64\(1\)\)\)\.cast\(Int64\) \* Literal", unoptimized)


@node(output_name="shout")
def shout(text: str) -> str:
    return text.strip().upper() + "!"


@node(output_name="low")
def low(x: int, y: int) -> int:
    return min(x, y) + max(x, 0) - abs(y)


@node(output_name="flag")
def flag(x: int, y: int) -> bool:
    return (x > y) & (x != 0) | (y == 3)


@node(output_name="scaled")
def scaled(x: int, factor: float) -> float:
    return x * factor + 0.5


def test_strings_min_max_abs_comparisons_and_constants_are_native():
    inputs = {"x": [1, -5, 0, 7], "y": [3, 2, -9, 7], "text": [" a", "b ", "", "ß"], "factor": 2.5}
    native, python, _, functions = both_ways([shout, low, flag, scaled], inputs, ["x", "y", "text"])
    assert native == python
    assert functions == []


TABLE = str.maketrans("abc", "xyz")
BIG = 2**62


def helper(x: int) -> int:
    return x


@node(output_name="y")
def branches(x: int) -> int:
    return x if x > 0 else -x


@node(output_name="y")
def calls_a_helper(x: int) -> int:
    return helper(x) + 1


@node(output_name="y")
def unknown_method(text: str) -> str:
    return text.title()


@node(output_name="y")
def loops(x: int) -> int:
    total = 0
    for part in (1, 2):
        total += x * part
    return total


@node(output_name="y")
def floor_divides(x: int) -> int:
    return x // 2


@node(output_name="y")
def modulo(x: int) -> int:
    return x % 3


@node(output_name="y")
def inverse(x: int) -> float:
    return 1 / x


@node(output_name="y")
def halves_a_product(x: int) -> float:
    return x * 4 / 2


@node(output_name="y")
def rounds(x: float) -> int:
    return round(x)


@node(output_name="y")
def is_missing(x: int) -> bool:
    return x is None


@node(output_name="y")
def formats(text: str) -> str:
    return f"{text}!"


@node(output_name="y")
def translates(text: str) -> str:
    return text.translate(TABLE)


@node(output_name="y", native=False)
def opted_out(x: int) -> int:
    return x + 1


@pytest.mark.parametrize(
    ("body", "values", "why"),
    [
        (branches, [1, -2], "branches or loops"),
        (calls_a_helper, [1, 2], "calls 'helper'"),
        (unknown_method, ["a b", "c"], "calls .title()"),
        (loops, [1, 2], "branches or loops"),
        (floor_divides, [5, 6], "for {'x': -1} Python gives -1, Daft 0"),  # floor vs trunc
        (modulo, [5, 6], "for {'x': -1} Python gives 2, Daft -1"),
        (inverse, [1, 2], "Python raises ZeroDivisionError"),
        (halves_a_product, [1, BIG], f"Python gives {float(2 * BIG)}, Daft 0.0"),  # int64 wraps
        (rounds, [1.0, 2.0], "for {'x': 0.5} Python gives 0, Daft 1"),  # half to even
        (is_missing, [1, 2], "identity"),
        (formats, ["a"], "formats a string"),
        (translates, ["abc"], "reads 'TABLE'"),
        (opted_out, [1, 2], "@node(native=False)"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_a_body_that_differs_or_cannot_be_traced_stays_in_python(body, values, why):
    column = "text" if "text" in body.root_args else "x"
    pipeline = Pipeline(nodes=[body])
    lazy = pipeline.map({column: values}, map_over=column, engine=DaftEngine(collect=False))
    plan, functions = plans(lazy)
    assert functions == [body.name]
    assert why in plan  # the reason is in the function's name
    inputs = {column: values}
    native = pipeline.map(inputs, map_over=column, engine=DaftEngine(), on_error="collect")
    python = pipeline.map(
        inputs, map_over=column, engine=DaftEngine(native=False), on_error="collect"
    )
    assert list(native) == list(python)


@node(output_name="y")
def plus_one(x: int) -> int:
    return x + 1


def test_a_null_in_the_sample_keeps_arithmetic_in_python_where_it_fails_the_row():
    pipeline = Pipeline(nodes=[plus_one])
    inputs = {"x": [1, None, 3]}
    lazy = pipeline.map(inputs, map_over="x", engine=DaftEngine(collect=False))
    plan, functions = plans(lazy)
    assert functions == ["plus_one"] and "Python raises TypeError" in plan
    native = pipeline.map(inputs, map_over="x", engine=DaftEngine(), on_error="collect")
    python = pipeline.map(inputs, map_over="x", engine=DaftEngine(native=False), on_error="collect")
    assert [r.get("y") for r in native] == [r.get("y") for r in python] == [2, None, 4]
    assert native.errors[0].error_type == python.errors[0].error_type == "TypeError"


def test_a_native_switch_that_is_not_a_bool_is_an_error_naming_it():
    def half(x: int) -> float:
        return x / 2

    with pytest.raises(ValueError, match="node 'half': native must be True or False, got 'no'"):
        node(output_name="halved", native="no")(half)
    with pytest.raises(ValueError, match="DaftEngine: native must be True or False, got 0"):
        DaftEngine(native=0)


def test_the_engine_switch_turns_tracing_off():
    pipeline = Pipeline(nodes=[add_one, double])
    lazy = pipeline.map({"x": [1]}, map_over="x", engine=DaftEngine(collect=False, native=False))
    assert plans(lazy)[1] == ["add_one+double"]


def test_a_cached_node_runs_in_python_and_keeps_its_entries(tmp_path):
    cache = DiskCache(tmp_path)
    engine = DaftEngine(collect=False, cache=cache)
    lazy = Pipeline(nodes=[add_one]).map({"x": [1, 2]}, map_over="x", engine=engine)
    plan, functions = plans(lazy)
    assert functions == ["add_one"] and "cached: its entries are kept per row" in plan
    assert lazy.to_pydict()["a"] == [2, 3] and len(cache) == 2


def test_callbacks_hear_of_native_calls_per_batch():
    metrics = MetricsCallback()
    pipeline = Pipeline(nodes=[add_one, double], callbacks=[metrics])
    pipeline.map({"x": list(range(50))}, map_over="x", engine=DaftEngine(partitions=2))
    summary = metrics.summary()
    assert summary["add_one"]["calls"] == summary["double"]["calls"] == 50


@node(output_name="a")
def fragile(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


def test_rows_failed_upstream_stay_failed_through_native_nodes():
    pipeline = Pipeline(nodes=[fragile, double, minus_three])
    inputs = {"x": [1, 2, 3]}
    native = pipeline.map(inputs, map_over="x", engine=DaftEngine(), on_error="collect")
    python = pipeline.map(inputs, map_over="x", engine=DaftEngine(native=False), on_error="collect")
    assert list(native) == list(python)
    assert [r.get("c") for r in native] == [-1, None, 3]
    assert native.errors[0].node == "fragile"


# -- property: no generated body gives a traced result that differs from Python's ------------

INTS = st.one_of(st.integers(-20, 20), st.sampled_from([0, -1, 2**31, -(2**40), 2**61]))
STRINGS = st.text(alphabet="aBc ß!-", max_size=5)
NULLED = st.sampled_from([None, None, None, "x", "y", "s"])  # a column given a null, or none


def int_expressions() -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["x", "y", "0", "1", "-3", "7"])
    binary = st.sampled_from(["+", "-", "*", "//", "%", "/"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(lambda a, op, b: f"({a} {op} {b})", inner, binary, inner),
            st.builds(lambda a: f"(-{a})", inner),
            st.builds(lambda a: f"abs({a})", inner),
            st.builds(lambda a, b: f"min({a}, {b})", inner, inner),
            st.builds(lambda a, b: f"max({a}, {b})", inner, inner),
        )

    return st.recursive(leaves, extend, max_leaves=5)


def bool_expressions() -> st.SearchStrategy[str]:
    compare = st.builds(
        lambda a, op, b: f"({a} {op} {b})", int_expressions(),
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), int_expressions(),
    )  # fmt: skip
    return st.recursive(
        compare, lambda inner: st.builds(lambda a, op, b: f"({a} {op} {b})", inner,
                                         st.sampled_from(["&", "|", "^"]), inner),
        max_leaves=3,
    )  # fmt: skip


def str_expressions() -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["s", "'-'", "''"])
    methods = st.sampled_from(["upper", "lower", "strip", "capitalize"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(lambda a, b: f"({a} + {b})", inner, inner),
            st.builds(lambda a, m: f"{a}.{m}()", inner, methods),
        )

    return st.recursive(leaves, extend, max_leaves=4)


BODIES = st.one_of(
    st.tuples(st.just("int"), int_expressions()),
    st.tuples(st.just("float"), int_expressions()),
    st.tuples(st.just("bool"), bool_expressions()),
    st.tuples(st.just("str"), str_expressions()),
)


def compiled(returns: str, body: str) -> node:
    source = f"def f(x: int, y: int, s: str) -> {returns}:\n    return {body}\n"
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)  # noqa: S102 - our own grammar
    return node(output_name="out")(namespace["f"])


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(BODIES, st.lists(st.tuples(INTS, INTS, STRINGS), min_size=1, max_size=8), NULLED)
def test_no_generated_body_gives_a_traced_result_other_than_pythons(body, rows, nulled):
    returns, expression = body
    pipeline = Pipeline(nodes=[compiled(returns, expression)])
    inputs = {"x": [r[0] for r in rows], "y": [r[1] for r in rows], "s": [r[2] for r in rows]}
    if nulled:
        inputs[nulled][0] = None
    outcomes = []
    for native in (True, False):
        try:
            engine = DaftEngine(native=native)
            outcomes.append(list(pipeline.map(inputs, ["x", "y", "s"], engine=engine,
                                              map_mode="zip", on_error="collect")))  # fmt: skip
        except Exception as error:  # the whole map failed: it must fail the same way
            outcomes.append(type(error).__name__)
    assert outcomes[0] == outcomes[1], expression
