"""Cancellation: Ctrl-C (SIGINT), SIGTERM and deadlines stop a map on every engine, keep
what finished (in the cache, and as `Cancelled` records under on_error="collect") and
leave nothing running; a re-run computes only the rest (runtime/cancel.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypernodes_daft import (
    DaftEngine,
    DiskCache,
    HypernodesEngine,
    Pipeline,
    node,
)
from hypernodes_daft.results import Cancelled
from hypernodes_daft.runtime.cancel import DeadlineExceeded

SCRIPT = Path(__file__).with_name("_interrupted_map.py")
N = 16  # items; each makes an async call of 0.3 s and a sync one of 0.1 s
LOCAL = ["sequential", "threaded", "async", "parallel", "daft"]


def lines(log: Path, name: str) -> list[str]:
    path = log / name
    return path.read_text().splitlines() if path.exists() else []


def start(engine: str, cache: Path, log: Path, collect: bool) -> subprocess.Popen:
    args = [sys.executable, str(SCRIPT), engine, str(cache), str(log), str(N)]
    return subprocess.Popen(
        [*args, *(["collect"] if collect else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_half_way(
    engine: str, tmp_path: Path, collect: bool, signum: int = signal.SIGINT
) -> tuple[subprocess.Popen, float, str, str, Path]:
    """Run the map in its own process and send `signum` once half its calls were made;
    returns the process, when the signal was sent, its output and its log."""
    log, cache = tmp_path / "log", tmp_path / "cache"
    log.mkdir()
    process = start(engine, cache, log, collect)
    limit = time.monotonic() + 120
    while len(lines(log, "done")) < N and time.monotonic() < limit:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.01)
    sent = time.time()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process, sent, out, err, log


def check_interrupted_run(engine: str, tmp_path: Path, sent: float, log: Path) -> int:
    """What every engine must keep to: stopped within the bound, no call started after
    the signal, every async call's finally ran, the cache holds exactly the finished
    calls, no worker process left; returns how many calls finished."""
    stopped = float(lines(log, "stopped")[0])
    assert stopped - sent <= 2.0, f"{engine}: took {stopped - sent:.2f} s to stop"
    starts = [float(line.split()[2]) for line in lines(log, "calls")]
    assert max(starts) <= sent + 0.05, "a node call started after the signal"
    fetches = {line.split()[1] for line in lines(log, "calls") if line.startswith("fetch")}
    assert {line.split()[1] for line in lines(log, "finally")} == fetches
    done = lines(log, "done")
    assert len(DiskCache(tmp_path / "cache")) == len(done) == len(set(done))
    assert 0 < len(done) < 2 * N
    for pid in {int(p) for p in lines(log, "children")} - {int(lines(log, "started")[0])}:
        assert not _alive(pid), f"worker process {pid} outlived the run"
    return len(done)


def rerun_computes_only_the_rest(engine: str, tmp_path: Path, finished: int) -> None:
    log = tmp_path / "log"
    for name in ("calls", "done", "finally", "stopped"):
        (log / name).unlink(missing_ok=True)
    again = start(engine, tmp_path / "cache", log, collect=True)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    outputs = json.loads(out)
    assert outputs["cancelled"] == []
    assert outputs["ok"] == {str(x): {"fetched": x * 10, "squared": (x * 10) ** 2} for x in range(N)}
    assert len(lines(log, "done")) == 2 * N - finished  # nothing stored is called again


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


@pytest.mark.parametrize("engine", LOCAL)
def test_ctrl_c_keeps_the_finished_items_as_results_and_cancelled_records(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(engine, tmp_path, collect=True)
    assert process.returncode == 0, err[-3000:]
    results = json.loads(out)
    finished = check_interrupted_run(engine, tmp_path, sent, log)
    ok = {int(i) for i in results["ok"]}
    assert ok and results["cancelled"] and ok.isdisjoint(results["cancelled"])
    assert sorted(ok | set(results["cancelled"])) == list(range(N))
    for index, outputs in results["ok"].items():
        assert outputs == {"fetched": int(index) * 10, "squared": (int(index) * 10) ** 2}
    rerun_computes_only_the_rest(engine, tmp_path, finished)


@pytest.mark.parametrize("engine", ["sequential", "async", "parallel", "daft"])
def test_ctrl_c_without_collect_raises_keyboard_interrupt_after_cleanup(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(engine, tmp_path, collect=False)
    assert process.returncode == -signal.SIGINT  # Python's exit for KeyboardInterrupt
    assert "KeyboardInterrupt" in err
    assert "FATAL" not in err  # no abort on the way out
    check_interrupted_run(engine, tmp_path, sent, log)


@pytest.mark.parametrize("engine", ["threaded", "daft"])
def test_sigterm_stops_the_map_as_ctrl_c_does(engine, tmp_path):
    process, sent, out, err, log = interrupt_half_way(
        engine, tmp_path, collect=True, signum=signal.SIGTERM
    )
    assert process.returncode == 0, err[-3000:]
    assert json.loads(out)["cancelled"]
    check_interrupted_run(engine, tmp_path, sent, log)
