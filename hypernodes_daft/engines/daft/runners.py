"""Plain nodes run column-wise over the rows of one batch, as Python lists.

A runner reads its arguments by name from `columns` (a dict of equal-length lists) or from
its constants, and writes its outputs into `columns`:

    runner = make_runner(group, constants, setup, keys={})    # plan_runner.py
    runner.compute(columns, n_rows)            # or: await runner.acompute(columns, n_rows)

- `SyncNodes`: each node runs as `map(func, *columns)`: no per-row dict, no per-row Daft call.
- `AsyncNode`: the rows awaited together on the running event loop, at most `limit` at once.
- `ArrowNode`: a `@node(batch=True)` node, called once with Arrow arrays.
- `GroupedNode`: a `@node(batch_size=N)` node, called with lists, N rows at a time.

Every runner goes through one `ColumnCall`, which meets the cache, the identical calls in
flight, the output checks and the error policy through the node runtime's `PreparedNode`,
row by row, as the local executors do item by item: the rows found in the cache or being
computed elsewhere are not called; the others are called together; each result is
checked, stored and handed to the rows waiting for it as the batch completes.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ...exceptions import ExecutionError, summarize_inputs, wrap_error
from ...plan import Step
from ...results import ERROR_FIELD
from ...runtime.arrow_calls import as_argument, as_values
from ...runtime.context import node_context
from ...runtime.grouping import split
from ...runtime.limits import ClusterLimit, LoopSlots
from ...runtime.node_call import CALL, HIT, NO_SERVICES, PreparedNode, Services

Columns = dict[str, Any]  # name -> list of values, one per row
# per row of a batch: None, or why the row failed (an ExecutionError raised here, or the
# record dict of an earlier function); None for the whole list: failures are not kept
Errors = list[Any] | None
ERROR = ERROR_FIELD  # the column of error records (on_error "skip"/"collect")


@dataclass(frozen=True)
class Setup:
    """What building runners needs from the engine."""

    limit: int = 100  # async calls in flight per node, unless the node sets its own
    services: Services = NO_SERVICES  # the cache, on_error; driver steps fire its events
    in_process: bool = True  # the native runner: Daft functions run in this process
    report: Any = None  # where batches are reported for the callbacks (reporting.py)
    tolerant: bool = False  # some node may record failures: frames carry an ERROR column


@dataclass
class Todo:
    """A batch's rows for one node: those it calls (`rows`, in batch order; `every`: all of
    them), the results found (a cache hit per row, else None until computed), each row's
    cache key, and the rows whose identical call another row or batch is making."""

    results: list[Any]
    keys: list[str | None]
    rows: Sequence[int]
    every: bool
    waiting: dict[int, Future[Any]] = field(default_factory=dict)
    cached: int = 0


class ColumnCall:
    """One plain node over the columns of a batch, through its `PreparedNode`."""

    def __init__(
        self,
        step: Step,
        constants: dict[str, Any],
        setup: Setup,
        lineage: str,
        slots: LoopSlots | ClusterLimit | None = None,
    ):
        # the rows of a batch report to the driver in one record, not as events per call
        self.node = PreparedNode(step, lineage, replace(setup.services, events=None))
        self.label, self.args, self.outputs = step.label, step.args, step.outputs
        self.constants = constants
        self.report = setup.report
        self.retried = itertools.count()  # next() is atomic: threads and tasks share it
        self._reported_retries = 0
        # the async bound is the AsyncNode's (per batch), unless `slots` bound each attempt
        func = self.node.resilient(limit=slots, on_retry=self._retry)
        positional = step.args == tuple(step.node.root_args[: len(step.args)])
        self.func: Callable[..., Any] = func if positional else _by_name(func, step.args)
        # a sync node given its own bound does I/O: its rows run on that many threads
        bound = step.options.max_concurrency
        if isinstance(bound, ClusterLimit):
            bound = min(bound.limit, setup.limit)
        self.threads: int | None = bound if not step.is_async and bound and bound > 1 else None
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        """The threads of a sync node with `max_concurrency` (made in the process using
        them: a pickled call arrives without)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, f"hypernodes-{self.label}")
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "retried": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, retried=itertools.count(), _reported_retries=0)

    def scope(self) -> Any:
        """Entered around the node's calls of a batch (async: the tasks copy it)."""
        return node_context(self.label)

    # -- which rows to call, and what becomes of their results --------------------------------

    def todo(self, columns: Columns, n_rows: int) -> Todo:
        """The rows to call: not failed upstream; with a cache, neither stored nor being
        computed by an identical call (those are taken from the cache or waited for)."""
        errors = columns.get(ERROR)
        live = range(n_rows) if errors is None else [r for r in range(n_rows) if errors[r] is None]
        todo = Todo([None] * n_rows, [None] * n_rows, live, len(live) == n_rows)
        if self.node.cache is None:
            return todo
        node, calling = self.node, []
        for row in live:
            key = todo.keys[row] = node.key(self.row_arguments(columns, row))
            how, found = node.begin(key)
            if how is CALL:
                calling.append(row)
            elif how is HIT:
                todo.results[row] = found
                todo.cached += 1
            else:
                todo.waiting[row] = found
        todo.rows, todo.every = calling, len(calling) == n_rows
        return todo

    def subset(self, columns: Columns, todo: Todo) -> Columns:
        """The columns of the rows to call (`columns` itself when that is every row)."""
        if todo.every:
            return columns
        return {a: [columns[a][row] for row in todo.rows] for a in self.args if a in columns}

    @contextmanager
    def computing(self, todo: Todo) -> Iterator[None]:
        """Around computing `todo`: if it is interrupted (raised, cancelled), the calls
        waiting for its rows' keys go on with an error (a no-op for the rows ended)."""
        try:
            yield
        finally:
            for row in todo.rows:
                self.node.abandon(todo.keys[row], _INTERRUPTED)

    def complete(self, columns: Columns, todo: Todo, computed: list[Any]) -> None:
        """The called rows' results checked, stored and handed over, then the rows waiting
        for another batch take its outcome (blocking until it comes), then the outputs."""
        self._hand_over(columns, todo, computed)
        self._take_waiting(columns, todo)
        self.store(columns, todo.results)

    async def acomplete(self, columns: Columns, todo: Todo, computed: list[Any]) -> None:
        """`complete` for async nodes: the batch hands its own results over before it waits
        for others, so two batches waiting on each other both go on."""
        self._hand_over(columns, todo, computed)
        if todo.waiting:
            await asyncio.wait([asyncio.wrap_future(f) for f in todo.waiting.values()])
        self._take_waiting(columns, todo)
        self.store(columns, todo.results)

    def _hand_over(self, columns: Columns, todo: Todo, computed: list[Any]) -> None:
        node, errors = self.node, columns.get(ERROR)
        if todo.every and node.cache is None and node.single is not None:
            todo.results = computed  # nothing to check, store or hand over
            return
        results = todo.results
        for row, result in zip(todo.rows, computed, strict=True):
            failed = None if errors is None else errors[row]
            if failed is not None:  # this node's failure (rows failed upstream are not called)
                node.abandon(todo.keys[row], failed.original)
                continue
            try:
                results[row] = node.end(todo.keys[row], result)
            except ValueError as error:  # the output check
                self.fail(error, columns, row, errors, row)

    def _take_waiting(self, columns: Columns, todo: Todo) -> None:
        errors = columns.get(ERROR)
        for row, running in todo.waiting.items():
            try:
                todo.results[row] = self.node.shared(todo.keys[row], running)  # type: ignore[arg-type]
                todo.cached += 1
            except Exception as error:  # the identical call's failure is this row's
                self.fail(error, columns, row, errors, row)

    def store(self, columns: Columns, results: list[Any]) -> None:
        if len(self.outputs) == 1:
            columns[self.outputs[0]] = results
            return
        width, errors = len(self.outputs), columns.get(ERROR)
        if errors is not None:  # failed here or upstream: no outputs
            results = [
                (None,) * width if e is not None else r
                for r, e in zip(results, errors, strict=True)
            ]
        for name, values in zip(self.outputs, zip(*results, strict=True), strict=True):
            columns[name] = list(values)

    # -- arguments, failures, reports -----------------------------------------------------------

    def arguments(self, columns: Columns, n_rows: int) -> list[Any]:
        constants = self.constants
        return [
            columns[a] if a in columns else itertools.repeat(constants[a], n_rows)
            for a in self.args
        ]

    def row_arguments(self, columns: Columns, row: int) -> dict[str, Any]:
        """One row's arguments by name."""
        return {a: columns[a][row] if a in columns else self.constants[a] for a in self.args}

    def fail(self, error: Exception, columns: Columns, row: int, errors: Errors, at: int) -> None:
        """Row `row` of `columns` (row `at` of the batch) raised `error`: raise it, or, under
        on_error "skip"/"collect", record it for the row and go on with the others."""
        wrapped = self.node.failure(error, self.row_arguments(columns, row))
        if errors is None or self.node.on_error == "raise":
            raise wrapped from error
        errors[at] = wrapped

    def reported(self, todo: Todo, started: float, failed: int) -> None:
        """Tell the driver's callbacks about `todo`'s batch (if any listen): the rows
        called, the hits (stored or shared), and `failed` of its rows."""
        self.reported_rows(len(todo.rows), todo.cached, started, failed)

    def reported_rows(self, rows: int, cached: int, started: float, failed: int = 0) -> None:
        if self.report is not None:
            seconds = time.perf_counter() - started
            retried = self._new_retries()
            self.report.record(self.label, rows, seconds, cached, failed, retried)

    def _retry(self) -> None:
        next(self.retried)

    def _new_retries(self) -> int:
        """Retries since the last report (a batch reports those of batches running beside
        it too: the totals are exact, their split between batches is not)."""
        total = next(self.retried) - self._reported_retries  # this next() is not a retry
        self._reported_retries += total + 1
        return total


class SyncNodes:
    """Consecutive sync nodes, each over whole columns."""

    is_async = False

    def __init__(self, calls: list[ColumnCall]):
        self.calls = calls

    def compute(self, columns: Columns, n_rows: int) -> None:
        errors = columns.get(ERROR)
        for call in self.calls:
            started, before = time.perf_counter(), failures(errors)
            todo = call.todo(columns, n_rows)
            with call.computing(todo):
                subset = call.subset(columns, todo)
                computed = self._rows(call, subset, len(todo.rows), errors, todo.rows)
                call.complete(columns, todo, computed)
            call.reported(todo, started, failures(errors) - before)

    @staticmethod
    def _rows(
        call: ColumnCall, columns: Columns, n_rows: int, errors: Errors, rows: Sequence[int]
    ) -> list[Any]:
        """The node over the `n_rows` rows of `columns`, which are the batch's `rows`."""
        if call.threads is not None:
            return SyncNodes._threaded(call, columns, n_rows, errors, rows)
        results: list[Any] = []
        calls = map(call.func, *call.arguments(columns, n_rows))
        with call.scope():
            while True:
                try:  # extend keeps what was computed, so len(results) is the failing row
                    results.extend(calls)
                    return results
                except Exception as error:  # `calls` goes on with the next row
                    row = len(results)
                    call.fail(error, columns, row, errors, rows[row])
                    results.append(None)

    @staticmethod
    def _threaded(
        call: ColumnCall, columns: Columns, n_rows: int, errors: Errors, rows: Sequence[int]
    ) -> list[Any]:
        """`_rows` on the node's threads: at most `max_concurrency` calls at once in this
        process, as the local executors run a sync node that does I/O."""
        pool, arguments = call.pool(), zip(*call.arguments(columns, n_rows), strict=False)
        with call.scope():  # each call runs in a copy of this context: it sees its node
            futures = [
                pool.submit(contextvars.copy_context().run, call.func, *row)
                for row in itertools.islice(arguments, n_rows)
            ]
        results: list[Any] = []
        try:
            for row, future in enumerate(futures):
                try:
                    results.append(future.result())
                except Exception as error:
                    call.fail(error, columns, row, errors, rows[row])
                    results.append(None)
        finally:
            for future in futures:  # raised: the rows not started are dropped
                future.cancel()
        return results


class AsyncNode:
    """One async node: every row awaited together, at most `slots.limit` in flight at once
    in this process (Daft runs a worker's async batches on one event loop, concurrently).

    A batch that fits takes its slots at once. A node with retries takes a slot per
    attempt instead (`per_attempt`, inside its call), so a backoff wait holds none.
    """

    is_async = True

    def __init__(self, call: ColumnCall, slots: LoopSlots, per_attempt: bool):
        self.call = call
        self.limit = slots.limit
        self._slots = slots
        self.per_attempt = per_attempt

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        errors = columns.get(ERROR)
        started, before = time.perf_counter(), failures(errors)
        todo = call.todo(columns, n_rows)
        with call.computing(todo):
            subset = call.subset(columns, todo)
            computed = await self._rows(subset, len(todo.rows), errors, todo.rows)
            await call.acomplete(columns, todo, computed)
        call.reported(todo, started, failures(errors) - before)

    async def _rows(
        self, columns: Columns, n_rows: int, errors: Errors, rows: Sequence[int]
    ) -> list[Any]:
        with self.call.scope():  # entered before the tasks exist: each copies the context
            results = await self._gathered(columns, n_rows)
        for row, result in enumerate(results):
            if isinstance(result, Exception):
                self.call.fail(result, columns, row, errors, rows[row])
                results[row] = None
            elif isinstance(result, BaseException):
                raise result
        return results

    async def _gathered(self, columns: Columns, n_rows: int) -> list[Any]:
        func = self.call.func
        slots = self._slots.here()
        rows = self.call.arguments(columns, n_rows)
        if self.per_attempt:
            return await asyncio.gather(*map(func, *rows), return_exceptions=True)
        if slots.take(n_rows):  # the whole batch fits: no per-row wrapper
            try:
                return await asyncio.gather(*map(func, *rows), return_exceptions=True)
            finally:
                slots.give(n_rows)

        async def bounded(*row: Any) -> Any:
            await slots.wait()
            try:
                return await func(*row)
            finally:
                slots.give(1)

        return await asyncio.gather(*map(bounded, *rows), return_exceptions=True)


class ArrowNode:
    """One `@node(batch=True)` node, called once per batch with Arrow arrays. Under
    on_error "skip"/"collect", a failing call fails every row it was given."""

    is_async = False

    def __init__(self, call: ColumnCall):
        self.call = call

    def __call__(self, arrays: dict[str, Any], n_rows: int) -> list[Any]:
        """The node's result per output, as returned (Arrow arrays, lists, numpy)."""
        kwargs = {
            a: arrays[a] if a in arrays else as_argument(self.call.constants[a], n_rows)
            for a in self.call.args
        }
        try:
            with self.call.scope():
                result = self.call.func(**kwargs)
            return [result] if len(self.call.outputs) == 1 else list(result)
        except Exception as error:
            raise self._failed(error, {a: f"<{n_rows} rows>" for a in arrays}) from error

    def _failed(self, error: Exception, inputs: dict[str, Any]) -> ExecutionError:
        node = self.call.node
        return wrap_error(error, node.label, summarize_inputs(inputs), None, node.on_error)

    def compute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        errors = columns.get(ERROR)
        started, before = time.perf_counter(), failures(errors)
        todo = call.todo(columns, n_rows)
        with call.computing(todo):
            computed = self._rows(call.subset(columns, todo), len(todo.rows), errors, todo.rows)
            parts = [computed[name] for name in call.outputs]
            call.complete(
                columns, todo, parts[0] if len(parts) == 1 else list(zip(*parts, strict=True))
            )
        call.reported(todo, started, failures(errors) - before)

    def _rows(self, columns: Columns, n_rows: int, errors: Errors, rows: Sequence[int]) -> Columns:
        """The node's outputs over `n_rows` rows of `columns` (the batch's `rows`)."""
        outputs = self.call.outputs
        if not n_rows:  # every row failed upstream or is cached: no call
            return {name: [] for name in outputs}
        try:
            arrays = {a: _array(columns[a]) for a in self.call.args if a in columns}
            parts = self(arrays, n_rows)
            try:
                return {
                    name: as_values(part, n_rows, self.call.label)
                    for name, part in zip(outputs, parts, strict=True)
                }
            except Exception as error:
                raise self._failed(error, {}) from error
        except ExecutionError as error:
            if errors is None or error.on_error == "raise":
                raise
            for row in rows:
                errors[row] = error
            return {name: [None] * n_rows for name in outputs}


class GroupedNode:
    """One `@node(batch_size=N)` node: the rows of a batch in chunks of N, each chunk one
    call with a list per argument. The rows are all here, so nothing waits for company.
    Async chunks are awaited together, at most the node's max_concurrency (else the
    engine's limit) grouped calls in flight, a slot per attempt (`ColumnCall`'s `slots`). A
    chunk whose call fails, or returns a list of the wrong length, fails each of its rows:
    raised, or under on_error "skip"/"collect" recorded per row."""

    def __init__(self, call: ColumnCall, size: int, is_async: bool):
        self.call = call
        self.size = size
        self.is_async = is_async

    def compute(self, columns: Columns, n_rows: int) -> None:
        started, before = time.perf_counter(), failures(columns.get(ERROR))
        call, todo = self.call, self.call.todo(columns, n_rows)
        with call.computing(todo):
            subset = call.subset(columns, todo)
            with call.scope():
                outcomes = [self._outcome(lists, n) for lists, n in self._chunks(subset, todo)]
            call.complete(columns, todo, self._results(subset, todo, outcomes, columns))
        call.reported(todo, started, failures(columns.get(ERROR)) - before)

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        started, before = time.perf_counter(), failures(columns.get(ERROR))
        call, todo = self.call, self.call.todo(columns, n_rows)
        with call.computing(todo):
            subset = call.subset(columns, todo)
            chunks = self._chunks(subset, todo)
            with call.scope():  # entered before the tasks exist: each copies the context
                outcomes = await asyncio.gather(*(self._aoutcome(ls, n) for ls, n in chunks))
            await call.acomplete(columns, todo, self._results(subset, todo, outcomes, columns))
        call.reported(todo, started, failures(columns.get(ERROR)) - before)

    def _chunks(self, columns: Columns, todo: Todo) -> list[tuple[list[list[Any]], int]]:
        """(a list per argument, rows) for each chunk of `size` rows to call."""
        constants, chunks, n_rows = self.call.constants, [], len(todo.rows)
        for start in range(0, n_rows, self.size):
            n = min(self.size, n_rows - start)
            lists = [
                columns[a][start : start + n] if a in columns else [constants[a]] * n
                for a in self.call.args
            ]
            chunks.append((lists, n))
        return chunks

    def _outcome(self, lists: list[list[Any]], n_rows: int) -> list[Any] | Exception:
        try:
            return split(self.call.func(*lists), n_rows, self.call.label)
        except Exception as error:
            return error

    async def _aoutcome(self, lists: list[list[Any]], n_rows: int) -> list[Any] | Exception:
        try:
            return split(await self.call.func(*lists), n_rows, self.call.label)
        except Exception as error:
            return error

    def _results(
        self, subset: Columns, todo: Todo, outcomes: list[list[Any] | Exception], columns: Columns
    ) -> list[Any]:
        """Each chunk's results, or its failure for each of its rows."""
        errors, results, rows = columns.get(ERROR), [], todo.rows
        for start, outcome in zip(range(0, len(rows), self.size), outcomes, strict=True):
            if isinstance(outcome, Exception):
                n = min(self.size, len(rows) - start)
                for row in range(start, start + n):
                    self.call.fail(outcome, subset, row, errors, rows[row])
                results.extend([None] * n)
            else:
                results.extend(outcome)
        return results


_INTERRUPTED = RuntimeError("the batch computing this call was interrupted")


def failures(errors: Errors) -> int:
    """How many rows of a batch have failed so far."""
    return 0 if errors is None else sum(e is not None for e in errors)


def _array(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values  # Python objects Arrow cannot hold: the list itself


def _by_name(func: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`func` called with keyword arguments from positional ones (keyword-only parameters,
    or arguments that skip a defaulted parameter)."""

    def call(*values: Any) -> Any:
        return func(**dict(zip(names, values, strict=True)))

    return call
