"""One plain node over the columns of a batch: the node runtime's call, row by row.

    call = ColumnCall(step, constants, setup, lineage)
    todo = call.todo(columns, n_rows)        # the rows to call (not cached, not waiting)
    with call.computing(todo):
        results = [call.func(*row) for row in ...]         # the runner's way (runners.py)
        call.complete(columns, todo, results)   # checked, stored, handed over, written

`ColumnCall` meets the cache, the identical calls in flight, the output checks and the
error policy through the node runtime's `PreparedNode`, as the local executors do item by
item: the rows found in the cache or being computed elsewhere are not called; each called
row's result is checked, stored and handed to the rows waiting for it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ...options import SharedLimit
from ...plan import Step
from ...results import ERROR_FIELD, Cancelled
from ...runtime import cancel
from ...runtime.context import node_context
from ...runtime.limits import LoopSlots
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
    cluster: Any = None  # placement.Cluster: checks that resource requests can be held
    native: bool = True  # sync node bodies may run as Daft expressions (native.py)
    cancel: str | None = None  # the id of the run's cancellation token (runtime/cancel.py)


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
    stored: bool = False  # each called row stored as its call returned (`ColumnCall.rows`)
    writes: list[Future[Any]] = field(default_factory=list)  # an object store's, pending


class ColumnCall:
    """One plain node over the columns of a batch, through its `PreparedNode`."""

    def __init__(
        self,
        step: Step,
        constants: dict[str, Any],
        setup: Setup,
        lineage: str,
        slots: LoopSlots | SharedLimit | None = None,
    ):
        # the rows of a batch report to the driver in one record, not as events per call
        self.node = PreparedNode(step, lineage, replace(setup.services, events=None))
        self.label, self.args, self.outputs = step.label, step.args, step.outputs
        self.constants = constants
        self.report = setup.report
        self.retried = itertools.count()  # next() is atomic: threads and tasks share it
        self._reported_retries = 0
        # the async bound is the AsyncNode's (per batch), unless `slots` bound each attempt
        twin = step.options.arrow_function  # a DualNode's batch function runs here
        func = self.node.resilient(twin, limit=slots, on_retry=self._retry)
        self.func: Callable[..., Any] = func if step.positional else _by_name(func, step.args)
        # a sync node given its own bound does I/O: its rows run on that many threads
        bound = step.options.max_concurrency
        if isinstance(bound, SharedLimit):
            bound = min(bound.limit, setup.limit)
        self.threads: int | None = bound if not step.is_async and bound and bound > 1 else None
        self._pool: ThreadPoolExecutor | None = None
        self.cancel_id = setup.cancel

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
            todo.keys[row] = node.key(self.row_arguments(columns, row))
        keyed = [row for row in live if todo.keys[row] is not None]
        begun = dict(zip(keyed, node.begin_many([todo.keys[r] for r in keyed]), strict=True))
        for row in live:
            how, found = begun.get(row, (CALL, None))  # no key (unhashable): called
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

    def rows(self, columns: Columns, todo: Todo) -> tuple[Callable[..., Any], list[Any]]:
        """The function to call per row of `columns` (the rows to call) and its argument
        columns. With a cache, each row's result is stored as soon as its call returns,
        not when the batch ends: a job killed mid-batch keeps every call that finished."""
        arguments = self.arguments(columns, len(todo.rows))
        if self.node.cache is None:
            return self._guarded(self.func), arguments
        todo.stored = True
        keys = [todo.keys[row] for row in todo.rows]
        return self._guarded(self._storing(todo.writes)), [keys, *arguments]

    def token(self) -> cancel.Cancel | None:
        """The cancellation token of the run this batch belongs to (runtime/cancel.py)."""
        return cancel.token_for(self.cancel_id)

    def _guarded(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """`func`, not called once the run is cancelled (the row raises RunCancelled, and
        becomes a Cancelled record); an async call in flight then cancelled says so too."""
        token = self.token()
        if token is None:
            return func
        if self.node.is_async:

            async def aguarded(*row: Any) -> Any:
                token.check()
                try:
                    return await func(*row)
                except asyncio.CancelledError:
                    if token.cancelled:
                        raise token.stopped() from None
                    raise

            return aguarded

        def guarded(*row: Any) -> Any:
            token.check()
            return func(*row)

        return guarded

    def _storing(self, writes: list[Future[Any]]) -> Callable[..., Any]:
        """`func` taking the row's cache key first, ending the call with its result."""
        func, node = self.func, self.node
        if node.is_async:

            async def acall(key: str | None, *row: Any) -> Any:
                try:
                    result = await func(*row)
                except BaseException as error:
                    node.abandon(key, error)
                    raise
                return node.end(key, result, writes)

            return acall

        def call(key: str | None, *row: Any) -> Any:
            try:
                result = func(*row)
            except BaseException as error:
                node.abandon(key, error)
                raise
            return node.end(key, result, writes)

        return call

    @contextmanager
    def computing(self, todo: Todo) -> Iterator[None]:
        """Around computing `todo`: if it is interrupted (raised, cancelled), the calls
        waiting for its rows' keys go on with an error (a no-op for the rows ended)."""
        try:
            yield
        finally:
            if self.node.cache is not None:  # else no row has a key
                for row in todo.rows:
                    self.node.abandon(todo.keys[row], _INTERRUPTED)

    def complete(self, columns: Columns, todo: Todo, computed: list[Any]) -> None:
        """The called rows' results checked, stored and handed over, then the rows waiting
        for another batch take its outcome (blocking until it comes), then the outputs."""
        self._hand_over(columns, todo, computed)
        self._take_waiting(columns, todo)
        wait(todo.writes)  # the batch's entries are stored before its rows go on
        self.store(columns, todo.results)

    async def acomplete(self, columns: Columns, todo: Todo, computed: list[Any]) -> None:
        """`complete` for async nodes: the batch hands its own results over before it waits
        for others, so two batches waiting on each other both go on."""
        self._hand_over(columns, todo, computed)
        pending = [*todo.waiting.values(), *todo.writes]
        if pending:
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])
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
                # (a row its cancelled run did not call holds a record, not an error)
                node.abandon(todo.keys[row], getattr(failed, "original", _INTERRUPTED))
                continue
            if todo.stored:  # checked and stored as the call returned
                results[row] = result
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
        on_error "skip"/"collect", record it for the row and go on with the others. A row
        its cancelled run did not call is a Cancelled record (raised without records)."""
        if isinstance(error, cancel.RunCancelled):
            if errors is None:
                raise error
            errors[at] = Cancelled.of(None, error.reason, self.label).as_row()
            return
        wrapped = self.node.failure(error, self.row_arguments(columns, row))
        if errors is None or self.node.on_error == "raise":
            raise wrapped from error
        errors[at] = wrapped

    def reported(self, todo: Todo, started: float, errors: int) -> None:
        """Tell the driver's callbacks about `todo`'s batch (if any listen): the rows
        called, the hits (stored or shared), and how many of its rows failed (`errors`)."""
        self.reported_rows(len(todo.rows), todo.cached, started, errors)

    def reported_rows(self, rows: int, cached: int, started: float, errors: int = 0) -> None:
        if self.report is not None:
            seconds = time.perf_counter() - started
            retried = self._new_retries()
            self.report.record(self.label, rows, seconds, cached, errors, retried)

    def _retry(self) -> None:
        next(self.retried)

    def _new_retries(self) -> int:
        """Retries since the last report (a batch reports those of batches running beside
        it too: the totals are exact, their split between batches is not)."""
        total = next(self.retried) - self._reported_retries  # this next() is not a retry
        self._reported_retries += total + 1
        return total


_INTERRUPTED = RuntimeError("the batch computing this call was interrupted")


def failures(errors: Errors) -> int:
    """How many rows of a batch have failed so far."""
    return 0 if errors is None else sum(e is not None for e in errors)


def _by_name(func: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`func` called with keyword arguments from positional ones (keyword-only parameters,
    or arguments that skip a defaulted parameter)."""

    def call(*values: Any) -> Any:
        return func(**dict(zip(names, values, strict=True)))

    return call
