"""Caching node results per node and per item: keys, value hashing and the stores.

    engine = HypernodesEngine(cache=DiskCache(".cache"))    # or DaftEngine(cache=...)
    pipeline.map(inputs=..., map_over="x", engine=engine)   # second call: no node runs

A node call's key is the hash of its *lineage* (the node's name, outputs and code hash, and
the lineages of the nodes that produced its arguments: editing a node re-runs it and
everything downstream) and of its argument values, hashed by content (`hash_value`).
`@node(cache=False)` opts a node out. A value that cannot be hashed stably (an open file,
a lock) skips caching for that call, with one warning per node.

`DiskCache` writes each entry to a temporary file and renames it into place, so a process
killed mid-write never leaves a corrupt entry, and concurrent writers (threads, processes,
Ray workers on a shared filesystem) never mix their bytes: the last rename wins whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import pickle
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import cloudpickle

from ._hashing import hash_code

_HOST = socket.gethostname()


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
    """Results as pickle files under `path`, one file per entry, written atomically.

    `path` may be on a filesystem every Ray worker mounts; entries are then shared.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"DiskCache: {self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._shards: set[Path] = set()  # shard directories known to exist
        self._names = itertools.count()

    def lookup(self, key: str) -> tuple[bool, Any]:
        try:
            with open(self._file(key), "rb") as entry:
                return True, pickle.load(entry)
        except FileNotFoundError:
            return False, None
        except (EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return False, None  # unreadable here (a class gone): computed again, rewritten

    def put(self, key: str, value: Any) -> None:
        data = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        final = self._file(key)
        if final.parent not in self._shards:
            final.parent.mkdir(exist_ok=True)
            self._shards.add(final.parent)
        # a name no other writer (thread, process, machine) uses at the same time
        unique = f"{os.getpid()}-{threading.get_ident()}-{next(self._names)}-{_HOST}"
        temporary = final.with_name(f".{key}.{unique}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)
            # atomic: readers see the old entry or the new one, never part of one
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def get(self, key: str) -> Any:
        return self.lookup(key)[1]

    def has(self, key: str) -> bool:
        return self._file(key).exists()

    def clear(self) -> None:
        for entry in self.path.glob("*/*.pkl"):
            entry.unlink(missing_ok=True)

    def __len__(self) -> int:
        return sum(1 for _ in self.path.glob("*/*.pkl"))

    def __reduce__(self) -> tuple[Any, ...]:  # a worker gets the path, not our state
        return (DiskCache, (str(self.path),))

    def __repr__(self) -> str:
        return f"DiskCache({str(self.path)!r})"

    def _file(self, key: str) -> Path:
        return self.path / key[:2] / f"{key}.pkl"


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
