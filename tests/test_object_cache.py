"""DiskCache on object storage (a real S3 server on 127.0.0.1: tests/_s3_server.py) and the
guarantees every DiskCache gives: whole-or-absent entries, batched lookups, resume after a
killed driver, a bounded local size, one clear error when the storage does not answer."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from hypernodes_daft import DaftEngine, DiskCache, HypernodesEngine, Pipeline, node
from hypernodes_daft.cache import CacheUnavailable

ENGINES = {
    "sequential": lambda cache: HypernodesEngine(cache=cache),
    "async": lambda cache: HypernodesEngine(
        node_executor="async", map_executor="async", cache=cache
    ),
    "threaded": lambda cache: HypernodesEngine(map_executor="threaded", cache=cache),
    "parallel": lambda cache: HypernodesEngine(map_executor="parallel", cache=cache),
    "daft": lambda cache: DaftEngine(cache=cache),
}

CALLS: list[int] = []  # x of each call made in this process


@node(output_name="y")
def double(x: int) -> int:
    CALLS.append(x)
    return 2 * x


@node(output_name="z")
async def plus_one(y: int) -> int:
    return y + 1


PIPELINE = Pipeline(nodes=[double, plus_one])


def mapped(engine, n: int) -> list[dict]:
    CALLS.clear()
    return PIPELINE.map(inputs={"x": list(range(n))}, map_over="x", engine=engine)


def map_on(name: str, cache: DiskCache, n: int) -> list[dict]:
    """`mapped` on a new engine of ENGINES, shut down afterwards (its pools)."""
    engine = ENGINES[name](cache)
    try:
        return mapped(engine, n)
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()


# -- the store ----------------------------------------------------------------------------


def test_entries_round_trip_through_s3_and_the_repr_keeps_secrets_out(s3_url):
    cache = DiskCache(s3_url)
    cache.put("ab12", {"values": [1, 2.5, "three"]})
    assert cache.lookup("ab12") == (True, {"values": [1, 2.5, "three"]})
    assert cache.lookup("cd34") == (False, None)
    assert len(cache) == 1
    info = cache.info()
    assert (info.location, info.entries) == (s3_url, 1)
    assert info.bytes > 0 and info.newest is not None
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(cache)
    assert repr(cache) == f"DiskCache({s3_url!r})"


def test_a_pickled_cache_uses_the_settings_of_the_process_that_made_it(s3_url, monkeypatch):
    cache = DiskCache(s3_url)
    cache.put("ab12", 7)
    sent = pickle.dumps(cache)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # a worker without them
    assert pickle.loads(sent).lookup("ab12") == (True, 7)


def test_storage_options_configure_the_cache_in_code(s3_server, s3_url, monkeypatch):
    for name in s3_server.environment:
        monkeypatch.delenv(name)
    cache = DiskCache(s3_url, storage_options=s3_server.options)
    cache.put("ab12", "value")
    assert cache.lookup("ab12") == (True, "value")
    assert s3_server.options["secret_key"] not in repr(cache)


def test_lookup_many_asks_for_the_keys_at_once(s3_url):
    cache = Watched(s3_url)
    keys = [f"{i:04d}" for i in range(40)]
    for key in keys[::2]:
        cache.put(key, key)
    found = cache.lookup_many(keys)
    assert found == [(True, k) if i % 2 == 0 else (False, None) for i, k in enumerate(keys)]
    assert Watched.peak > 1


def test_clear_and_prune_remove_entries(s3_url):
    cache = DiskCache(s3_url)
    for i in range(5):
        cache.put(f"k{i}", i)
    assert cache.prune(older_than=3600) == 0  # all written just now
    assert cache.prune(older_than=0) == 5
    cache.put("k9", 9)
    cache.clear()
    assert len(cache) == 0


# -- engines ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_second_map_makes_no_call_and_gives_the_same_results(s3_url, engine):
    cache = DiskCache(s3_url)
    first = map_on(engine, cache, 60)
    if engine != "parallel":  # its calls are made in the pool's processes
        assert sorted(CALLS) == list(range(60))
    assert len(cache) == 120  # both nodes, every item
    second = map_on(engine, DiskCache(s3_url), 60)
    assert CALLS == []
    assert second == first == [{"y": 2 * x, "z": 2 * x + 1} for x in range(60)]
    assert len(cache) == 120


@pytest.mark.parametrize("engine", ["daft", "async"])
def test_lookups_overlap_where_calls_do(s3_url, engine):
    mapped(ENGINES[engine](DiskCache(s3_url)), 40)
    Watched.peak = 0
    mapped(ENGINES[engine](Watched(s3_url)), 40)
    assert CALLS == []
    assert Watched.peak > 1


def test_daft_stores_each_row_as_its_call_returns_not_at_the_end_of_the_batch(tmp_path):
    cache = DiskCache(tmp_path)
    seen: list[int] = []

    @node(output_name="y")
    def count_entries(x: int) -> int:
        seen.append(len(cache))  # the rows before this one, already stored
        return x

    Pipeline(nodes=[count_entries]).map(
        inputs={"x": list(range(8))}, map_over="x", engine=DaftEngine(cache=cache)
    )
    assert sorted(seen) == list(range(8))


# -- whole or absent ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_damaged_entry_is_a_miss_recomputed_and_rewritten_with_one_warning(
    tmp_path, s3_url, where
):
    location = s3_url if where == "s3" else str(tmp_path / "cache")
    engine = HypernodesEngine(cache=DiskCache(location))
    mapped(engine, 4)
    cache = DiskCache(location)
    damaged = []
    for blob in list(cache._store.blobs()):
        data = cache._store.read(blob.name)
        cache._store.write(blob.name, data[: len(data) // 2])  # truncated
        damaged.append(blob.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = mapped(HypernodesEngine(cache=DiskCache(location)), 4)
    assert again == [{"y": 2 * x, "z": 2 * x + 1} for x in range(4)]
    assert sorted(CALLS) == [0, 1, 2, 3]  # every entry damaged: every call made again
    corrupt = [w for w in caught if "truncated or corrupt" in str(w.message)]
    assert len(corrupt) == 1
    assert all(cache.lookup(n.split("/")[1][:-4])[0] for n in damaged)  # rewritten whole


WRITER = """
import sys
from hypernodes_daft import DiskCache
cache = DiskCache(sys.argv[1])
print("writing", flush=True)
cache.put("ab" + "0" * 38, b"x" * (400 * 2**20))
"""


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_writer_killed_mid_put_leaves_no_entry_a_reader_accepts(tmp_path, s3_url, where):
    location = s3_url if where == "s3" else str(tmp_path / "cache")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, location], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "writing\n"
    if where == "local":  # killed once its bytes are going into the temporary file
        deadline = time.monotonic() + 60
        while not list(Path(location).glob("*/.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert writer.poll() is None, "the put finished before it could be killed"
    else:
        time.sleep(1.0)  # sending 400 MB to the server takes about 10 s here
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    cache = DiskCache(location)
    assert cache.lookup("ab" + "0" * 38) == (False, None)


def test_two_writers_of_one_key_leave_one_whole_entry(s3_url):
    caches = [DiskCache(s3_url) for _ in range(8)]
    values = [bytes([i]) * 200_000 for i in range(8)]
    threads = [
        threading.Thread(target=c.put, args=("ab12", v))
        for c, v in zip(caches, values, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found, value = DiskCache(s3_url).lookup("ab12")
    assert found and value in values


# -- resume after the driver is killed ----------------------------------------------------

DRIVER = """
import sys, time, uuid
from pathlib import Path
from hypernodes_daft import DaftEngine, DiskCache, Pipeline, node

marks = Path(sys.argv[2])

@node(output_name="y")
def slow_square(x: int) -> int:
    (marks / f"start-{x}-{uuid.uuid4().hex}").touch()
    time.sleep(0.02)
    (marks / f"end-{x}-{uuid.uuid4().hex}").touch()
    return x * x

engine = DaftEngine(cache=DiskCache(sys.argv[1]), partitions=4)
rows = Pipeline(nodes=[slow_square]).map(inputs={"x": list(range(200))}, map_over="x",
                                         engine=engine)
print(sum(r["y"] for r in rows), flush=True)
"""


def test_a_driver_killed_mid_map_resumes_without_repeating_a_stored_call(tmp_path, s3_url):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    marks = tmp_path / "marks"
    marks.mkdir()
    first = subprocess.Popen([sys.executable, str(script), s3_url, str(marks)])
    deadline = time.monotonic() + 120
    while len(list(marks.glob("end-*"))) < 60 and time.monotonic() < deadline:
        assert first.poll() is None, "the first run ended before it was killed"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    started = {p.name.split("-")[1] for p in marks.glob("start-*")}
    ended = {p.name.split("-")[1] for p in marks.glob("end-*")}
    stored = len(DiskCache(s3_url))
    assert 60 <= len(ended) < 200
    assert len(ended) - stored <= 8  # returned, its write not yet done at the kill
    for mark in marks.iterdir():
        mark.unlink()

    second = subprocess.run(
        [sys.executable, str(script), s3_url, str(marks)], capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert int(second.stdout) == sum(x * x for x in range(200))  # an uninterrupted run's
    recomputed = [p.name.split("-")[1] for p in marks.glob("start-*")]
    assert len(recomputed) == 200 - stored  # none stored is called again
    assert len(set(recomputed)) == len(recomputed)
    print(  # with -s: what the kill left and what the re-run made
        f"started {len(started)}, ended {len(ended)}, stored {stored} at the kill; "
        f"the re-run made {len(recomputed)} calls"
    )
    assert len(started) + len(recomputed) <= 200 + (len(started) - stored)


# -- a bounded local cache ----------------------------------------------------------------


def test_a_bounded_cache_stays_under_its_size_and_keeps_the_recently_used(tmp_path):
    entry = len(pickle.dumps(b"x" * 10_000)) + 100  # about one entry
    bound = 30 * entry  # a third of 90 entries

    @node(output_name="blob")
    def blob(x: int) -> bytes:
        return bytes([x % 256]) * 10_000

    cache = DiskCache(tmp_path, max_size=bound)
    pipeline = Pipeline(nodes=[blob], engine=HypernodesEngine(cache=cache))
    pipeline.map(inputs={"x": list(range(90))}, map_over="x")
    assert cache.info().bytes <= bound
    kept = _entries(cache)  # x -> key
    assert 20 <= len(kept) <= 30
    assert sorted(kept) == list(range(90 - len(kept), 90))  # the most recently written

    time.sleep(0.02)
    again = sorted(kept)[:5]
    for x in again:  # used again: now the most recent
        assert cache.lookup(kept[x])[0]
    pipeline.map(inputs={"x": list(range(90, 110))}, map_over="x")
    assert cache.info().bytes <= bound
    assert set(again) <= set(_entries(cache))


def _entries(cache: DiskCache) -> dict[int, str]:
    """The x of each stored blob (its first byte), with its key."""
    found = {}
    for blob in cache._store.blobs():
        key = blob.name.split("/")[1].removesuffix(".pkl")
        hit, value = cache.lookup(key)
        if hit:
            found[value[0]] = key
    return found


def test_a_size_that_cannot_be_read_is_an_error_naming_it(tmp_path, s3_url):
    with pytest.raises(ValueError, match=r"max_size '10 gigs' is not a size"):
        DiskCache(tmp_path, max_size="10 gigs")
    with pytest.raises(ValueError, match="max_size bounds a local cache"):
        DiskCache(s3_url, max_size="1GiB")


# -- storage that does not answer ---------------------------------------------------------


def _no_call_made(engine_name: str, cache: DiskCache) -> str:
    CALLS.clear()
    with pytest.raises(CacheUnavailable) as raised:
        mapped(ENGINES[engine_name](cache), 5)
    assert CALLS == []  # before any node runs
    return str(raised.value)


@pytest.mark.parametrize("engine", ["sequential", "daft"])
def test_an_unreachable_endpoint_is_one_error_before_any_node_runs(monkeypatch, engine):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    message = _no_call_made(engine, DiskCache("s3://some-bucket/cache"))
    assert "s3://some-bucket/cache" in message and "connect" in message.lower()
    assert "do-not-print-me" not in message


def test_a_missing_bucket_is_one_error_naming_it(s3_url):
    url = "s3://no-such-bucket-here/cache"
    message = _no_call_made("sequential", DiskCache(url))
    assert message == f"DiskCache({url!r}): the bucket 'no-such-bucket-here' does not exist"


def test_denied_credentials_are_one_error_naming_the_url(monkeypatch):
    from _s3_server import S3Server

    server = S3Server.start(auth=True)  # every request is checked: the key is unknown
    try:
        server.create_bucket("guarded")
        for name, value in server.environment.items():
            monkeypatch.setenv(name, value)
        message = _no_call_made("daft", DiskCache("s3://guarded/cache"))
    finally:
        server.stop()
    assert message.startswith("DiskCache('s3://guarded/cache'): ")
    assert "403" in message or "denied" in message.lower() or "invalid" in message.lower()
    assert server.environment["AWS_SECRET_ACCESS_KEY"] not in message


class Watched(DiskCache):
    """A DiskCache that records the most lookups in flight at once (in this process)."""

    peak = 0
    _now = 0
    _watch = threading.Lock()

    def lookup(self, key: str):
        with Watched._watch:
            Watched._now += 1
            Watched.peak = max(Watched.peak, Watched._now)
        try:
            return super().lookup(key)
        finally:
            with Watched._watch:
                Watched._now -= 1


def test_the_cache_protocol_of_hypernodes_0_4_still_works(tmp_path: Path):
    cache = DiskCache(tmp_path)
    cache.put("ab12", None)
    assert cache.has("ab12") and cache.get("ab12") is None


@pytest.mark.parametrize("engine", ["sequential", "daft"])
def test_metrics_report_the_cache_hits_misses_and_size(s3_url, engine):
    from hypernodes_daft.callbacks import MetricsCallback

    metrics = MetricsCallback()
    pipeline = Pipeline(nodes=[double, plus_one], callbacks=[metrics])
    run = ENGINES[engine](DiskCache(s3_url))
    pipeline.map(inputs={"x": list(range(30))}, map_over="x", engine=run)
    first = metrics.cache_summary()
    assert (first["hits"], first["misses"], first["entries"]) == (0, 60, 60)
    pipeline.map(inputs={"x": list(range(30))}, map_over="x", engine=run)
    second = metrics.cache_summary()
    assert (second["location"], second["hits"], second["misses"]) == (s3_url, 60, 60)
    assert second["entries"] == 60 and second["bytes"] > 60 * 20
    assert f"cache {s3_url}: 60 hits, 60 misses; 60 entries, " in metrics.table()


def test_metrics_without_a_cache_report_none():
    from hypernodes_daft.callbacks import MetricsCallback

    metrics = MetricsCallback()
    Pipeline(nodes=[double], callbacks=[metrics]).map(inputs={"x": [1, 2]}, map_over="x")
    assert metrics.cache_summary() is None and "\ncache " not in metrics.table()


@node(output_name="y")
def fails_on_odd(x: int) -> int:
    CALLS.append(x)
    if x % 2:
        raise ValueError(f"{x} is odd")
    return 2 * x


@pytest.mark.parametrize("engine", ["async", "daft"])
def test_failed_rows_store_nothing_and_the_others_stay_stored(s3_url, engine):
    pipeline = Pipeline(nodes=[fails_on_odd])
    run = ENGINES[engine](DiskCache(s3_url))
    first = pipeline.map({"x": list(range(10))}, map_over="x", engine=run, on_error="collect")
    assert len(first.errors) == 5 and len(DiskCache(s3_url)) == 5  # the even rows only
    CALLS.clear()
    again = pipeline.map({"x": list(range(10))}, map_over="x", engine=run, on_error="collect")
    assert sorted(CALLS) == [1, 3, 5, 7, 9]  # only the failed rows are called again
    assert list(again) == list(first)
