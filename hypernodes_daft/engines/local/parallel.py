"""The parallel map executor: items run in worker processes.

Functions and data travel with cloudpickle, so lambdas, closures and functions defined in a
notebook, a test or `__main__` work. Everything is pickled in the parent before any work is
sent, so an object that cannot travel gets an error naming the node or the input at once.
Each task carries a chunk of items; the plan and the broadcast inputs are unpickled once per
worker process and kept while the same map runs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import cloudpickle

from ...exceptions import ExecutionError, PlanningError, wrap_error
from ...plan import MapPlan, RunPlan, iter_rows, make_item
from ...results import ERROR_FIELD, error_of
from ...runtime.events import RecordingEvents
from ...runtime.items import RunItem, compile_run
from ...runtime.node_call import Services, Values
from .streaming import FirstFailure, as_finished

_CHUNKS_PER_WORKER = 4
_worker_cache: dict[str, Any] = {}  # in a worker process: key -> plan runner / shared inputs


def map_parallel(
    pool: Executor, workers: int, plan: MapPlan, inputs: Values, services: Services
) -> list[Values]:
    """Run the items of `plan` on the process pool; results in input order. The services
    (a DiskCache is its path) travel with the plan."""
    results: list[Any] = [None] * (plan.n_items or 0)
    for index, result in iter_parallel(pool, workers, plan, inputs, services):
        results[index] = result
    return results


def iter_parallel(
    pool: Executor, workers: int, plan: MapPlan, inputs: Values, services: Services
) -> Iterator[tuple[int, Values]]:
    """`(index, outputs)` per item, a chunk at a time as chunks finish; at most two chunks
    per worker are pickled and in flight. With callbacks, the workers record the hooks of
    each chunk and they fire here, before the chunk's results are yielded."""
    if not plan.n_items:
        return
    plan_blob = _dumps_plan(plan.item, services)
    events = services.events
    shared = {k: v for k, v in inputs.items() if k not in plan.map_over}
    shared_blob = _dumps_inputs(plan.item, shared)
    key = hashlib.sha256(plan_blob + shared_blob).hexdigest()
    chunk_size = max(1, math.ceil(plan.n_items / (workers * _CHUNKS_PER_WORKER)))
    chunks = _row_chunks(plan, inputs, chunk_size)
    tasks = (
        (start, (key, plan_blob, shared_blob, plan.map_over, start, blob)) for start, blob in chunks
    )
    failures = FirstFailure()  # a chunk's error is its first failing item
    for start, outcome in as_finished(pool, _run_chunk, failures.gate(tasks), 2 * workers):
        status, payload, records = cloudpickle.loads(outcome)
        if events is not None:
            events.replay(records)
        if status == "error":
            failures.add(start, payload)
        else:
            yield from enumerate(payload, start)
    failures.raise_first()


def _run_chunk(
    key: str,
    plan_blob: bytes,
    shared_blob: bytes,
    map_over: tuple[str, ...],
    start: int,
    rows_blob: bytes,
) -> bytes:
    """In a worker process: run a chunk of items, return pickled results or the error."""
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
    for offset, row in enumerate(cloudpickle.loads(rows_blob)):
        index = start + offset
        try:
            results.append(run(make_item(shared, map_over, row), index))
        except ExecutionError as error:
            return _dumps_error(error.located(index), _taken(records))
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
    rows = list(iter_rows(inputs, plan.map_over, plan.map_mode))
    for start in range(0, len(rows), size):
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
