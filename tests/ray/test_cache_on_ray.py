"""A DiskCache on S3 shared by the workers of the loopback Ray cluster: the second map
calls no node, and a driver killed half-way resumes without repeating a stored call."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from _cluster import job_command, job_environment

from hypernodes_daft import DiskCache

pytestmark = pytest.mark.ray

TOTAL = sum(x * x for x in range(200))


def _marks(directory: Path, kind: str) -> list[str]:
    return [p.name.split("-")[1] for p in directory.glob(f"{kind}-*")]


def test_the_workers_share_an_s3_cache_second_map_calls_nothing(run_job, s3_url, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    assert run_job("s3_cache", f"{s3_url} {marks}") == {"sum": TOTAL}
    assert sorted(map(int, _marks(marks, "start"))) == list(range(200))
    machines = {p.name.split("-")[3] for p in marks.glob("end-*")}
    assert len(machines) >= 2  # the calls ran on several nodes, all storing in one cache
    assert len(DiskCache(s3_url)) == 200
    for mark in marks.iterdir():
        mark.unlink()
    assert run_job("s3_cache", f"{s3_url} {marks}") == {"sum": TOTAL}
    assert _marks(marks, "start") == []


def test_a_killed_driver_resumes_without_repeating_a_stored_call(ray_cluster, s3_url, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    command = job_command("s3_cache", ray_cluster.address, f"{s3_url} {marks}")
    first = subprocess.Popen(command, env=job_environment(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_marks(marks, "end")) < 80 and time.monotonic() < deadline:
        assert first.poll() is None, "the first run ended before it was killed"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    _until_quiet(marks)  # Ray stops the dead driver's tasks: nothing runs afterwards
    started, ended = _marks(marks, "start"), _marks(marks, "end")
    stored = len(DiskCache(s3_url))
    assert 80 <= len(ended) < 200
    assert len(ended) - stored <= 8  # returned, its write not done at the kill
    for mark in marks.iterdir():
        mark.unlink()

    done = subprocess.run(
        command, env=job_environment(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f'{{"sum": {TOTAL}}}'
    recomputed = _marks(marks, "start")
    assert len(recomputed) == len(set(recomputed)) == 200 - stored  # no stored call again
    print(  # with -s: what the kill left and what the re-run made
        f"started {len(started)}, ended {len(ended)}, stored {stored} at the kill; "
        f"the re-run made {len(recomputed)} calls"
    )
    assert len(started) + len(recomputed) <= 200 + (len(started) - stored)


def _until_quiet(marks: Path, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until no call has started or ended for `quiet` seconds."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(1 for _ in marks.iterdir())
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)
    raise AssertionError("calls went on for a minute after the driver was killed")
