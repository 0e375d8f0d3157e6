"""Request batching (`@node(batch_size=N, batch_delay=S)`) against a real HTTP service.

The node takes a list of ids and makes one POST /batch for them (tests/_http_service.py);
the service records the ids of every batch request it gets, so the grouping is counted
where it happens, not where the client says it happened. Blocking nodes use http.client,
async nodes aiohttp.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import pytest
from _http_service import (
    TRANSIENT,
    Sessions,
    post_batch_async,
    post_batch_sync,
    value_of,
)

from hypernodes_daft import (
    DaftEngine,
    ExecutionError,
    HypernodesEngine,
    MemoryCache,
    Pipeline,
    node,
)
from hypernodes_daft.runtime.grouping import grouped

ENGINES = {
    "sequential": lambda: HypernodesEngine(),
    # more threads than a group holds, so groups can fill
    "threaded": lambda: HypernodesEngine(map_executor="threaded", max_workers=64),
    "async": lambda: HypernodesEngine(map_executor="async", max_concurrency=100),
    "parallel": lambda: HypernodesEngine(map_executor="parallel", max_workers=2),
    "daft": lambda: DaftEngine(max_concurrency=100),
}
GROUPING = [
    ("async", "async"),
    ("async", "sync"),
    ("threaded", "sync"),
    ("threaded", "async"),
    ("daft", "async"),
    ("daft", "sync"),
]
SIZE = 32
IDS = list(range(200))


def lookup_node(url: str, kind: str, sessions: Sessions | None = None, **options: Any) -> Any:
    """A node `lookup(item: list[int]) -> list[int]` making one batch request per call."""
    options = {"batch_size": SIZE, **options}
    if kind == "sync":

        @node(output_name="value", **options)
        def lookup(item: list[int]) -> list[int]:
            return post_batch_sync(url, item)

        return lookup

    assert sessions is not None

    @node(output_name="value", **options)
    async def alookup(item: list[int]) -> list[int]:
        return await post_batch_async(sessions.get(), url, item)

    return alookup


def values(ids: Any) -> list[dict[str, int]]:
    return [{"value": value_of(i)} for i in ids]


def mapped(lookup: Any, engine: Any, **options: Any) -> Any:
    return Pipeline(nodes=[lookup]).map({"item": IDS}, "item", engine=engine, **options)


# -- grouping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine_name", "kind"), GROUPING)
def test_concurrent_items_go_out_in_few_batch_requests(
    service, sessions, engines, engine_name, kind
):
    service.configure(latency=0.01)
    lookup = lookup_node(service.url, kind, sessions)
    assert mapped(lookup, engines(engine_name)) == values(IDS)  # each item its own result
    stats = service.stats()
    sizes = [len(batch) for batch in stats.batches]
    assert len(sizes) <= math.ceil(len(IDS) / SIZE) + 3, sizes
    assert max(sizes) <= SIZE, sizes
    assert sorted(i for batch in stats.batches for i in batch) == IDS  # each id asked once
    assert stats.total == len(stats.batches)  # no request but the batch requests


@pytest.mark.parametrize(
    ("engine_name", "kind"),
    [("sequential", "sync"), ("sequential", "async"), ("parallel", "sync"), ("parallel", "async")],
)
def test_items_run_one_by_one_call_at_once_without_waiting(
    service, sessions, engines, engine_name, kind
):
    """Nothing could join a group: each call goes alone, at once. Waiting `batch_delay`
    per item would take 200 * 0.5 s (100 s; half that on 2 processes)."""
    lookup = lookup_node(service.url, kind, sessions, batch_delay=0.5)
    started = time.perf_counter()
    assert mapped(lookup, engines(engine_name)) == values(IDS)
    assert time.perf_counter() - started < 10
    batches = service.stats().batches
    assert sorted(batches) == [[i] for i in IDS]
    if engine_name == "sequential":
        assert batches == [[i] for i in IDS]  # in item order


def test_a_run_calls_at_once_with_a_list_of_one(service, sessions, engines):
    """`run` is one item, even on an engine whose maps group calls."""
    lookup = lookup_node(service.url, "async", sessions, batch_delay=5.0)
    started = time.perf_counter()
    result = Pipeline(nodes=[lookup]).run({"item": 7}, engine=engines("async"))
    assert result == {"value": value_of(7)} and time.perf_counter() - started < 2.5
    assert service.stats().batches == [[7]]


@pytest.mark.parametrize(("engine_name", "kind"), [("async", "async"), ("threaded", "sync")])
def test_max_concurrency_bounds_the_batch_requests_in_flight(
    service, sessions, engines, engine_name, kind
):
    service.configure(latency=0.05)
    lookup = lookup_node(service.url, kind, sessions, batch_size=8, max_concurrency=2)
    assert mapped(lookup, engines(engine_name)) == values(IDS)
    stats = service.stats()
    assert stats.peak == 2  # grouped calls counted, and the bound reached
    assert max(len(batch) for batch in stats.batches) <= 8


# -- failures ---------------------------------------------------------------------------------


def failed_and_group(results: Any, batches: list[list[int]], poisoned: int) -> tuple[set, set]:
    """(the items whose result is an error record, the items sent with `poisoned`)."""
    failed = {i for i, entry in enumerate(results) if "_error" in entry}
    return failed, set(next(batch for batch in batches if poisoned in batch))


@pytest.mark.parametrize(("engine_name", "kind"), [*GROUPING, ("sequential", "sync")])
def test_a_failed_batch_request_fails_exactly_the_items_of_its_group(
    service, sessions, engines, engine_name, kind
):
    service.configure(fail_ids={13: 1})  # any batch holding id 13 gets a 503
    lookup = lookup_node(service.url, kind, sessions)
    results = mapped(lookup, engines(engine_name), on_error="collect")
    failed, group = failed_and_group(results, service.stats().batches, 13)
    assert failed == group and 13 in failed
    if engine_name != "sequential":
        assert len(group) > 1  # the group's other items fail with it
    for index, entry in enumerate(results):
        if index not in failed:
            assert entry == {"value": value_of(index)}
            continue
        record = entry["_error"]
        assert (record.index, record.node, record.inputs) == (index, lookup.name, f"item={index}")
        assert (record.error_type, record.message) == ("ServiceError", "HTTP 503 for item 13")


@pytest.mark.parametrize(("engine_name", "kind"), [("async", "async"), ("daft", "sync")])
def test_a_failed_batch_request_raises_by_default(service, sessions, engines, engine_name, kind):
    service.configure(fail_ids={13: 1})
    lookup = lookup_node(service.url, kind, sessions)
    with pytest.raises(ExecutionError, match="HTTP 503 for item 13") as caught:
        mapped(lookup, engines(engine_name))
    assert caught.value.node_name == lookup.name


@pytest.mark.parametrize(("engine_name", "kind"), [("async", "async"), ("threaded", "sync")])
def test_retries_are_per_item_a_failed_item_joins_a_later_group(
    service, sessions, engines, engine_name, kind
):
    service.configure(fail_ids={13: 1})
    options = {"retries": 2, "backoff": 0.01, "retry_on": TRANSIENT}
    lookup = lookup_node(service.url, kind, sessions, **options)
    assert mapped(lookup, engines(engine_name)) == values(IDS)
    stats = service.stats()
    first, *later = [batch for batch in stats.batches if 13 in batch]
    assert len(later) == 1 and stats.per_id[13] == 2
    asked_again = {i for i, n in stats.per_id.items() if n == 2}
    assert asked_again == set(first)  # the failed group's items, not the others


@pytest.mark.parametrize("engine_name", ["sequential", "async", "threaded", "daft"])
def test_a_result_of_the_wrong_length_is_an_error_naming_the_node(service, engines, engine_name):
    url = service.url

    @node(output_name="value", batch_size=SIZE)
    def short(item: list[int]) -> list[int]:
        return post_batch_sync(url, item)[:-1]  # one result missing

    with pytest.raises(ExecutionError) as caught:
        mapped(short, engines(engine_name))
    message = str(caught.value)
    found = re.search(r"node 'short' .*expected (\d+), got (\d+)", message)
    assert found is not None, message
    expected, got = map(int, found.groups())
    assert 1 <= expected <= SIZE and got == expected - 1


# -- cache and pickling -----------------------------------------------------------------------


CACHED = {
    "async": lambda: HypernodesEngine(map_executor="async", cache=MemoryCache()),
    "daft": lambda: DaftEngine(cache=MemoryCache()),
}


@pytest.mark.parametrize(("engine_name", "kind"), [("async", "async"), ("daft", "sync")])
def test_cached_items_are_not_asked_again(service, sessions, engine_name, kind):
    """The cache works per item: only the items it does not hold are grouped and sent."""
    engine = CACHED[engine_name]()
    lookup = lookup_node(service.url, kind, sessions)
    first = Pipeline(nodes=[lookup]).map({"item": IDS[:100]}, "item", engine=engine)
    assert first == values(IDS[:100])
    service.reset()
    assert mapped(lookup, engine) == values(IDS)  # 100 from the cache, 100 asked for
    assert sorted(i for batch in service.stats().batches for i in batch) == IDS[100:]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_grouper_travels_and_groups_again_after_unpickling(service, kind):
    """A grouping function sent to another process (as cloudpickle sends nodes) keeps its
    list function and settings, not the groups, locks or loops of the process it left."""
    url = service.url

    def lookup(item: list[int]) -> list[int]:
        return post_batch_sync(url, item)

    async def alookup(item: list[int]) -> list[int]:
        return await asyncio.to_thread(post_batch_sync, url, item)

    func = alookup if kind == "async" else lookup
    per_item = grouped(func, "lookup", ("item",), kind == "async", size=4, delay=0.5)
    first = asyncio.run(per_item(item=1)) if kind == "async" else per_item(item=1)
    assert first == value_of(1)  # alone for 0.5 s, then sent
    travelled = cloudpickle.loads(cloudpickle.dumps(per_item))
    ids = list(range(2, 10))
    if kind == "async":

        async def together() -> list[int]:  # positionally, as a Daft function would call
            return await asyncio.gather(*(travelled(i) for i in ids))

        answers = asyncio.run(together())
    else:
        with ThreadPoolExecutor(len(ids)) as pool:
            answers = list(pool.map(travelled, ids))
    assert answers == [value_of(i) for i in ids]
    batches = service.stats().batches
    assert batches[0] == [1] and sorted(len(b) for b in batches[1:]) == [4, 4], batches
