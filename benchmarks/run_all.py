"""Run every benchmark script in this folder, one process each, passing the arguments on.

python benchmarks/run_all.py            # full run
python benchmarks/run_all.py --smoke    # quick check that each script works (CI)
python benchmarks/run_all.py --report docs/benchmarks   # full run, then the report

`--report DIR` saves each script's rows as DIR/results/<script>.json, records the machine
(DIR/results/machine.json: CPUs, memory, platform, Python, daft/ray versions, each script's
time and exit code) and writes DIR/report.md with a bar plot per script (report.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = ("run_all.py", "report.py")


def scripts() -> list[Path]:
    return sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS
    )


def per_script(args: list[str], script: Path) -> list[str]:
    """`--json DIR` becomes `--json DIR/<script>.json`, so scripts do not overwrite each other."""
    if "--json" not in args:
        return args
    at = args.index("--json") + 1
    return [*args[:at], str(Path(args[at]) / f"{script.stem}.json"), *args[at + 1 :]]


def split_report(args: list[str]) -> tuple[Path | None, list[str]]:
    """`--report DIR` taken out of the arguments; the scripts then get `--json DIR/results`."""
    if "--report" not in args:
        return None, args
    at = args.index("--report")
    if at + 1 >= len(args) or "--json" in args:
        raise SystemExit("run_all.py: --report DIR (it sets --json itself)")
    out = Path(args[at + 1])
    rest = [*args[:at], *args[at + 2 :]]
    return out, [*rest, "--json", str(out / "results")]


def main(args: list[str]) -> int:
    command = " ".join(["python benchmarks/run_all.py", *args])
    out, args = split_report(args)
    if out is not None:
        results = out / "results"
        results.mkdir(parents=True, exist_ok=True)
        for old in results.glob("*.json"):  # a script that fails now must not look fresh
            old.unlink()
    failed, durations, codes = [], {}, {}
    started_at, started = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    chosen = scripts()
    for script in chosen:
        print(f"\n## {script.name}\n", flush=True)
        began = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *per_script(args, script)]).returncode
        durations[script.name], codes[script.name] = time.perf_counter() - began, code
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    if out is not None:
        import report

        machine = {
            **report.machine_info(),
            "smoke": "--smoke" in args,
            "command": command,
            "started": started_at,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "total_seconds": time.perf_counter() - started,
            "scripts": [s.name for s in chosen],
            "durations": durations,
            "exit_codes": codes,
        }
        (out / "results" / report.MACHINE).write_text(json.dumps(machine, indent=2) + "\n")
        print(f"\nreport: {report.write_report(out / 'results', out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
