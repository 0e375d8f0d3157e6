"""The docker tests build images and start containers (minutes): they run only when asked
for with `-m docker`, as .ci/run does, never as part of the plain test command."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "docker" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a Docker cluster test: run it with -m docker")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)
