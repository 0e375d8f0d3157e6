"""I/O-bound maps against a real local HTTP service, vs a hand-written aiohttp client (issue 8).

2,000 GET requests (200 in smoke mode) to the local aiohttp service of
tests/_http_service.py, run in a child process so its work does not share our GIL, each
answered after 50 ms, at most 100 in flight, every result checked:
- baseline: a hand-written client, one aiohttp session, `asyncio.Semaphore(100)`, `gather`;
- `@node(max_concurrency=100)` async aiohttp node (one session per event loop, shared) on
  `HypernodesEngine(map_executor="async")`: <= 1.25x the baseline;
- the same node on `DaftEngine()`: <= 1.25x the baseline;
- reported: the same node with `retries=3, timeout=5, breaker=CircuitBreaker(...)`, and a
  node opening a new aiohttp session (and connection) per call.
The service counts the requests it gets: each variant must send exactly one per item, with
at most 100 at once.
"""

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports daft or ray: only 127.0.0.1 may be contacted

import asyncio  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import Budget, Report, Timing, best_of, closing, parse_args  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # the test service
from _http_service import (  # noqa: E402
    RemoteService,
    Sessions,
    get_async,
    new_session,
    value_of,
)

from hypernodes_daft import (  # noqa: E402
    CircuitBreaker,
    DaftEngine,
    HypernodesEngine,
    Pipeline,
    node,
)

LIMIT = 100


def hand_written(url: str, ids: list[int], repeats: int) -> Timing:
    """Best-of-N of one aiohttp session + Semaphore(LIMIT) + gather, on one long-lived loop
    (so its connections are as warm as the engines' are)."""
    loop = asyncio.new_event_loop()

    async def open_session():
        return new_session()

    session = loop.run_until_complete(open_session())

    async def fetch_all() -> tuple[float, list[int]]:
        gate = asyncio.Semaphore(LIMIT)

        async def fetch(item: int) -> int:
            async with gate:
                return await get_async(session, url, item)

        start = time.perf_counter()
        results = await asyncio.gather(*(fetch(i) for i in ids))
        return time.perf_counter() - start, results

    try:
        return best_of(lambda: loop.run_until_complete(fetch_all()), repeats, self_timed=True)
    finally:
        loop.run_until_complete(session.close())
        loop.close()


def shared_session_node(url: str, sessions: Sessions, **options):
    @node(output_name="value", max_concurrency=LIMIT, **options)
    async def fetch(item: int) -> int:
        return await get_async(sessions.get(), url, item)

    return fetch


def session_per_call_node(url: str):
    @node(output_name="value", max_concurrency=LIMIT)
    async def fetch(item: int) -> int:
        async with new_session() as session:
            return await get_async(session, url, item)

    return fetch


def checked(service: RemoteService, ids: list[int], measure) -> tuple[Timing, str | None]:
    """`measure()` with the service's counters reset first; what went wrong, if anything:
    wrong values, not exactly one request per item and call, more than LIMIT at once."""
    service.reset()
    timing = measure()
    calls = 1 + len(timing.times)  # the warm-up call and the timed ones
    stats = service.stats()
    results = [r["value"] if isinstance(r, dict) else r for r in timing.result]
    if results != [value_of(i) for i in ids]:
        return timing, "wrong values"
    if stats.total != calls * len(ids):
        return timing, f"{stats.total} requests for {calls} x {len(ids)} items"
    if stats.peak > LIMIT:
        return timing, f"{stats.peak} requests at once, over {LIMIT}"
    return timing, None


def main() -> int:
    args = parse_args(__doc__, default_repeat=3)
    count, latency = (200, 0.01) if args.smoke else (2000, 0.05)
    ids = list(range(count))
    inputs = {"item": ids}
    report = Report("I/O-bound maps against a local HTTP service", args)
    workload = f"GET x {count:,}, {latency * 1e3:g} ms latency, <= {LIMIT} in flight"
    budget = Budget("ratio_max", 1.25)
    sessions = Sessions()

    with RemoteService.start(latency=latency) as service:
        url = service.url

        timing, wrong = checked(service, ids, lambda: hand_written(url, ids, args.repeat))
        base = report.add(
            workload, f"aiohttp + Semaphore({LIMIT}) + gather", timing, count, wrong=wrong
        )

        def mapped(fetch, engine):
            pipeline = Pipeline(nodes=[fetch])
            with closing(engine):
                return best_of(lambda: pipeline.map(inputs, "item", engine=engine), args.repeat)

        def resilient_node():  # a fresh breaker for each variant
            return shared_session_node(
                url, sessions, retries=3, backoff=0.01, timeout=5, breaker=CircuitBreaker(5, 1)
            )

        variants = [
            (
                'node, HypernodesEngine(map_executor="async")',
                lambda: shared_session_node(url, sessions),
                lambda: HypernodesEngine(map_executor="async"),
                budget,
            ),
            (
                "node, DaftEngine()",
                lambda: shared_session_node(url, sessions),
                DaftEngine,
                budget,
            ),
            (
                'node + retries=3, timeout=5, breaker; HypernodesEngine(map_executor="async")',
                resilient_node,
                lambda: HypernodesEngine(map_executor="async"),
                None,
            ),
            (
                "node + retries=3, timeout=5, breaker; DaftEngine()",
                resilient_node,
                DaftEngine,
                None,
            ),
            (
                'node, new session per call; HypernodesEngine(map_executor="async")',
                lambda: session_per_call_node(url),
                lambda: HypernodesEngine(map_executor="async"),
                None,
            ),
        ]
        for variant, make_node, make_engine, row_budget in variants:
            fetch, engine = make_node(), make_engine()
            timing, wrong = checked(service, ids, lambda f=fetch, e=engine: mapped(f, e))
            report.add(workload, variant, timing, count, base, row_budget, wrong=wrong)
        sessions.close()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
