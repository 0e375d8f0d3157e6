"""Test session setup. Daft and Ray must only ever talk to 127.0.0.1: the settings are made
before either is imported (see hypernodes_daft/_local_only.py). The fixtures of the tests
against the local HTTP service (tests/_http_service.py) are shared here."""

from __future__ import annotations

import uuid
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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A local S3-compatible server (moto, tests/_s3_server.py) with the bucket
    "hypernodes-tests", for the whole session; stopped afterwards."""
    pytest.importorskip("moto")
    from _s3_server import S3Server

    server = S3Server.start()
    try:
        server.create_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


S3_BUCKET = "hypernodes-tests"


@pytest.fixture
def s3_url(s3_server: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh prefix of the test bucket, with the AWS variables pointing at the server."""
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    prefix = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"s3://{S3_BUCKET}/{prefix}-{uuid.uuid4().hex[:8]}"
