"""Keep Daft and Ray from contacting outside addresses (telemetry, usage reports, cloud
metadata probes). Tests, benchmarks, examples and CI call `keep_local()` before Daft or Ray
is imported; see docs/ for what each setting stops.

    from hypernodes_daft._local_only import keep_local
    keep_local()
    import daft
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SETTINGS = {
    "DO_NOT_TRACK": "1",  # Daft telemetry
    "DAFT_ANALYTICS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep Ray on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
}


def keep_local(home: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Set the variables in this process's environment and return them.

    Ray's head probes the cloud metadata address unless `$HOME/ray_bootstrap_config.yaml`
    exists, so HOME is pointed at a directory of ours holding one (by default one fixed
    directory under the system's temp dir, created once and reused).
    """
    home_dir = Path(home) if home else Path(tempfile.gettempdir()) / "hypernodes-daft-home"
    home_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = home_dir / "ray_bootstrap_config.yaml"
    if not bootstrap.exists():
        bootstrap.write_text("{}\n")
    settings = {**SETTINGS, "HOME": str(home_dir)}
    os.environ.update(settings)
    return settings


if __name__ == "__main__":  # `python hypernodes_daft/_local_only.py DIR` prints shell exports
    import sys

    for key, value in keep_local(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"export {key}={value}")
