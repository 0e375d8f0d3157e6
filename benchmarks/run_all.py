"""Run every benchmark script in this folder, one process each, passing the arguments on.

python benchmarks/run_all.py            # full run
python benchmarks/run_all.py --smoke    # quick check that each script works (CI)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith(("_", "run_all")))


def per_script(args: list[str], script: Path) -> list[str]:
    """`--json DIR` becomes `--json DIR/<script>.json`, so scripts do not overwrite each other."""
    if "--json" not in args:
        return args
    at = args.index("--json") + 1
    return [*args[:at], str(Path(args[at]) / f"{script.stem}.json"), *args[at + 1 :]]


def main(args: list[str]) -> int:
    failed = []
    for script in scripts():
        print(f"\n## {script.name}\n", flush=True)
        if subprocess.run([sys.executable, str(script), *per_script(args, script)]).returncode:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
