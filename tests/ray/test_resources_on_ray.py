"""Resource-aware nodes on the loopback cluster of conftest.py: a head with no GPU, a
worker declaring one GPU, a worker holding the custom resource "model_host" (one CPU each).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray


def test_gpu_and_custom_resource_nodes_run_only_where_those_resources_are(run_job):
    result = run_job("placement")
    assert result["values"] == [(x + 1) * 2 - 3 for x in range(400)]
    assert result["values"] == result["local"]  # as on a local engine
    assert set(result["on_gpu"]) == {result["gpu_node"]}, result
    assert set(result["on_host"]) == {result["host_node"]}, result
    assert len(result["anywhere"]) >= 2, result  # the plain node is not pinned
    assert result["devices"] == ["0"]  # Ray handed each GPU call its device


def test_a_model_with_two_replicas_is_built_exactly_twice_for_10000_rows(run_job, tmp_path):
    result = run_job("replicas", str(tmp_path))
    assert result["ys"] == [3 * x for x in range(10_000)]
    assert result["constructed"] == 2, result
    assert len(result["served_by"]) == 2, result  # both replicas served rows


@pytest.mark.parametrize(
    ("what", "named"),
    [
        ("gpus", "asked for gpus=2"),
        ("memory", "asked for memory=1TiB"),
        ("replicas", "asked for 8 replica(s) of cpus=1"),
    ],
)
def test_a_request_the_cluster_cannot_hold_fails_fast_and_leaves_nothing_running(
    run_job, what, named
):
    result = run_job("unsatisfiable", what)
    error = result["error"]
    assert error and error.startswith("ResourceError"), result
    assert "node 'ask'" in error and named in error, error
    assert "the Ray cluster" in error and "gpus=1" in error  # what the cluster has
    assert result["seconds"] < 60, result
    assert result["all_free"], result
