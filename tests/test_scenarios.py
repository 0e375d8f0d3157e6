"""Every engine gives the shared scenarios' oracle results."""

import pytest
from scenarios import SCENARIOS, Scenario

from hypernodes_daft import DaftEngine, HypernodesEngine

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "threaded_nodes": lambda: HypernodesEngine(node_executor="threaded"),
    "async_nodes": lambda: HypernodesEngine(node_executor="async"),
    "threaded_map": lambda: HypernodesEngine(map_executor="threaded", max_workers=4),
    "async_map": lambda: HypernodesEngine(map_executor="async", max_concurrency=3),
    "async_all": lambda: HypernodesEngine(node_executor="async", map_executor="async"),
    "parallel_map": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "threaded_parallel": lambda: HypernodesEngine(
        node_executor="threaded", map_executor="parallel", max_workers=2
    ),
    "daft": lambda: DaftEngine(),
    "daft_python": lambda: DaftEngine(native=False),  # no node body traced: the same results
    "daft_partitions": lambda: DaftEngine(partitions=3, max_concurrency=2),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request):
    engine = ENGINES[request.param]()
    if not hasattr(engine, "__enter__"):
        yield engine
        return
    with engine:  # one pool per engine, reused by all scenarios
        yield engine


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario(engine, scenario: Scenario):
    result = scenario.execute(engine)
    if scenario.name == "python_objects":
        assert [r["index"] for r in result] == [{"a": 1, "b": 1}, {"c": 2}]
        assert [r["doc"].words for r in result] == [("a", "b"), ("c",)]
    else:
        assert result == scenario.expected
