"""Caching node results per node and per item: keys, value hashing and the stores.

    engine = HypernodesEngine(cache=DiskCache(".cache"))    # or DaftEngine(cache=...)
    pipeline.map(inputs=..., map_over="x", engine=engine)   # second call: no node runs

A node call's key is the hash of its *lineage* (the node's name, outputs and code hash, and
the lineages of the nodes that produced its arguments: editing a node re-runs it and
everything downstream) and of its argument values, hashed by content (`hash_value`).
`@node(cache=False)` opts a node out. A value that cannot be hashed stably (an open file,
a lock) skips caching for that call, with one warning per node.

`DiskCache` keeps entries under a local directory or an object-store URL (`_storage.py`),
each written whole (a renamed file, one PUT) with a checksum: a writer killed mid-put, two
writers of one key, a truncated file never give a reader a wrong value. Each call's entry is
stored when the call returns, so a killed job re-run computes only what had not finished
(docs/caching.md: checkpointing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from ._hashing import hash_code
from ._storage import SUFFIX, Blob, CacheUnavailable, open_store, storage_cause
from .resources import format_bytes, parse_memory

__all__ = ["CacheInfo", "CacheUnavailable", "DiskCache", "MemoryCache", "call_key", "hash_value"]


class UnhashableInput(TypeError):
    """A value has no stable content hash (its identity, not its content, defines it)."""


class MemoryCache:
    """Results kept in this process's memory (tests, notebooks)."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            if key in self._entries:
                return True, self._entries[key]
        return False, None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._entries[key] = value

    def get(self, key: str) -> Any:
        return self.lookup(key)[1]

    def has(self, key: str) -> bool:
        return self.lookup(key)[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DiskCache:
    """Results under a local directory or an object-store URL, one entry per call.

        DiskCache(".cache")                                   # a local directory
        DiskCache(".cache", max_size="10GiB")                 # least recently used go first
        DiskCache("s3://bucket/runs/cache")                   # every machine of a cluster
        DiskCache("s3://bucket/c", storage_options={"endpoint_override": "http://minio:9000"})

    An entry is whole or absent: it is written in one piece (a renamed file, one PUT) and
    carries a checksum, so a writer killed mid-put, two writers of one key or a truncated
    file never give a reader a wrong value: a damaged entry is a miss (one warning), then
    recomputed and rewritten. An object store's requests run on `concurrency` threads
    (`lookup_many`, `put_soon`). S3 settings come from the standard AWS variables
    (AWS_ENDPOINT_URL for MinIO or another S3-compatible server), read where the cache is
    made and sent with it to the workers; `storage_options` overrides them. Secrets never
    appear in the repr or in errors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        concurrency: int = 32,
    ):
        self.location = os.fspath(path)
        self._store = open_store(self.location, storage_options)
        self.remote = self._store.remote
        if not self.remote:
            self.path = Path(self._store.location)
        self.max_size = None if max_size is None else self._size(max_size)
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Any] = {}  # put_soon's values until stored: read your writes
        self._lock = threading.Lock()
        self._checked = False

    def _size(self, max_size: int | str) -> int:
        if self.remote:
            raise ValueError(
                f"DiskCache({self.location!r}): max_size bounds a local cache; on object "
                "storage use the bucket's lifecycle rules or `hypernodes-daft cache prune`"
            )
        return parse_memory(max_size, f"DiskCache({self.location!r})", "max_size")

    # -- entries ---------------------------------------------------------------------------

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(True, value) when `key` holds a whole, readable entry, else (False, None)."""
        with self._lock:
            if key in self._pending:
                return True, self._pending[key]
        name = _name(key)
        data = self._store.read(name)
        value = _MISSING if data is None else self._value(key, data)
        if value is _MISSING:
            return False, None
        if self.max_size is not None:
            self._store.touch(name)  # most recently used: evicted last
        return True, value

    def lookup_many(self, keys: list[str]) -> list[tuple[bool, Any]]:
        """`lookup` of each key; on an object store, the requests at once."""
        if not self.remote or len(keys) < 2:
            return [self.lookup(key) for key in keys]
        return list(self._threads().map(self.lookup, keys))

    def put(self, key: str, value: Any) -> None:
        data = _framed(value)
        self._store.write(_name(key), data)
        if self.max_size is not None:
            self._store.touch(_name(key))
            _budget(self._store, self.max_size).add(len(data))

    def put_soon(self, key: str, value: Any) -> Future[None]:
        """`put`, on an object store started in the background (the value is served to
        this process's lookups meanwhile); a failed write is a warning, not an error: the
        result stands, it is just not kept. A local put is done before this returns."""
        if not self.remote:
            self.put(key, value)
            done: Future[None] = Future()
            done.set_result(None)
            return done
        with self._lock:
            self._pending[key] = value
        return self._threads().submit(self._put_pending, key, value)

    def _put_pending(self, key: str, value: Any) -> None:
        try:
            self.put(key, value)
        except Exception as error:
            _warn_once(
                self.location,
                f"DiskCache({self.location!r}): an entry was not stored "
                f"({type(error).__name__}: {storage_cause(error)}); results are kept, "
                "later failures are not reported",
            )
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def _value(self, key: str, data: bytes) -> Any:
        payload = _unframed(data)
        if payload is None:
            _warn_once(
                self.location,
                f"DiskCache({self.location!r}): entry {key} is "
                "truncated or corrupt; it is computed again and rewritten (further "
                "damaged entries are not reported)",
            )
            return _MISSING
        try:
            return pickle.loads(payload)
        except (EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return _MISSING  # unreadable here (a class gone): computed again, rewritten

    def get(self, key: str) -> Any:
        return self.lookup(key)[1]

    def has(self, key: str) -> bool:
        return self.lookup(key)[0]

    # -- the whole cache ---------------------------------------------------------------------

    def check(self) -> None:
        """Raise CacheUnavailable, naming the location and the cause, unless the storage
        answers (an unreachable endpoint, a missing bucket, denied credentials). Checked
        once per cache object: engines call it before any node runs."""
        if not self._checked:
            self._store.check()
            self._checked = True

    def info(self) -> CacheInfo:
        """How many entries, how many bytes, the oldest and newest use (epoch seconds)."""
        blobs = list(self._store.blobs())
        times = [b.modified for b in blobs]
        return CacheInfo(
            self.location,
            len(blobs),
            sum(b.size for b in blobs),
            min(times, default=None),
            max(times, default=None),
            self.max_size,
        )

    def prune(self, older_than: float | None = None, max_size: int | str | None = None) -> int:
        """Remove the entries not used (locally) or written (object stores) for
        `older_than` seconds, then the least recently used until at most `max_size` bytes
        remain; returns how many were removed."""
        owner = f"DiskCache({self.location!r})"
        bound = None if max_size is None else parse_memory(max_size, owner, "max_size")
        blobs = sorted(self._store.blobs(), key=lambda b: b.modified)
        doomed = []
        if older_than is not None:
            cutoff = time.time() - older_than
            doomed = [b for b in blobs if b.modified < cutoff]
            blobs = blobs[len(doomed) :]
        if bound is not None:
            doomed += _over(blobs, bound)
        self._delete([b.name for b in doomed])
        return len(doomed)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        names = [b.name for b in self._store.blobs()]
        self._delete(names)
        return len(names)

    def _delete(self, names: list[str]) -> None:
        if self.remote and len(names) > 1:
            list(self._threads().map(self._store.delete, names))
        else:
            for name in names:
                self._store.delete(name)

    def __len__(self) -> int:
        return sum(1 for _ in self._store.blobs())

    def submit(self, func: Any, *args: Any) -> Future[Any]:
        """`func(*args)` on this cache's request threads (an async caller's lookups)."""
        return self._threads().submit(func, *args)

    def _threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:  # made in the process using it: a pickled cache has none
                self._pool = ThreadPoolExecutor(self.concurrency, "hypernodes-cache")
            return self._pool

    def __reduce__(self) -> tuple[Any, ...]:
        # a worker gets the location and the settings read here (the driver's environment)
        options = getattr(self._store, "options", None) or None
        return (type(self), (self.location, self.max_size, options, self.concurrency))

    def __repr__(self) -> str:
        bound = "" if self.max_size is None else f", max_size={format_bytes(self.max_size)!r}"
        return f"DiskCache({self.location!r}{bound})"


@dataclass(frozen=True)
class CacheInfo:
    """A cache's size, as `hypernodes-daft cache info` prints it."""

    location: str
    entries: int
    bytes: int
    oldest: float | None  # the least recent use (local) or write (object store), epoch s
    newest: float | None
    max_size: int | None = None


# -- entries: framing, names, warnings, the size bound --------------------------------------

_MAGIC = b"HNDC1"
_DIGEST = 16
_MISSING = object()


def _framed(value: Any) -> bytes:
    """The stored form of `value`: a marker, a checksum of the pickle, the pickle."""
    payload = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _MAGIC + hashlib.blake2b(payload, digest_size=_DIGEST).digest() + payload


def _unframed(data: bytes) -> bytes | None:
    """The pickle inside a stored entry, or None when the entry is not whole."""
    head = len(_MAGIC) + _DIGEST
    if len(data) < head or not data.startswith(_MAGIC):
        return None
    payload = memoryview(data)[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != data[len(_MAGIC) : head]:
        return None
    return bytes(payload)


def _name(key: str) -> str:
    return f"{key[:2]}/{key}{SUFFIX}"


_warned_caches: set[str] = set()


def _warn_once(location: str, message: str) -> None:
    if location not in _warned_caches:
        _warned_caches.add(location)
        warnings.warn(message, stacklevel=3)


def _over(blobs: list[Blob], bound: int) -> list[Blob]:
    """The first (least recently used) of `blobs` to remove so the rest fit in `bound`."""
    excess = sum(b.size for b in blobs) - bound
    doomed = []
    for blob in blobs:
        if excess <= 0:
            break
        doomed.append(blob)
        excess -= blob.size
    return doomed


class _Budget:
    """The bytes of one bounded local cache as this process sees them: scanned once, then
    counted per write; past the bound, the least recently used go until 90% remains. Other
    processes' writes are seen at the next scan, so with several writers the cache may
    exceed its bound by what they wrote since; each scan brings it back."""

    def __init__(self, store: Any, bound: int):
        self.store, self.bound = store, bound
        self.used: int | None = None
        self.lock = threading.Lock()

    def add(self, size: int) -> None:
        with self.lock:
            if self.used is None:
                self.used = sum(b.size for b in self.store.blobs())
            else:
                self.used += size
            if self.used > self.bound:
                blobs = sorted(self.store.blobs(), key=lambda b: b.modified)
                doomed = _over(blobs, int(self.bound * 0.9))
                for blob in doomed:
                    self.store.delete(blob.name)
                self.used = sum(b.size for b in blobs) - sum(b.size for b in doomed)


_budgets: dict[tuple[str, int], _Budget] = {}
_budgets_lock = threading.Lock()


def _budget(store: Any, bound: int) -> _Budget:
    """One budget per bounded cache and process, whichever DiskCache objects write it."""
    with _budgets_lock:
        key = (store.location, bound)
        if key not in _budgets:
            _budgets[key] = _Budget(store, bound)
        return _budgets[key]


# -- keys ----------------------------------------------------------------------------------


def lineages(steps: Any, outer: dict[str, str] | None = None) -> list[str]:
    """Each step's lineage hash: its node's identity and code, and its producers' lineages.

    Computed once per plan; `outer` gives the lineage of values coming from outside.
    """
    produced: dict[str, str] = dict(outer or {})
    result = []
    for step in steps:
        parts = [step.label, ",".join(step.outputs), _code_hash(step)]
        parts += [f"{a}={produced.get(a, 'input')}" for a in step.args]
        lineage = hashlib.sha256("|".join(parts).encode()).hexdigest()
        produced.update(dict.fromkeys(step.outputs, lineage))
        result.append(lineage)
    return result


def call_key(lineage: str, arguments: dict[str, Any]) -> str:
    """The key of one call: its lineage and the content of its arguments."""
    digest = hashlib.blake2b(lineage.encode(), digest_size=20)
    for name in sorted(arguments):
        digest.update(name.encode())
        _feed(digest, arguments[name], set())
    return digest.hexdigest()


def key_or_none(label: str, lineage: str, arguments: dict[str, Any]) -> str | None:
    """`call_key`, or None (with one warning per node) when an argument has no stable hash:
    that call is then not cached."""
    try:
        return call_key(lineage, arguments)
    except UnhashableInput as error:
        warn_unhashable(label, error)
        return None


def hash_value(value: Any) -> str:
    """A stable content hash of `value`, the same in every process; `UnhashableInput` when
    there is none."""
    digest = hashlib.blake2b(digest_size=20)
    _feed(digest, value, set())
    return digest.hexdigest()


_warned: set[str] = set()  # node labels already warned about in this process


def warn_unhashable(label: str, error: UnhashableInput) -> None:
    if label not in _warned:  # once per node: a map would repeat it per item
        _warned.add(label)
        warnings.warn(f"node '{label}' is not cached: {error}", stacklevel=3)


def _code_hash(step: Any) -> str:
    node = step.node
    code = getattr(node, "code_hash", None)
    return code if isinstance(code, str) else hash_code(getattr(node, "func", node))


_SCALARS = (str, int, float, bool, bytes, type(None), complex)


def _feed(digest: Any, value: Any, active: set[int]) -> None:
    """Write `value` into `digest` as type-tagged bytes (1 and "1" and 1.0 differ)."""
    kind = type(value)
    if kind in _SCALARS:
        if kind is float and math.isnan(value):
            value = "nan"
        digest.update(f"{kind.__name__}:{value!r};".encode())
        return
    if id(value) in active:
        raise UnhashableInput(f"a {kind.__name__} that contains itself")
    active.add(id(value))
    try:
        _feed_container(digest, value, kind, active)
    finally:
        active.discard(id(value))


def _feed_container(digest: Any, value: Any, kind: type, active: set[int]) -> None:
    name = f"{kind.__module__}.{kind.__qualname__}"
    digest.update(f"<{name}>".encode())
    custom = getattr(value, "__cache_key__", None)
    if isinstance(value, type):
        digest.update(f"{value.__module__}.{value.__qualname__}".encode())
    elif callable(custom):
        digest.update(str(custom()).encode())
    elif isinstance(value, (list, tuple)):
        for item in value:
            _feed(digest, item, active)
    elif isinstance(value, dict):
        for item_hash, item in sorted((hash_value(k), v) for k, v in value.items()):
            digest.update(item_hash.encode())
            _feed(digest, item, active)
    elif isinstance(value, (set, frozenset)):
        for item_hash in sorted(hash_value(item) for item in value):
            digest.update(item_hash.encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            digest.update(field.name.encode())
            _feed(digest, getattr(value, field.name), active)
    elif _feed_library_value(digest, value, name):
        pass
    elif callable(value) and hasattr(value, "__code__"):
        digest.update(hash_code(value).encode())
    elif hasattr(value, "__dict__") and not isinstance(value, type) and vars(value):
        # a plain object: its class and public attributes (as HyperNodes 0.4 does)
        for attribute in sorted(a for a in vars(value) if not a.startswith("_")):
            digest.update(attribute.encode())
            _feed(digest, vars(value)[attribute], active)
    else:
        raise UnhashableInput(
            f"a {name} has no stable content hash; give it a __cache_key__() method, or "
            "mark the node @node(cache=False)"
        )


def _feed_library_value(digest: Any, value: Any, name: str) -> bool:
    """Arrays and frames of numpy, pyarrow, pandas, pydantic and Daft, by content."""
    if name == "numpy.ndarray":
        if value.dtype.hasobject:
            _feed(digest, value.tolist(), set())
        else:
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(value.tobytes())  # C order, whatever the layout
        return True
    if name.startswith("pyarrow."):
        import pyarrow as pa

        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            value = pa.table({"_": value})
        if isinstance(value, (pa.Table, pa.RecordBatch)):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, value.schema) as writer:
                writer.write(value)
            digest.update(sink.getvalue().to_pybytes())
            return True
        if isinstance(value, pa.Scalar):
            _feed(digest, value.as_py(), set())
            return True
    if name.startswith("pandas.") and hasattr(value, "to_numpy"):
        import pandas as pd

        digest.update(repr((list(getattr(value, "columns", [])), str(value.dtypes))).encode())
        digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
        return True
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):  # pydantic v2
        _feed(digest, value.model_dump(mode="python"), set())
        return True
    if name.startswith("daft.") and hasattr(value, "to_arrow"):
        _feed(digest, value.to_arrow(), set())
        return True
    return False
