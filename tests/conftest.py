"""Test session setup. Daft and Ray must only ever talk to 127.0.0.1: the settings are made
before either is imported (see hypernodes_daft/_local_only.py). The fixtures of the tests
against the local HTTP service (tests/_http_service.py) are shared here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypernodes_daft._local_only import keep_local

keep_local()  # DO_NOT_TRACK=1, RAY_USAGE_STATS_ENABLED=0, report URL on 127.0.0.1, HOME

import pytest  # noqa: E402
from _http_service import HttpService, Sessions  # noqa: E402


@pytest.fixture
def service() -> Iterator[HttpService]:
    """A fresh service on a free port, stopped (thread, loop, connections) afterwards."""
    with HttpService() as started:
        yield started


@pytest.fixture
def sessions() -> Iterator[Sessions]:
    """aiohttp sessions of the async nodes, one per event loop, closed afterwards."""
    made = Sessions()
    yield made
    made.close()


@pytest.fixture
def engines(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`engines(name)`: a new engine from the test module's ENGINES, shut down after."""
    made: list[Any] = []

    def make(name: str) -> Any:
        made.append(request.module.ENGINES[name]())
        return made[-1]

    yield make
    for engine in made:
        if hasattr(engine, "shutdown"):
            engine.shutdown()
