"""How Daft functions tell the driver's callbacks what they did, one batch at a time.

    report = batch_report(events, runner)        # None without callbacks
    report.record("embed", rows=512, seconds=0.8, cached=0)    # in a Daft function
    report.drain()                               # on the driver, after each partition

On the native runner, Daft functions run in this process: a record reaches the callbacks at
once (under a lock: Daft runs batches on several threads). On Ray they run in worker
processes: records go to a small Ray actor, and the driver fires them when it drains it,
at least once per partition. Either way callbacks see each node's calls, hits and time per
batch (`Callbacks.record_batch`); per-row durations are the batch's mean.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from ..._events import Events

Record = tuple[str, int, float, int]  # node id, rows computed, seconds, cached rows

_in_process: weakref.WeakValueDictionary[int, LocalReport] = weakref.WeakValueDictionary()


class LocalReport:
    """Records fired straight into the driver's callbacks (native runner)."""

    def __init__(self, events: Events):
        self.events = events
        self._lock = threading.Lock()
        _in_process[id(self)] = self

    def record(self, node_id: str, rows: int, seconds: float, cached: int) -> None:
        with self._lock:
            self.events.record_batch(node_id, rows, seconds, cached)

    def drain(self) -> None:
        """Nothing waits here: records were fired as they came."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Daft pickles every function to check it can travel; in this process, find it again
        return (_find_local, (id(self),))


def _find_local(key: int) -> LocalReport:
    return _in_process[key]


class RayReport:
    """Records sent to a Ray actor from the workers, fired on the driver by `drain`."""

    def __init__(self, events: Events | None, actor: Any):
        self.events = events  # None in a worker process
        self.actor = actor

    @classmethod
    def start(cls, events: Events) -> RayReport:
        import ray

        collector = ray.remote(num_cpus=0)(_Collector)
        return cls(events, collector.remote())

    def record(self, node_id: str, rows: int, seconds: float, cached: int) -> None:
        self.actor.add.remote((node_id, rows, seconds, cached))  # fire and forget

    def drain(self) -> None:
        import ray

        assert self.events is not None, "drain() runs on the driver"
        for record in ray.get(self.actor.take.remote()):
            self.events.record_batch(*record)

    def close(self) -> None:
        import ray

        self.drain()
        ray.kill(self.actor)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RayReport, (None, self.actor))  # the callbacks stay on the driver


class _Collector:
    """The Ray actor holding records until the driver takes them."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, record: Record) -> None:
        self.records.append(record)

    def take(self) -> list[Record]:
        records, self.records = self.records, []
        return records


def batch_report(events: Events | None, runner: str) -> LocalReport | RayReport | None:
    """Where this execution's Daft functions send their records (None: no callbacks)."""
    if events is None:
        return None
    return LocalReport(events) if runner == "native" else RayReport.start(events)
