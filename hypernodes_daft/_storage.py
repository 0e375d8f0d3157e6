"""Where `DiskCache` keeps its entries: a local directory or an object store.

    store = open_store("/tmp/cache")              # LocalStore
    store = open_store("s3://bucket/prefix")      # ObjectStore, through pyarrow.fs
    store.write("ab/abcd.pkl", data); store.read("ab/abcd.pkl")   # bytes, or None

Both hold named blobs, written whole: a local entry is written to a temporary file and
renamed into place; an object store's PUT makes an object visible only once it is complete.
pyarrow.fs serves the object stores because pyarrow is already a dependency, its S3, GCS and
Azure clients are native (they release the GIL, so a thread pool overlaps requests), and
it needs no second AWS SDK beside the one Daft and Ray bring.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_HOST = socket.gethostname()
SUFFIX = ".pkl"


class CacheUnavailable(OSError):
    """The cache's storage cannot be used: unreachable, missing, or access denied."""


@dataclass(frozen=True)
class Blob:
    """One stored entry: its name under the store, size in bytes, last change (epoch s)."""

    name: str
    size: int
    modified: float


def is_url(location: str) -> bool:
    """Whether `location` names a remote filesystem (`s3://...`), not a local path."""
    scheme = urlparse(location).scheme
    return len(scheme) > 1 and scheme != "file"  # "C:" is a Windows drive, not a scheme


def open_store(location: str, options: dict[str, Any] | None = None) -> LocalStore | ObjectStore:
    """The store at `location`: a local path (or file:// URL), or a remote URL."""
    if is_url(location):
        return ObjectStore(location, options or {})
    if options:
        raise ValueError(f"DiskCache({location!r}): storage_options apply to a URL, not a path")
    return LocalStore(location.removeprefix("file://"))


class LocalStore:
    """Entries as files under a directory; `touch` marks one used (its mtime)."""

    remote = False

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"DiskCache: {self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._shards: set[Path] = set()  # shard directories known to exist
        self._names = itertools.count()
        self._clock = threading.Lock()
        self._last = 0  # the last time `touch` gave, in ns: each later one is later

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        final = self.path / name
        if final.parent not in self._shards:
            final.parent.mkdir(exist_ok=True)
            self._shards.add(final.parent)
        # a name no other writer (thread, process, machine) uses at the same time
        unique = f"{os.getpid()}-{threading.get_ident()}-{next(self._names)}-{_HOST}"
        temporary = final.with_name(f".{final.name}.{unique}.tmp")
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

    def touch(self, name: str) -> None:
        """Mark `name` used now, to the nanosecond: the kernel stamps a write with a coarser
        clock, so entries written in one tick would tie for least recently used."""
        with self._clock:
            self._last = max(time.time_ns(), self._last + 1)
            now = self._last
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path / name, ns=(now, now))

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def blobs(self) -> Iterator[Blob]:
        for shard in os.scandir(self.path):
            if not shard.is_dir() or shard.name.startswith("."):
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
                        stat = entry.stat()
                        yield Blob(f"{shard.name}/{entry.name}", stat.st_size, stat.st_mtime)

    def check(self) -> None:
        if not os.access(self.path, os.W_OK):
            raise CacheUnavailable(f"DiskCache({self.location!r}): the directory is not writable")


class ObjectStore:
    """Entries as objects under `url` (s3://, gs://, abfs://... as pyarrow.fs reads them).

    S3 takes the standard AWS settings from the environment (AWS_ENDPOINT_URL for an
    S3-compatible server, AWS_REGION, the credentials), read when the store is made, so
    that the workers a cache is sent to use what the driver used; `options` (keyword
    arguments of the pyarrow filesystem, e.g. `endpoint_override`, `access_key`) override
    them. Neither ever appears in a message: `location` is the URL alone.
    """

    remote = True

    def __init__(self, url: str, options: dict[str, Any]):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"DiskCache({url!r}): the URL names no bucket")
        self.location = url.rstrip("/")
        self.scheme = parsed.scheme
        self.bucket = parsed.netloc
        self.root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        self.options = {**_environment(parsed.scheme), **options}
        self._filesystem: Any = None

    @property
    def filesystem(self) -> Any:
        if self._filesystem is None:  # made in the process using it, not pickled
            self._filesystem = _filesystem(self.location, self.scheme, self.options)
        return self._filesystem

    def read(self, name: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(f"{self.root}/{name}") as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        with self.filesystem.open_output_stream(f"{self.root}/{name}") as stream:
            stream.write(data)

    def touch(self, name: str) -> None:
        """Object stores keep no access time: a bounded size is for local caches."""

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(f"{self.root}/{name}")

    def blobs(self) -> Iterator[Blob]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        start = len(self.root) + 1
        for info in self.filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File and info.path.endswith(SUFFIX):
                modified = info.mtime.timestamp() if info.mtime else 0.0
                yield Blob(info.path[start:], info.size or 0, modified)

    def check(self) -> None:
        """Raise CacheUnavailable (naming the URL and the cause) unless the bucket answers."""
        import pyarrow.fs as pafs

        try:
            info = self.filesystem.get_file_info(self.bucket)
        except OSError as error:
            cause = storage_cause(error)
            raise CacheUnavailable(f"DiskCache({self.location!r}): {cause}") from None
        if info.type == pafs.FileType.NotFound:
            raise CacheUnavailable(
                f"DiskCache({self.location!r}): the bucket {self.bucket!r} does not exist"
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_filesystem": None}


def _environment(scheme: str) -> dict[str, Any]:
    """The S3 settings of this process's environment, as pyarrow's S3FileSystem takes them."""
    if scheme != "s3":
        return {}
    names = {
        "endpoint_override": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
        "access_key": ("AWS_ACCESS_KEY_ID",),
        "secret_key": ("AWS_SECRET_ACCESS_KEY",),
        "session_token": ("AWS_SESSION_TOKEN",),
    }
    found = {}
    for option, variables in names.items():
        value = next((os.environ[v] for v in variables if os.environ.get(v)), None)
        if value is not None:
            found[option] = value
    if "secret_key" not in found:  # a key alone is not a credential: let the SDK look
        found.pop("access_key", None)
    return found


def _filesystem(url: str, scheme: str, options: dict[str, Any]) -> Any:
    import pyarrow.fs as pafs

    if scheme == "s3":
        # allow_delayed_open: a small entry is one PUT, not a three-request multipart upload
        return pafs.S3FileSystem(**{"allow_delayed_open": True, **options})
    filesystem, _ = pafs.FileSystem.from_uri(url)
    return type(filesystem)(**options) if options else filesystem


def storage_cause(error: Exception) -> str:
    """pyarrow's message, without the request details after the first sentence."""
    text = str(error).strip()
    for marker in ("; Details:", "Detail:"):
        text = text.split(marker)[0]
    return text
