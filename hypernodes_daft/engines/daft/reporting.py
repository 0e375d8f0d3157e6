"""How Daft functions tell the driver's callbacks what they did, one batch at a time.

    report = batch_report(events, runner)        # None without callbacks
    report.record("embed", rows=512, seconds=0.8, cached=0, errors=0, retried=0)  # a batch
    report.drain()                               # on the driver, after each partition

On the native runner, Daft functions run in this process: a record is queued and a thread
of the report's own fires it at once. On Ray they run in worker
processes: records go to a small Ray actor, and the driver fires them when it drains it,
at least once per partition. Either way callbacks see each node's calls, hits and time per
batch (`Callbacks.record_batch`); per-row durations are the batch's mean.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any

from ...runtime.events import Events

# node id, rows called, seconds, cached rows, rows that failed (errors), retries
Record = tuple[str, int, float, int, int, int]

_in_process: weakref.WeakValueDictionary[int, LocalReport] = weakref.WeakValueDictionary()


class LocalReport:
    """Records fired into the driver's callbacks by a thread of its own (native runner).

    Daft's threads only queue a record: a progress bar drawn from a Daft thread can take
    tqdm's global lock while Daft's main thread, inside Rust, drops another bar and waits
    for that lock (a deadlock seen in `hypernodes-daft run`).
    """

    def __init__(self, events: Events):
        self.events = events
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(
            target=_fire_records, args=(self._queue, events), daemon=True, name="hypernodes-report"
        ).start()
        weakref.finalize(self, self._queue.put, None)  # a dropped report stops its thread
        _in_process[id(self)] = self

    def record(
        self, node_id: str, rows: int, seconds: float, cached: int, errors: int, retried: int
    ) -> None:
        self._queue.put((node_id, rows, seconds, cached, errors, retried))

    def drain(self) -> None:
        """Wait until every record queued so far has been fired."""
        fired = threading.Event()
        self._queue.put(fired)
        fired.wait()

    def close(self) -> None:
        self.drain()

    def __reduce__(self) -> tuple[Any, ...]:
        # Daft pickles every function to check it can travel; in this process, find it again
        return (_find_local, (id(self),))


def _fire_records(records: queue.SimpleQueue[Any], events: Events) -> None:
    while (record := records.get()) is not None:
        if isinstance(record, threading.Event):
            record.set()
        else:
            events.record_batch(*record)


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

    def record(
        self, node_id: str, rows: int, seconds: float, cached: int, errors: int, retried: int
    ) -> None:
        self.actor.add.remote((node_id, rows, seconds, cached, errors, retried))  # no wait

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
