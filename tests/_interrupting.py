"""Running tests/_interrupted_map.py as its own process and interrupting it half-way:
what tests/test_cancel.py and tests/ray/test_cancel_on_ray.py share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypernodes_daft import DiskCache

SCRIPT = Path(__file__).with_name("_interrupted_map.py")
N = 16  # items; each makes an async call of 0.3 s and a sync one of 0.1 s


def lines(log: Path, name: str) -> list[str]:
    path = log / name
    return path.read_text().splitlines() if path.exists() else []


def start(
    engine: str, cache: Path, log: Path, collect: bool, env: dict[str, str] | None = None
) -> subprocess.Popen:
    args = [sys.executable, str(SCRIPT), engine, str(cache), str(log), str(N)]
    return subprocess.Popen(
        [*args, *(["collect"] if collect else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def interrupt_half_way(
    engine: str,
    tmp_path: Path,
    collect: bool,
    signum: int = signal.SIGINT,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, float, str, str, Path]:
    """Run the map in its own process and send `signum` once half its calls were made;
    returns the process, when the signal was sent, its output and its log."""
    log, cache = tmp_path / "log", tmp_path / "cache"
    log.mkdir()
    process = start(engine, cache, log, collect, env)
    limit = time.monotonic() + 120
    while not _half_way(lines(log, "done")) and time.monotonic() < limit:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.01)
    sent = time.time()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process, sent, out, err, log


def check_interrupted_run(
    engine: str, tmp_path: Path, sent: float, log: Path, bound: float = 2.0
) -> int:
    """What every engine must keep to: stopped within `bound` seconds, no call started
    after the signal (on a cluster: once the workers could know), every async call's
    finally ran, the cache holds exactly the finished calls, no worker process left;
    returns how many calls finished."""
    stopped = float(lines(log, "stopped")[0])
    print(f"{engine}: stopped {stopped - sent:.2f} s after the signal")  # shown with -s
    assert stopped - sent <= bound, f"{engine}: took {stopped - sent:.2f} s to stop"
    starts = [float(line.split()[2]) for line in lines(log, "calls")]
    assert max(starts) <= sent + bound / 4, "a node call started after the signal"
    fetches = {line.split()[1] for line in lines(log, "calls") if line.startswith("fetch")}
    assert {line.split()[1] for line in lines(log, "finally")} == fetches
    done = lines(log, "done")
    assert len(DiskCache(tmp_path / "cache")) == len(done) == len(set(done))
    assert 0 < len(done) < 2 * N
    for pid in {int(p) for p in lines(log, "children")} - {int(lines(log, "started")[0])}:
        assert not _alive(pid), f"worker process {pid} outlived the run"
    return len(done)


def rerun_computes_only_the_rest(
    engine: str, tmp_path: Path, finished: int, env: dict[str, str] | None = None
) -> None:
    log = tmp_path / "log"
    for name in ("calls", "done", "finally", "stopped"):
        (log / name).unlink(missing_ok=True)
    again = start(engine, tmp_path / "cache", log, collect=True, env=env)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    outputs = json.loads(out)
    assert outputs["cancelled"] == []
    assert outputs["ok"] == {
        str(x): {"fetched": x * 10, "squared": (x * 10) ** 2} for x in range(N)
    }
    assert len(lines(log, "done")) == 2 * N - finished  # nothing stored is called again


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _half_way(done: list[str]) -> bool:
    """Half the calls made, and some items finished (DaftEngine makes a batch's fetches
    before its squares: the items finish with their squares)."""
    return len(done) >= N and sum(line.startswith("square") for line in done) >= 2
