"""The parallel map executor: items run in worker processes.

The workers are a loky process pool, started once per engine and reused by every map: loky
starts each worker as a fresh interpreter that never imports the user's main module, so a
parallel map works from a plain script without `if __name__ == "__main__":`, from
`python -c`, from stdin and from Jupyter, and the script's body runs exactly once. Functions
and data travel with cloudpickle, so lambdas, closures and functions defined in a notebook,
a test or `__main__` work. Everything is pickled in the parent before any work is sent, so
an object that cannot travel gets an error naming the node or the input at once. Each task
carries a chunk of items; the plan and the broadcast inputs are unpickled once per worker
process and kept while the same map runs.

A worker that dies (a segfault, `os._exit`, SIGKILL, the out-of-memory killer) breaks the
pool. The engine then starts a new pool and runs the items whose chunks were lost one at a
time, so the item that kills its worker again is named exactly: its failure is raised, or
recorded under on_error "skip"/"collect" while the other items go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

import cloudpickle

from ...exceptions import (
    ExecutionError,
    PlanningError,
    WorkerDiedError,
    summarize_inputs,
    wrap_error,
)
from ...plan import MapPlan, RunPlan, iter_rows, make_item
from ...results import ERROR_FIELD, error_of, failed_outputs
from ...runtime import cancel
from ...runtime.events import RecordingEvents
from ...runtime.item_order import item_priorities
from ...runtime.items import RunItem, compile_run
from ...runtime.node_call import Services, Values
from .streaming import FirstFailure, as_finished

_CHUNKS_PER_WORKER = 4
_worker_cache: dict[str, Any] = {}  # in a worker process: key -> plan runner / shared inputs

# role -> the engine's pool; with `broken`, that pool is replaced by a new one
Pools = Callable[..., Executor]
Chunk = tuple[int, bytes]  # (index of its first item, its rows pickled)


def iter_parallel(
    pools: Pools, workers: int, plan: MapPlan, inputs: Values, services: Services
) -> Iterator[tuple[int, Values]]:
    """`(index, outputs)` per item, a chunk at a time as chunks finish; at most two chunks
    per worker are pickled and in flight. With callbacks, the workers record the hooks of
    each chunk and they fire here, before the chunk's results are yielded."""
    if not plan.n_items:
        return
    shared = {k: v for k, v in inputs.items() if k not in plan.map_over}
    token = cancel.current()
    work = _Work(plan, services, shared, token)
    chunk_size = max(1, math.ceil(plan.n_items / (workers * _CHUNKS_PER_WORKER)))
    chunks = _row_chunks(plan, inputs, chunk_size)
    failures = FirstFailure()  # a chunk's error is its first failing item
    try:
        while True:
            in_flight: dict[int, bytes] = {}
            pool = pools("map")
            try:
                tasks = work.tasks(failures.gate(chunks), in_flight)
                for start, outcome in as_finished(pool, _run_chunk, tasks, 2 * workers, token):
                    del in_flight[start]
                    yield from work.accept(start, outcome, failures)
                break
            except BrokenProcessPool as broken:
                yield from work.isolate(pools, pool, broken, in_flight, failures)
        if in_flight:  # a cancelled run left chunks running: their workers are stopped
            pools("map", broken=pool)
    finally:
        work.close()
    failures.raise_first()


class _Work:
    """What every task of one parallel map shares: the plan, services and broadcast
    inputs pickled once, and how a chunk's outcome becomes results."""

    def __init__(
        self, plan: MapPlan, services: Services, shared: Values, token: cancel.Cancel | None
    ):
        self.plan = plan
        self.events = services.events
        self.on_error = services.on_error
        self.plan_blob = _dumps_plan(plan.item, services)
        self.shared_blob = _dumps_inputs(plan.item, shared)
        self.key = hashlib.sha256(self.plan_blob + self.shared_blob).hexdigest()
        # the workers stop between items once this file exists (made when `token` is
        # cancelled): a flag every worker process reads without a channel to the driver
        self.flag = os.path.join(tempfile.gettempdir(), f"hypernodes-cancel-{uuid.uuid4().hex}")
        self._unhook = (
            (lambda: None) if token is None else token.on_cancel(lambda: self._raise_flag(token))
        )

    def _raise_flag(self, token: cancel.Cancel) -> None:
        with open(f"{self.flag}.new", "w") as flag:
            flag.write(token.message())
        os.replace(f"{self.flag}.new", self.flag)  # whole when a worker reads it

    def close(self) -> None:
        self._unhook()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.flag)

    def header(self) -> tuple[Any, ...]:
        """The arguments of `_run_chunk` every task of the map shares."""
        return self.key, self.plan_blob, self.shared_blob, self.plan.map_over, self.flag

    def tasks(self, chunks: Iterator[Chunk], in_flight: dict[int, bytes]) -> Iterator[Any]:
        """`(start, _run_chunk arguments)` per chunk, noting each chunk sent in `in_flight`."""
        for start, blob in chunks:
            in_flight[start] = blob
            yield start, (*self.header(), start, blob)

    def accept(
        self, start: int, outcome: bytes, failures: FirstFailure
    ) -> Iterator[tuple[int, Values]]:
        status, payload, records = cloudpickle.loads(outcome)
        if self.events is not None:
            self.events.replay(records)
        if status == "error":
            failures.add(start, payload)
        else:
            yield from enumerate(payload, start)

    def isolate(
        self,
        pools: Pools,
        pool: Executor,
        broken: BrokenProcessPool,
        lost: dict[int, bytes],
        failures: FirstFailure,
    ) -> Iterator[tuple[int, Values]]:
        """After a worker died: on a new pool, run the items of the `lost` chunks one at a
        time, so a death is pinned on the item that causes it."""
        for start in sorted(lost):
            for offset, row in enumerate(cloudpickle.loads(lost[start])):
                index = start + offset
                if failures.seen:
                    return
                pool = pools("map", broken=pool)
                one = cloudpickle.dumps([row])
                try:
                    outcome = pool.submit(_run_chunk, *self.header(), index, one).result()
                except BrokenProcessPool as again:
                    yield from self.died(index, row, again, failures)
                    continue
                yield from self.accept(index, outcome, failures)
        pools("map", broken=pool)  # the next chunks, and the next map, on a working pool

    def died(
        self, index: int, row: tuple[Any, ...], broken: BrokenProcessPool, failures: FirstFailure
    ) -> Iterator[tuple[int, Values]]:
        inputs = dict(zip(self.plan.map_over, row, strict=False))
        cause = WorkerDiedError(
            f"the worker process running item {index} died ({_exit_of(broken)}): a crash in "
            "native code, os._exit, a signal or the out-of-memory killer"
        )
        cause.__cause__ = broken
        error = wrap_error(
            cause, "<worker process>", summarize_inputs(inputs), [index], self.on_error
        )
        if self.on_error == "raise":
            failures.add(index, error)
        else:
            yield index, failed_outputs(error, index)


def _exit_of(broken: BaseException) -> str:
    """The exit code loky read off the dead worker, when it says."""
    found = re.search(r"exit codes of the workers are \{(.*?)\}", str(broken))
    return f"exit code {found[1]}" if found else type(broken).__name__


def _run_chunk(
    key: str,
    plan_blob: bytes,
    shared_blob: bytes,
    map_over: tuple[str, ...],
    flag: str,
    start: int,
    rows_blob: bytes,
) -> bytes:
    """In a worker process: run a chunk of items, return pickled results or the error.
    Once the driver raises the cancellation `flag`, the chunk stops between node calls and
    returns the items finished (fewer than its rows)."""
    if _worker_cache.get("key") != key:
        _worker_cache.clear()
        plan, services, observed = cloudpickle.loads(plan_blob)
        records: list[Any] = []
        if observed:
            services = replace(services, events=RecordingEvents(records, plan))
        _worker_cache.update(
            key=key,
            run=compile_run(plan, services),
            shared=cloudpickle.loads(shared_blob),
            records=records,
        )
    run: RunItem = _worker_cache["run"]
    shared: Values = _worker_cache["shared"]
    records = _worker_cache["records"]
    results = []
    with cancel.watching(cancel.FileCancel(flag)):
        for offset, row in enumerate(cloudpickle.loads(rows_blob)):
            index = start + offset
            try:
                results.append(run(make_item(shared, map_over, row), index))
            except ExecutionError as error:
                return _dumps_error(error.located(index), _taken(records))
            except cancel.RunCancelled:
                break
    return cloudpickle.dumps(("ok", [_portable(r) for r in results], _taken(records)))


def _portable(outputs: Values) -> Values:
    """An item's result, without the exception of an error record (it may not pickle)."""
    record = error_of(outputs)
    return outputs if record is None else {ERROR_FIELD: replace(record, exception=None)}


def _taken(records: list[Any]) -> list[Any]:
    taken = records[:]
    records.clear()
    return taken


def _dumps_error(error: ExecutionError, records: list[Any]) -> bytes:
    try:
        return cloudpickle.dumps(("error", error, records))
    except Exception:  # the original exception (also in on_error records) does not pickle
        original = RuntimeError(f"{type(error.original).__name__}: {error.original}")
        stand_in = wrap_error(original, error.node_name, error.inputs, error.path, error.on_error)
        kept = [r for r in records if r[1] != "on_error"]
        return cloudpickle.dumps(("error", stand_in, kept))


def _row_chunks(plan: MapPlan, inputs: Values, size: int) -> Iterator[tuple[int, bytes]]:
    """Chunks of `size` consecutive rows, in index order; in a map by priority, the chunk
    holding the highest priority first (stable: index order among equals)."""
    rows = list(iter_rows(inputs, plan.map_over, plan.map_mode))
    starts: Sequence[int] = range(0, len(rows), size)
    if plan.priority is not None:
        shared = {k: v for k, v in inputs.items() if k not in plan.map_over}
        priorities = item_priorities(shared, plan.map_over, rows, plan.priority)
        starts = sorted(starts, key=lambda start: -max(priorities[start : start + size]))
    for start in starts:
        chunk = rows[start : start + size]
        try:
            yield start, cloudpickle.dumps(chunk)
        except Exception as err:
            raise _unpicklable_row(plan, chunk, start, err) from err


def _dumps_plan(plan: RunPlan, services: Services) -> bytes:
    """The plan and the services a worker needs: the cache travels (a DiskCache is its
    path), the callbacks stay here (workers record the hooks for them)."""
    observed = services.events is not None
    try:
        travelling = Services(services.cache, on_error=services.on_error)
        return cloudpickle.dumps((plan, travelling, observed))
    except Exception as err:
        for step in _all_steps(plan):
            func = getattr(step.node, "func", None)
            if func is None:
                continue
            try:
                cloudpickle.dumps(func)
            except Exception as node_err:
                raise PlanningError(
                    f"map_executor='parallel': node '{step.label}' cannot be sent to worker "
                    f"processes: {type(node_err).__name__}: {node_err}. It probably captures "
                    "a lock, an open client or a socket; create such objects inside the node "
                    "or use map_executor='threaded'"
                ) from node_err
        raise PlanningError(f"map_executor='parallel': the plan cannot be pickled: {err}") from err


def _dumps_inputs(plan: RunPlan, shared: Values) -> bytes:
    try:
        return cloudpickle.dumps(shared)
    except Exception:  # find the culprit only when there is one
        for name, value in shared.items():
            try:
                cloudpickle.dumps(value)
            except Exception as value_err:
                raise _unpicklable_input(plan, name, value_err) from value_err
        raise


def _unpicklable_row(
    plan: MapPlan, chunk: list[tuple[Any, ...]], start: int, err: Exception
) -> PlanningError:
    for offset, row in enumerate(chunk):
        for name, value in zip(plan.map_over, row, strict=False):
            try:
                cloudpickle.dumps(value)
            except Exception as value_err:
                return _unpicklable_input(plan.item, name, value_err, start + offset)
    return PlanningError(f"map_executor='parallel': items cannot be pickled: {err}")


def _unpicklable_input(
    plan: RunPlan, name: str, err: Exception, item: int | None = None
) -> PlanningError:
    users = [s.label for s in _all_steps(plan) if name in s.args] or ["no node"]
    where = f"input '{name}'" + (f" (item {item})" if item is not None else "")
    return PlanningError(
        f"map_executor='parallel': {where}, used by node(s) {', '.join(users)}, cannot be "
        f"sent to worker processes: {type(err).__name__}: {err}"
    )


def _all_steps(plan: RunPlan) -> Iterator[Any]:
    for step in plan.steps:
        yield step
        if step.nested is not None:
            yield from _all_steps(step.nested.item)
