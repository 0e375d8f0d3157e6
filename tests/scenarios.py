"""Shared scenarios: pipelines with the results a plain Python oracle gives for them.

Every engine and executor must give exactly these results (tests/test_scenarios.py runs the
matrix). Each scenario builds fresh nodes, so nothing leaks between engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypernodes_daft import DualNode, Pipeline, node


@dataclass
class Scenario:
    name: str
    build: Callable[[], Pipeline]
    call: str  # "run" or "map"
    kwargs: dict[str, Any]
    expected: Any
    tags: set[str] = field(default_factory=set)

    def execute(self, engine: Any) -> Any:
        pipeline = self.build()
        return getattr(pipeline, self.call)(engine=engine, **self.kwargs)


def _chain() -> Pipeline:
    @node(output_name="a")
    def add_one(x: int) -> int:
        return x + 1

    @node(output_name="b")
    def double(a: int) -> int:
        return a * 2

    @node(output_name="c")
    def minus_three(b: int) -> int:
        return b - 3

    return Pipeline(nodes=[add_one, double, minus_three], name="chain")


def _diamond() -> Pipeline:
    @node(output_name="data")
    def load(n: int) -> list[int]:
        return list(range(n))

    @node(output_name="total")
    def total_of(data: list[int]) -> int:
        return sum(data)

    @node(output_name="biggest")
    def biggest_of(data: list[int]) -> int:
        return max(data)

    @node(output_name="summary")
    def combine(total: int, biggest: int, label: str = "s") -> str:
        return f"{label}:{total}/{biggest}"

    return Pipeline(nodes=[load, total_of, biggest_of, combine], name="diamond")


def _tuple_outputs() -> Pipeline:
    @node(output_name=("quotient", "remainder"))
    def divide(a: int, b: int) -> tuple[int, int]:
        return divmod(a, b)

    @node(output_name="check")
    def recombine(quotient: int, remainder: int, b: int) -> int:
        return quotient * b + remainder

    return Pipeline(nodes=[divide, recombine])


def _async_mixed() -> Pipeline:
    @node(output_name="fetched")
    async def fetch(key: str) -> str:
        await asyncio.sleep(0.001)
        return key.upper()

    @node(output_name="length")
    def measure(fetched: str) -> int:
        return len(fetched)

    @node(output_name="tagged")
    async def tag(fetched: str, length: int) -> str:
        await asyncio.sleep(0)
        return f"{fetched}#{length}"

    return Pipeline(nodes=[fetch, measure, tag], name="async_mixed")


def _nested_mapped() -> Pipeline:
    @node(output_name="cleaned")
    def clean(text: str) -> str:
        return text.strip().lower()

    @node(output_name="n_chars")
    def count(cleaned: str) -> int:
        return len(cleaned)

    inner = Pipeline(nodes=[clean, count], name="per_doc")
    per_doc = inner.as_node(
        input_mapping={"docs": "text"},
        output_mapping={"n_chars": "doc_lengths"},
        map_over="docs",
        name="per_doc",
    )

    @node(output_name="total_chars")
    def add_up(doc_lengths: list[int]) -> int:
        return sum(doc_lengths)

    return Pipeline(nodes=[per_doc, add_up], name="corpus")


def _nested_bound() -> Pipeline:
    @node(output_name="scaled")
    def scale(value: float, factor: float) -> float:
        return value * factor

    inner = Pipeline(nodes=[scale], name="scaler").bind(factor=10.0)

    @node(output_name="shifted")
    def shift(scaled: float, offset: float) -> float:
        return scaled + offset

    return Pipeline(nodes=[inner, shift], name="outer")


def _python_objects() -> Pipeline:
    @dataclass(frozen=True)
    class Doc:
        id: int
        words: tuple[str, ...]

    @node(output_name="doc")
    def make_doc(i: int, text: str) -> Doc:
        return Doc(i, tuple(text.split()))

    @node(output_name="index")
    def index_words(doc: Doc) -> dict[str, int]:
        return {w: doc.id for w in doc.words}

    return Pipeline(nodes=[make_doc, index_words])


def _dual(name: str = "score") -> DualNode:
    """A DualNode whose two functions agree: x * 3 + offset, per item or per column."""
    import pyarrow.compute as pc

    def score_one(x: int, offset: int = 0) -> int:
        return x * 3 + offset

    def score_batch(x, offset=0):
        return pc.add(pc.multiply(x, 3), offset)

    return DualNode(output_name=name, singular=score_one, batch=score_batch)


def _dual_alone() -> Pipeline:
    return Pipeline(nodes=[_dual()], name="dual")


def _dual_in_chain() -> Pipeline:
    @node(output_name="x")
    def add_one(n: int) -> int:
        return n + 1

    @node(output_name="label")
    def label_of(score: int) -> str:
        return f"#{score}"

    return Pipeline(nodes=[add_one, _dual(), label_of], name="dual_chain")


def _oracle_chain(x: int) -> dict[str, int]:
    return {"a": x + 1, "b": (x + 1) * 2, "c": (x + 1) * 2 - 3}


SCENARIOS = [
    Scenario("chain_run", _chain, "run", {"inputs": {"x": 5}}, _oracle_chain(5)),
    Scenario(
        "chain_map",
        _chain,
        "map",
        {"inputs": {"x": list(range(20))}, "map_over": "x"},
        [_oracle_chain(x) for x in range(20)],
    ),
    Scenario(
        "chain_output_selection",
        _chain,
        "map",
        {"inputs": {"x": [1, 2]}, "map_over": "x", "output_name": "b"},
        [{"b": 4}, {"b": 6}],
    ),
    Scenario(
        "diamond_default_and_override",
        _diamond,
        "map",
        {"inputs": {"n": [3, 5], "label": "L"}, "map_over": "n"},
        [
            {"data": [0, 1, 2], "total": 3, "biggest": 2, "summary": "L:3/2"},
            {"data": [0, 1, 2, 3, 4], "total": 10, "biggest": 4, "summary": "L:10/4"},
        ],
    ),
    Scenario(
        "diamond_default_used",
        _diamond,
        "run",
        {"inputs": {"n": 4}, "output_name": "summary"},
        {"summary": "s:6/3"},
    ),
    Scenario(
        "tuple_outputs_product",
        _tuple_outputs,
        "map",
        {"inputs": {"a": [7, 9], "b": [2, 4]}, "map_over": ["a", "b"], "map_mode": "product"},
        [{"quotient": a // b, "remainder": a % b, "check": a} for a in (7, 9) for b in (2, 4)],
    ),
    Scenario(
        "async_mixed_map",
        _async_mixed,
        "map",
        {"inputs": {"key": ["ab", "xyz", ""]}, "map_over": "key"},
        [
            {"fetched": k.upper(), "length": len(k), "tagged": f"{k.upper()}#{len(k)}"}
            for k in ("ab", "xyz", "")
        ],
        {"async"},
    ),
    Scenario(
        "nested_mapped",
        _nested_mapped,
        "map",
        {"inputs": {"docs": [[" A ", "bb"], [], ["CCC "]]}, "map_over": "docs"},
        [
            {"doc_lengths": [1, 2], "total_chars": 3},
            {"doc_lengths": [], "total_chars": 0},
            {"doc_lengths": [3], "total_chars": 3},
        ],
    ),
    Scenario(
        "nested_bound_broadcast",
        _nested_bound,
        "map",
        {"inputs": {"value": [1.0, 2.5], "offset": 0.5}, "map_over": "value"},
        [{"scaled": 10.0, "shifted": 10.5}, {"scaled": 25.0, "shifted": 25.5}],
    ),
    Scenario(
        "python_objects",
        _python_objects,
        "map",
        {"inputs": {"i": [1, 2], "text": ["a b", "c"]}, "map_over": ["i", "text"]},
        None,  # checked structurally: Doc is a local class
        {"objects"},
    ),
    Scenario("empty_map", _chain, "map", {"inputs": {"x": []}, "map_over": "x"}, []),
    Scenario("dual_run", _dual_alone, "run", {"inputs": {"x": 4, "offset": 1}}, {"score": 13}),
    Scenario(
        "dual_alone_map",  # the batch function over every item (local) or batch (Daft)
        _dual_alone,
        "map",
        {"inputs": {"x": list(range(7)), "offset": 2}, "map_over": "x"},
        [{"score": x * 3 + 2} for x in range(7)],
    ),
    Scenario(
        "dual_in_chain_map",
        _dual_in_chain,
        "map",
        {"inputs": {"n": [0, 5, 9]}, "map_over": "n"},
        [{"x": n + 1, "score": (n + 1) * 3, "label": f"#{(n + 1) * 3}"} for n in (0, 5, 9)],
    ),
]
