"""Ctrl-C on a map running on the loopback Ray cluster (DaftEngine(runner="ray")): the
workers stop calling within the bound, the async calls in flight run their finally, the
finished rows are kept (results and cache), and a re-run computes only the rest."""

from __future__ import annotations

import json
import time

import pytest
from _cluster import job_environment
from _interrupting import (
    check_interrupted_run,
    interrupt_half_way,
    lines,
    rerun_computes_only_the_rest,
)

pytestmark = pytest.mark.ray


def test_ctrl_c_on_ray_keeps_what_finished_and_leaves_nothing_running(ray_cluster, tmp_path):
    env = {**job_environment(), "HYPERNODES_TEST_RAY_ADDRESS": ray_cluster.address}
    process, sent, out, err, log = interrupt_half_way("ray", tmp_path, collect=True, env=env)
    assert process.returncode == 0, _without_progress(err)[-3000:]
    results = json.loads(out)
    assert results["ok"] and results["cancelled"]
    time.sleep(3)  # a task still running on the cluster would log its call or its end
    before = (lines(log, "calls"), lines(log, "done"))
    time.sleep(2)
    assert (lines(log, "calls"), lines(log, "done")) == before
    finished = check_interrupted_run("ray", tmp_path, sent, log, bound=10.0)
    rerun_computes_only_the_rest("ray", tmp_path, finished, env)


def _without_progress(err: str) -> str:
    """The error output without the progress bars Ray's workers print."""
    return "\n".join(
        line for line in err.splitlines() if "it/s]" not in line and "s/it]" not in line
    )
