"""A real HTTP service on 127.0.0.1 for the resilient I/O tests and benchmarks/io_bound.py.

    with HttpService(latency=0.01, fail_rate=0.2) as service:   # a thread, its own event loop
        get_sync(service.url, 7)          # 15 (value_of(7)); ServiceError on a 503
        service.stats().peak              # the most requests it ever had in flight at once
        service.kill()                    # listener closed, open connections aborted
        service.restart()                 # listening again on the same port

    remote = RemoteService.start(latency=0.05)   # the same server in a subprocess (its own
    remote.stats(); remote.reset(); remote.stop()  # GIL): counters over HTTP

`GET /item/{id}` answers `{"id": id, "value": value_of(id)}` after the request's latency: the
`delay` query parameter (`/item/3?delay=0.5`), else the id's entry in `slow`, else `latency`.
Transient failures are HTTP 503s: attempt `a` of id `i` fails when a hash of
(`seed`, i, a) falls under `fail_rate`, at most `max_failures` times in a row per id, and
the first n attempts of an id fail when `fail_ids` maps it to n. The
decision does not depend on arrival order, so `expected_requests(ids)` is exact on any
engine. `kill_after=n`: the service dies when its n-th request arrives (mid-map).

`POST /batch` with a JSON list of ids is the batch endpoint: their values, in order, after
one latency (`latency`). Each id in it counts as an attempt of that id, and the whole
request gets a 503 (`{"failed": id}`) when any of those attempts fails as above.

The service counts what it sees itself (never what a client says it sent): requests in
total, per id and in arrival order, 503s sent, requests in flight now and at peak,
requests whose client went away before the answer (`cancelled`: a client-side timeout
reached the socket) and the ids of each batch request (`batches`).

Client side: `get_sync` (http.client, blocking, one connection per call), `get_async`
(aiohttp), `Sessions` (one aiohttp session per event loop, shared by every call on it);
`post_batch_sync` and `post_batch_async` for the batch endpoint. All raise `ServiceError`
on a 5xx; a dead service raises one of `CONNECTION_ERRORS`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import http.client
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

HOST = "127.0.0.1"


def value_of(item_id: int) -> int:
    """What the service answers for an id."""
    return 2 * item_id + 1


class ServiceError(Exception):
    """The service answered with a 5xx status."""

    def __init__(self, status: int, item_id: int):
        super().__init__(f"HTTP {status} for item {item_id}")
        self.status = status
        self.item_id = item_id

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries intact
        return (ServiceError, (self.status, self.item_id))


# what calling a dead (killed) service raises, blocking or async
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, aiohttp.ClientOSError
    http.client.HTTPException,  # RemoteDisconnected (also a ConnectionResetError)
    aiohttp.ClientConnectionError,  # ServerDisconnectedError
)
TRANSIENT: tuple[type[BaseException], ...] = (ServiceError, *CONNECTION_ERRORS)


@dataclasses.dataclass(frozen=True)
class Stats:
    """What the service saw."""

    total: int  # requests received
    per_id: dict[int, int]  # requests per item id
    order: list[int]  # the item id of each request, in arrival order
    failed: int  # 503s sent
    cancelled: int  # requests whose client went away before the answer
    in_flight: int  # requests being handled now
    peak: int  # the most requests handled at once
    # the ids of each POST /batch, in arrival order (they count in total and per_id too)
    batches: list[list[int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Config:
    latency: float = 0.0
    slow: dict[int, float] = dataclasses.field(default_factory=dict)  # id -> latency
    fail_rate: float = 0.0
    seed: int = 0
    fail_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # id -> first n fail
    max_failures: int = 3  # consecutive 503s per id at most: failures are transient
    kill_after: int | None = None  # die when this many requests arrived

    def fails(self, item_id: int, attempt: int) -> bool:
        """Whether attempt `attempt` (1, 2, ...) of `item_id` gets a 503."""
        if attempt <= self.fail_ids.get(item_id, 0):
            return True
        if attempt > self.max_failures or self.fail_rate <= 0:
            return False
        digest = hashlib.blake2b(f"{self.seed}:{item_id}:{attempt}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2**64 < self.fail_rate

    def expected_requests(self, ids: Any) -> int:
        """How many requests mapping over `ids` takes when every 503 is retried."""
        total = 0
        for item_id in ids:
            attempt = 1
            while self.fails(item_id, attempt):
                attempt += 1
            total += attempt
        return total


class _Counters:
    """Touched only on the service's event loop."""

    def __init__(self) -> None:
        self.total = self.failed = self.cancelled = self.in_flight = self.peak = 0
        self.per_id: collections.Counter[int] = collections.Counter()
        self.order: list[int] = []
        self.batches: list[list[int]] = []

    def snapshot(self) -> Stats:
        return Stats(
            self.total,
            dict(self.per_id),
            list(self.order),
            self.failed,
            self.cancelled,
            self.in_flight,
            self.peak,
            [list(ids) for ids in self.batches],
        )


class HttpService:
    """The service in a daemon thread running its own event loop; see the module doc.

    `start()` binds a free port (or `port`); `stop()` shuts down everything `start()`
    started: the listener, open connections, pending handlers, the loop and the thread.
    """

    def __init__(self, port: int = 0, **config: Any):
        self.config = Config(**config)
        self.port = port
        self._counters = _Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._web: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._listener is not None

    # -- lifecycle (called from any thread but the service's) --------------------------------

    def start(self) -> HttpService:
        if self._thread is not None:
            raise RuntimeError("the service is already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="http-service", daemon=True
        )
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Shut down what `start()` started; a no-op when not started."""
        if self._thread is None or self._loop is None:
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = None

    def kill(self) -> None:
        """Die: close the listener (new connections are refused) and abort every open
        connection (requests in flight get a reset, their handlers are cancelled)."""
        self._call(self._kill())

    def restart(self) -> None:
        """Listen again, on the same port, after `kill()`."""
        self._call(self._listen())

    def configure(self, **changes: Any) -> None:
        """Change settings (latency, fail_rate, kill_after, ...) of the running service."""

        async def apply() -> None:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise TypeError(f"unknown setting {name!r}")
                setattr(self.config, name, value)

        self._call(apply())

    def reset(self) -> None:
        """Zero every counter (the per-id attempt counts that decide 503s too)."""

        async def zero() -> None:
            self._counters = _Counters()

        self._call(zero())

    def stats(self) -> Stats:
        async def snapshot() -> Stats:
            return self._counters.snapshot()

        return self._call(snapshot())

    def expected_requests(self, ids: Any) -> int:
        return self.config.expected_requests(ids)

    def __enter__(self) -> HttpService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the service is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- on the service's loop ---------------------------------------------------------------

    async def _start(self) -> None:
        self._web = web.Server(self._handle, handler_cancellation=True)
        await self._listen()

    async def _listen(self) -> None:
        if self._listener is not None:
            return
        assert self._web is not None
        self._listener = await asyncio.get_running_loop().create_server(
            self._web, HOST, self.port, reuse_address=True, backlog=1024
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _kill(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        assert self._web is not None
        for handler in self._web.connections:
            if handler.transport is not None:
                handler.transport.abort()

    async def _stop(self) -> None:
        await self._kill()
        assert self._web is not None
        await self._web.shutdown(timeout=1)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if parts == ["_stats"]:
            return web.json_response(dataclasses.asdict(self._counters.snapshot()))
        if parts == ["_reset"]:
            self._counters = _Counters()
            return web.json_response({})
        if parts == ["batch"] and request.method == "POST":
            return await self._batch(request)
        if len(parts) != 2 or parts[0] != "item" or not parts[1].lstrip("-").isdigit():
            return web.Response(status=404, text=f"no such path {request.path}")
        return await self._item(int(parts[1]), request)

    async def _item(self, item_id: int, request: web.BaseRequest) -> web.StreamResponse:
        config, counters = self.config, self._counters
        if self._listener is None:  # a connection accepted just before `kill()` ran
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503, text="dead")
        counters.total += 1
        counters.per_id[item_id] += 1
        counters.order.append(item_id)
        attempt = counters.per_id[item_id]
        if config.kill_after is not None and counters.total >= config.kill_after:
            config.kill_after = None
            await self._kill()  # this request's own connection is aborted too: no answer
            return web.Response(status=503, text="dead")
        counters.in_flight += 1
        counters.peak = max(counters.peak, counters.in_flight)
        try:
            delay = request.query.get("delay")
            latency = float(delay) if delay else config.slow.get(item_id, config.latency)
            if latency > 0:
                await asyncio.sleep(latency)
            if config.fails(item_id, attempt):
                counters.failed += 1
                return web.Response(status=503, text="try again")
            return web.json_response({"id": item_id, "value": value_of(item_id)})
        except asyncio.CancelledError:
            counters.cancelled += 1
            raise
        finally:
            counters.in_flight -= 1

    async def _batch(self, request: web.BaseRequest) -> web.StreamResponse:
        """POST /batch: the values of a JSON list of ids; see the module doc."""
        config, counters = self.config, self._counters
        if self._listener is None:  # a connection accepted just before `kill()` ran
            return web.Response(status=503, text="dead")
        ids = [int(item_id) for item_id in await request.json()]
        counters.total += 1
        counters.batches.append(ids)
        counters.per_id.update(ids)
        # decided on arrival: later requests for the same ids do not change this one
        failing = [i for i in ids if config.fails(i, counters.per_id[i])]
        counters.in_flight += 1
        counters.peak = max(counters.peak, counters.in_flight)
        try:
            if config.latency > 0:
                await asyncio.sleep(config.latency)
            if failing:
                counters.failed += 1
                return web.json_response({"failed": failing[0]}, status=503)
            return web.json_response([value_of(i) for i in ids])
        except asyncio.CancelledError:
            counters.cancelled += 1
            raise
        finally:
            counters.in_flight -= 1


# -- the same service in a subprocess ---------------------------------------------------------


class RemoteService:
    """The service running in a child process (`python tests/_http_service.py`), so its
    work does not share the client's GIL. Counters are read over HTTP."""

    def __init__(self, process: subprocess.Popen[str], port: int):
        self.process = process
        self.port = port

    @classmethod
    def start(cls, latency: float = 0.0, fail_rate: float = 0.0, seed: int = 0) -> RemoteService:
        command = [sys.executable, str(Path(__file__).resolve())]
        command += ["--latency", str(latency), "--fail-rate", str(fail_rate), "--seed", str(seed)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            process.kill()
            process.wait()
            raise RuntimeError(f"the service did not start: {line!r}")
        return cls(process, int(line.split()[1]))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stats(self) -> Stats:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as response:
            data = json.load(response)
        data["per_id"] = {int(k): v for k, v in data["per_id"].items()}
        return Stats(**data)

    def reset(self) -> None:
        urllib.request.urlopen(f"{self.url}/_reset", timeout=10).close()

    def stop(self) -> None:
        """End the child process this object started (closing its stdin asks it to)."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RemoteService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- clients --------------------------------------------------------------------------------


def get_sync(url: str, item_id: int, timeout: float = 30.0) -> int:
    """The value for `item_id`, with a blocking http.client call on a new connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", f"/item/{item_id}")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status >= 500:
        raise ServiceError(response.status, item_id)
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} for item {item_id}: {body!r}")
    return json.loads(body)["value"]


async def get_async(session: aiohttp.ClientSession, url: str, item_id: int) -> int:
    """The value for `item_id`, with an aiohttp call on `session`."""
    async with session.get(f"{url}/item/{item_id}") as response:
        if response.status >= 500:
            raise ServiceError(response.status, item_id)
        response.raise_for_status()
        return (await response.json())["value"]


def post_batch_sync(url: str, ids: list[int], timeout: float = 30.0) -> list[int]:
    """The values for `ids` from one POST /batch (http.client, blocking, a new connection)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/batch", body=json.dumps(ids), headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status >= 500:
        raise ServiceError(response.status, _failed_id(body, ids))
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} for batch {ids}: {body!r}")
    return json.loads(body)


async def post_batch_async(session: aiohttp.ClientSession, url: str, ids: list[int]) -> list[int]:
    """The values for `ids` from one POST /batch, with an aiohttp call on `session`."""
    async with session.post(f"{url}/batch", json=ids) as response:
        if response.status >= 500:
            raise ServiceError(response.status, _failed_id(await response.read(), ids))
        response.raise_for_status()
        return await response.json()


def _failed_id(body: bytes, ids: list[int]) -> int:
    """The id a failed batch names (the first of the batch if it names none)."""
    try:
        return int(json.loads(body)["failed"])
    except (ValueError, KeyError, TypeError):
        return ids[0]


def new_session() -> aiohttp.ClientSession:
    """An aiohttp session whose connection pool does not bound concurrency (the code under
    test does); call from a running event loop."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


class Sessions:
    """One aiohttp session per event loop (a session belongs to the loop it was made on),
    created on first use there and shared by every call on that loop; `close()` closes
    them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._by_loop.get(loop)
        if session is None or session.closed:
            with self._lock:
                session = self._by_loop[loop] = new_session()
        return session

    def __len__(self) -> int:
        return len(self._by_loop)

    def __getstate__(self) -> dict[str, Any]:  # another process makes its own sessions
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def close(self) -> None:
        """Close every session on its own loop (from outside those loops)."""
        with self._lock:
            sessions, self._by_loop = self._by_loop, {}
        for loop, session in sessions.items():
            if session.closed or loop.is_closed():
                continue
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=10)
            else:
                loop.run_until_complete(session.close())


def _serve(argv: list[str]) -> None:
    """The subprocess: serve until stdin is closed."""
    parser = argparse.ArgumentParser(description="the test HTTP service")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = {"latency": args.latency, "fail_rate": args.fail_rate, "seed": args.seed}
    with HttpService(port=args.port, **config) as service:
        print(f"port {service.port}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    _serve(sys.argv[1:])
