"""Running a job of tests/ray/jobs.py in its own process and reading its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypernodes_daft._local_only import keep_local

JOBS = Path(__file__).resolve().parent / "jobs.py"


def job_command(job: str, address: str, *arguments: str) -> list[str]:
    return [sys.executable, str(JOBS), job, address, *arguments]


def job_environment() -> dict[str, str]:
    """The job's environment: Ray's usage reports and Daft's telemetry off, Ray on
    127.0.0.1 (keep_local's settings, stated here, not only inherited), no progress bars."""
    return {**os.environ, **keep_local(os.environ.get("HOME")), "DAFT_PROGRESS_BAR": "0"}


def report(done: subprocess.CompletedProcess) -> dict:
    """The job's JSON report (its last line of output)."""
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
