"""DaftEngine(runner="ray") on a real two-node local Ray cluster (marked `ray`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cluster import job_command, job_environment, report

pytestmark = pytest.mark.ray


def test_shared_scenarios_give_the_oracle_results_on_ray(run_job):
    results = run_job("scenarios")
    assert results and all(ok is True for ok in results.values()), results


def test_rows_of_a_map_spread_over_the_nodes(run_job):
    result = run_job("spread")
    assert result["values"] == [x + 1000 for x in range(400)]  # in order, closure travelled
    assert len(result["rows_per_node"]) >= 2, result["rows_per_node"]


def test_async_concurrency_bound_holds_in_every_worker_process(run_job):
    result = run_job("async_bound")
    assert result["xs"] == list(range(120))
    assert result["peaks"] and all(1 < peak <= 3 for peak in result["peaks"].values())


def test_stateful_resource_is_built_once_per_worker_process(run_job):
    result = run_job("stateful")
    assert result["ys"] == [3 * x for x in range(300)]
    assert result["inits"] and set(result["inits"].values()) == {1}, result["inits"]


def test_parquet_dataset_opened_before_the_map_runs_on_ray(run_job, tmp_path):
    result = run_job("dataset", str(tmp_path))
    assert result["ids"] == list(range(200))


def test_disk_cache_on_a_shared_path_serves_the_second_map(run_job, tmp_path):
    result = run_job("cache", str(tmp_path))
    assert result["same"]
    assert result["calls"] == [60, 60]  # every row computed once, then served by workers


def test_node_events_from_ray_workers_reach_the_drivers_callbacks(run_job):
    result = run_job("callbacks")
    assert result["zs"] == [2 * x + 1 for x in range(200)]
    assert result["metrics"] == {
        "double": {"calls": 200, "cached": 0},
        "slow_inc": {"calls": 200, "cached": 0},
    }
    assert result["ends"] == {"double": 200, "slow_inc": 200}
    assert result["items"] == 200


def test_collected_failures_come_back_in_order_from_ray_workers(run_job):
    result = run_job("collect")
    assert result["failed"] == list(range(0, 70, 7))
    assert result["types"] == ["ZeroDivisionError"] and result["nodes"] == ["invert"]
    assert result["ok"] == [f"{1 / (x % 7):.3f}" for x in range(70) if x % 7]
    assert result["errors"] == {"invert": 10, "label": 0}


def test_a_cluster_limit_bounds_calls_across_every_worker_process(run_job):
    result = run_job("cluster_limit")
    per_process, cluster = result["per_process"], result["cluster"]
    assert per_process["processes"] >= 2 and per_process["peak"] > 3, result
    assert all(run["peak"] == 3 for run in cluster), result  # every run, one process or more
    assert cluster[-1]["processes"] >= 2, result


def test_a_cluster_limits_actor_lets_the_5_high_priority_calls_in_next(run_job):
    started = run_job("cluster_priority")["started"]
    assert started[0] == "first"
    assert set(started[1:6]) == {f"high{i}" for i in range(5)}, started
    # then the lows (their arrival order at the actor is Ray's: their set, not their order)
    assert sorted(started[6:]) == sorted(f"low{i}" for i in range(20)), started


def test_switching_runner_in_one_process_is_a_clear_error(run_job):
    result = run_job("switch")
    assert result["error"] == "PlanningError"
    assert "native" in result["message"] and "one runner per process" in result["message"]


def test_node_closing_over_a_lock_names_the_node_on_ray(run_job):
    result = run_job("unpicklable")
    assert result["error"] == "PlanningError"
    assert "guarded" in result["message"] and "cannot be sent" in result["message"]


def test_killing_a_worker_process_mid_job_loses_no_row(ray_cluster, tmp_path):
    """SIGKILL one of the processes running the node while the map runs. Daft on Ray
    retries the lost tasks (in a new process, or in one of the others), so the job completes
    and every row's result is there exactly once, in order (what we saw on this machine;
    were the retry to fail, the map would raise and return nothing, never a partial list)."""
    announced = tmp_path / "pids"
    announced.mkdir()
    command = job_command("fault", ray_cluster.address, str(announced))
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=job_environment()
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(announced.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the ~10 s job
        assert job.poll() is None, "the job ended before a worker could be killed"
        before = {int(p.name) for p in announced.iterdir()}
        victim = max(before)
        os.kill(victim, signal.SIGKILL)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    result = report(subprocess.CompletedProcess(command, job.returncode, out, err))
    assert result["ys"] == [2 * x for x in range(240)]  # every row once, in order


def test_a_script_submitted_with_ray_job_submit_runs_on_the_cluster(tmp_path):
    """The Ray Jobs way: `ray job submit -- python script.py`, the script's DaftEngine given
    no address. A cluster of its own, with the dashboard (the Jobs API) on 127.0.0.1."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    job_environment()  # the local-only settings, in this process too, before Ray starts
    port = _free_port()
    cluster = None
    try:
        cluster = cluster_utils.Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": port,
                # not the fixed default: another cluster on this machine may hold it
                "dashboard_agent_listen_port": _free_port(),
            },
        )
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray_cli = Path(sys.executable).with_name("ray")
        submit = [str(ray_cli), "job", "submit", "--address", f"http://127.0.0.1:{port}", "--"]
        deadline = time.monotonic() + 120
        while True:  # the head's job agent comes up a little after the cluster
            done = subprocess.run(
                [*submit, *job_command("spread", "-")],
                capture_output=True,
                text=True,
                timeout=600,
                env=job_environment(),
            )
            if "No available agent" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        if cluster is not None:
            cluster.shutdown()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(x for x in reversed(done.stdout.splitlines()) if '"rows_per_node"' in x)
    result = json.loads(line[line.index("{") :])
    assert result["values"] == [x + 1000 for x in range(400)]
    assert len(result["rows_per_node"]) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_traced_node_bodies_run_as_expressions_on_ray(run_job):
    assert run_job("native") == {"udfs": 0, "same": True}


def test_an_estimate_runs_its_sample_on_ray_and_projects_the_calls(run_job):
    report = run_job("estimate")
    assert report["calls"] == [2000, 2000] and report["same"]
    print(f"on Ray: estimate {report['estimate']:.2f} s, measured {report['measured']:.2f} s")
    assert report["estimate"] > 0
