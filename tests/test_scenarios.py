"""Every engine gives the shared scenarios' oracle results."""

import pytest
from scenarios import SCENARIOS, Scenario

from hypernodes_daft import HypernodesEngine

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    engine = ENGINES[request.param]()
    yield engine
    shutdown = getattr(engine, "shutdown", None)
    if shutdown:
        shutdown()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario(engine, scenario: Scenario):
    result = scenario.execute(engine)
    if scenario.name == "python_objects":
        assert [r["index"] for r in result] == [{"a": 1, "b": 1}, {"c": 2}]
        assert [r["doc"].words for r in result] == [("a", "b"), ("c",)]
    else:
        assert result == scenario.expected
