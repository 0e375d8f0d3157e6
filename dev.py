#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.10+.

    python3 dev.py demo     # the main job: the example pipeline over a Parquet dataset
    python3 dev.py test     # the test suite
    python3 dev.py bench    # the benchmarks (add --smoke for a quick check)

Each command creates `.venv/` and installs the project with its test extras on first use
(again whenever pyproject.toml changes), and keeps Daft and Ray off the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"

COMMANDS = {
    "demo": [str(PYTHON), "examples/run_demo.py"],
    "test": [str(PYTHON), "-m", "pytest"],
    "bench": [str(PYTHON), "benchmarks/run_all.py"],
}


def ensure_environment() -> None:
    """Create the venv and (re)install the project when pyproject.toml changed."""
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing hypernodes-daft[dev] (test, ray, ruff) into .venv", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    stamp.write_text(wanted)


def local_only_environment() -> dict[str, str]:
    """The environment with Daft's and Ray's outside calls switched off."""
    path = ROOT / "hypernodes_daft" / "_local_only.py"
    spec = importlib.util.spec_from_file_location("_local_only", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {**os.environ, **module.keep_local(ROOT / ".local" / "home")}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    ensure_environment()
    command = [*COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(command, cwd=ROOT, env=local_only_environment()).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
