"""A real local Ray cluster for the integration tests: a head and two worker nodes, one CPU
each, on 127.0.0.1 only (the settings of tests/conftest.py are made before Ray starts). One
worker declares a GPU, the other a custom resource "model_host"; the head has neither.

Only what the fixture started is stopped (`cluster.shutdown()`), never `ray stop`.
"""

from __future__ import annotations

import subprocess

import pytest
from _cluster import job_command, job_environment, report


@pytest.fixture(scope="session")
def ray_cluster():
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    job_environment()  # Ray's usage reports and cloud probes off, loopback only: before Ray starts
    cluster = None
    try:  # created inside the try: a failed start is cleaned up too
        cluster = cluster_utils.Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
        )
        cluster.add_node(num_cpus=1, num_gpus=1)  # Ray takes a declared GPU without one
        cluster.add_node(num_cpus=1, resources={"model_host": 1})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()


@pytest.fixture
def run_job(ray_cluster):
    """Run a job of tests/ray/jobs.py against the cluster; its report."""

    def run(job: str, *arguments: str) -> dict:
        command = job_command(job, ray_cluster.address, *arguments)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env=job_environment()
        )
        return report(done)

    return run
