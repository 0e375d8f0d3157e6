"""A map of slow async and sync nodes over a DiskCache, run as its own process by
tests/test_cancel.py, which interrupts it half-way (SIGINT or SIGTERM).

    python tests/_interrupted_map.py ENGINE CACHE_DIR LOG_DIR N_ITEMS [collect]

Each node call appends a line to LOG_DIR/calls (its start with the time), LOG_DIR/done
(when it returns) and for the async node, in its `finally`, to LOG_DIR/finally;
LOG_DIR/stopped gets the time the map returned or raised; LOG_DIR/children the pids of
the processes the calls ran in. The results go to stdout as one JSON line: the outputs of
the finished items and the indices cancelled. ENGINE "ray" runs on the cluster at
$HYPERNODES_TEST_RAY_ADDRESS.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from hypernodes_daft import DaftEngine, DiskCache, HypernodesEngine, Pipeline, node

ENGINE, CACHE, LOG, N = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
COLLECT = sys.argv[5:] == ["collect"]


def log(name: str, line: str) -> None:
    with open(os.path.join(LOG, name), "a") as file:
        file.write(line + "\n")


@node(output_name="fetched")
async def fetch(x: int) -> int:
    log("calls", f"fetch {x} {time.time()}")
    try:
        await asyncio.sleep(0.3)
        log("done", f"fetch {x}")
        return x * 10
    finally:
        log("finally", f"fetch {x}")


@node(output_name="squared")
def square(fetched: int) -> int:
    log("calls", f"square {fetched} {time.time()}")
    log("children", str(os.getpid()))
    time.sleep(0.1)
    log("done", f"square {fetched}")
    return fetched * fetched


ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=4),
    "async": lambda: HypernodesEngine(map_executor="async", max_concurrency=4),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(max_concurrency=4),
    "ray": lambda: DaftEngine(
        runner="ray", address=os.environ["HYPERNODES_TEST_RAY_ADDRESS"], max_concurrency=4
    ),
}

if __name__ == "__main__":
    engine = ENGINES[ENGINE]()
    pipeline = Pipeline(nodes=[fetch, square], engine=engine, cache=DiskCache(CACHE))
    on_error = "collect" if COLLECT else "raise"
    log("started", str(os.getpid()))
    try:
        results = pipeline.map(inputs={"x": list(range(N))}, map_over="x", on_error=on_error)
    finally:
        log("stopped", str(time.time()))
    print(
        json.dumps(
            {
                "ok": {i: r for i, r in enumerate(results) if "_error" not in r},
                "cancelled": [c.index for c in results.cancelled],
            }
        ),
        flush=True,
    )
