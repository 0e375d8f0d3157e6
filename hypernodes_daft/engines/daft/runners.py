"""Plan steps run column-wise over the rows of one batch, as Python lists.

A runner reads its arguments by name from `columns` (a dict of equal-length lists) or from
its constants, and writes its outputs into `columns`:

    runner = make_runner(group, constants, Setup(limit=100), keys={})
    runner.compute(columns, n_rows)            # or: await runner.acompute(columns, n_rows)

- `SyncNodes`: each node runs as `map(func, *columns)`: no per-row dict, no per-row Daft call.
- `AsyncNode`: the rows awaited together on the running event loop, at most `limit` at once.
- `BatchNode`: a `@node(batch=True)` node, called once with Arrow arrays.
- `ListBatchNode`: a `@node(batch_size=N)` node, called with lists, N rows at a time.
- `NestedInline`: a nested pipeline once per row: its inner plan over the same rows.
- `NestedMap`: a nested pipeline mapped over lists: every row's items are flattened into one
  batch (row and position kept), the inner plan runs over it, results are regrouped per row
  in order. Inner async nodes therefore await the items of all rows together.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..._batch import as_argument, as_values
from ..._batching import split
from ..._limits import ClusterLimit, LoopSlots
from ...cache import InFlight, key_or_none, lineages, lookup
from ...context import node_context
from ...exceptions import ExecutionError, summarize_inputs, wrap_error
from ...plan import RunPlan, Step, check_map_inputs
from ...results import ERROR_FIELD, policy
from ...runtime import NO_SERVICES, Services, node_calls, resilient
from ..local.sequential import compile_run, map_items
from .groups import Group, plan_groups

Columns = dict[str, Any]  # name -> list of values, one per row
# per row of a batch: None, or why the row failed (an ExecutionError raised here, or the
# record dict of an earlier function); None for the whole list: failures are not kept
Errors = list[Any] | None
ERROR = ERROR_FIELD  # the column of error records (on_error "skip"/"collect")


@dataclass
class _Todo:
    """The rows of a batch a node still has to compute: not failed upstream, not in the
    cache, and one row per distinct cache key (`copies`: row -> the row computing its key,
    so identical calls of a batch are made once)."""

    results: list[Any]  # per row: the cached result, or None until computed
    keys: list[Any]  # per row: the cache key (None: no cache, or no stable key)
    rows: list[int]
    copies: dict[int, int]
    cached: int


class _Call:
    """One plain node over columns."""

    def __init__(
        self,
        step: Step,
        constants: dict[str, Any],
        setup: Setup,
        lineage: str,
        slots: LoopSlots | ClusterLimit | None = None,
    ):
        services = setup.services
        self.label = step.label
        self.report = setup.report
        self.args = step.args
        self.outputs = step.outputs
        self.constants = constants
        cached = services.cache is not None and getattr(step.node, "cache", True)
        self.cache = services.cache if cached else None
        self.lineage = lineage
        self.on_error = policy(step.node, setup.on_error)
        # the async bound is the AsyncNode's (per batch), unless `slots` bound each attempt
        self.retried = itertools.count()  # next() is atomic: threads and tasks share it
        self._reported_retries = 0
        func = resilient(step.node.func, step.node, step.is_async, slots, None, self._retry)
        positional = step.args == tuple(step.node.root_args[: len(step.args)])
        self.func: Callable[..., Any] = func if positional else _by_name(func, step.args)
        # a sync node given its own bound does I/O: its rows run on that many threads
        bound = getattr(step.node, "max_concurrency", None)
        if isinstance(bound, ClusterLimit):
            bound = min(bound.limit, setup.limit)
        self.threads: int | None = bound if not step.is_async and bound and bound > 1 else None
        self.inflight = InFlight()  # keys computed by a batch now, for the others
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

    def reported(self, rows: int, cached: int, started: float, failed: int = 0) -> None:
        """Tell the driver's callbacks about a batch of this node's calls (if any listen):
        `rows` calls, `cached` hits, `failed` of the calls recorded as failures."""
        if self.report is not None:
            seconds = time.perf_counter() - started
            self.report.record(self.label, rows, seconds, cached, failed, self._new_retries())

    def _retry(self) -> None:
        next(self.retried)

    def _new_retries(self) -> int:
        """Retries since the last report (a batch reports those of batches running beside
        it too: the totals are exact, their split between batches is not)."""
        total = next(self.retried) - self._reported_retries  # this next() is not a retry
        self._reported_retries += total + 1
        return total

    def arguments(self, columns: Columns, n_rows: int) -> list[Any]:
        constants = self.constants
        return [
            columns[a] if a in columns else itertools.repeat(constants[a], n_rows)
            for a in self.args
        ]

    def row_arguments(self, columns: Columns, row: int) -> dict[str, Any]:
        """One row's arguments by name."""
        return {a: columns[a][row] if a in columns else self.constants[a] for a in self.args}

    def failed(self, error: Exception, row: int, columns: Columns) -> ExecutionError:
        inputs = summarize_inputs(self.row_arguments(columns, row))
        return wrap_error(error, self.label, inputs, None, self.on_error)

    def fail(self, error: Exception, columns: Columns, row: int, errors: Errors, at: int) -> None:
        """Row `row` of `columns` (row `at` of the batch) raised `error`: raise it, or, under
        on_error "skip"/"collect", record it for the row and go on with the others."""
        wrapped = self.failed(error, row, columns)
        if errors is None or self.on_error == "raise":
            raise wrapped from error
        errors[at] = wrapped

    def todo(self, columns: Columns, n_rows: int) -> _Todo | None:
        """What is left to compute (None: every row, without a cache)."""
        errors = columns.get(ERROR)
        live = range(n_rows) if errors is None else [r for r in range(n_rows) if errors[r] is None]
        if self.cache is None and len(live) == n_rows:
            return None
        todo = _Todo([None] * n_rows, [None] * n_rows, [], {}, 0)
        computing: dict[str, int] = {}  # key -> the row computing it
        for row in live:
            key = None if self.cache is None else self._key(columns, row)
            todo.keys[row] = key
            if key is not None:
                found, todo.results[row] = lookup(self.cache, key)
                if found:
                    todo.cached += 1
                    continue
                if key in computing:
                    todo.copies[row] = computing[key]
                    continue
                computing[key] = row
            todo.rows.append(row)
        return todo

    def _key(self, columns: Columns, row: int) -> str | None:
        return key_or_none(self.label, self.lineage, self.row_arguments(columns, row))

    def subset(self, columns: Columns, rows: list[int]) -> Columns:
        return {a: [columns[a][row] for row in rows] for a in self.args if a in columns}

    def complete(self, columns: Columns, todo: _Todo, computed: list[Any]) -> None:
        """Merge the computed rows into the cached ones, store the outputs, then cache the
        new results (only those that passed the output checks)."""
        results, errors = todo.results, columns.get(ERROR)
        for row, result in zip(todo.rows, computed, strict=True):
            results[row] = result
        for row, computing in todo.copies.items():
            results[row] = results[computing]
            if errors is not None:
                errors[row] = errors[computing]
        self.store(columns, results)
        for row in todo.rows:
            key = todo.keys[row]
            if key is not None and (errors is None or errors[row] is None):
                self.cache.put(key, results[row])

    def reported_todo(self, todo: _Todo, started: float, failed: int) -> None:
        self.reported(len(todo.rows), todo.cached + len(todo.copies), started, failed)

    def store(self, columns: Columns, results: list[Any]) -> None:
        if len(self.outputs) == 1:
            columns[self.outputs[0]] = results
            return
        width = len(self.outputs)
        errors = columns.get(ERROR)
        for row, result in enumerate(results):
            if errors is not None and errors[row] is not None:
                results[row] = (None,) * width  # failed (here or upstream): no outputs
            elif not isinstance(result, (tuple, list)) or len(result) != width:
                got = f"{len(result)} values" if isinstance(result, (tuple, list)) else repr(result)
                error = ValueError(
                    f"node declares {width} outputs {self.outputs} but returned {got}"
                )
                self.fail(error, columns, row, errors, row)
                results[row] = (None,) * width
        for name, values in zip(self.outputs, zip(*results, strict=True), strict=True):
            columns[name] = list(values)


class SyncNodes:
    """Consecutive sync nodes, each over whole columns."""

    is_async = False

    def __init__(self, calls: list[_Call]):
        self.calls = calls

    def compute(self, columns: Columns, n_rows: int) -> None:
        errors = columns.get(ERROR)
        for call in self.calls:
            started, before = time.perf_counter(), failures(errors)
            todo = call.todo(columns, n_rows)
            if todo is None:
                call.store(columns, self._rows(call, columns, n_rows, errors, None))
                call.reported(n_rows, 0, started, failures(errors) - before)
                continue
            subset = call.subset(columns, todo.rows)
            computed = self._rows(call, subset, len(todo.rows), errors, todo.rows)
            call.complete(columns, todo, computed)
            call.reported_todo(todo, started, failures(errors) - before)

    @staticmethod
    def _rows(
        call: _Call, columns: Columns, n_rows: int, errors: Errors, rows: list[int] | None
    ) -> list[Any]:
        """The node over `n_rows` rows of `columns`: the batch's `rows` (None: all)."""
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
                    call.fail(error, columns, row, errors, row if rows is None else rows[row])
                    results.append(None)

    @staticmethod
    def _threaded(
        call: _Call, columns: Columns, n_rows: int, errors: Errors, rows: list[int] | None
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
                    call.fail(error, columns, row, errors, row if rows is None else rows[row])
                    results.append(None)
        finally:
            for future in futures:  # raised: the rows not started are dropped
                future.cancel()
        return results


class AsyncNode:
    """One async node: every row awaited together, at most `slots.limit` in flight at once
    in this process (Daft runs a worker's async batches on one event loop, concurrently).

    A batch that fits takes its slots at once. A node with retries takes a slot per
    attempt instead (`per_attempt`, inside its call), so a backoff wait holds none. With a
    cache, a row whose call another batch is making (same key) waits for its outcome; the
    batch's own calls are handed to such waiters before it waits itself, so two batches
    waiting on each other both go on.
    """

    is_async = True

    def __init__(self, call: _Call, slots: LoopSlots, per_attempt: bool):
        self.call = call
        self.limit = slots.limit
        self._slots = slots
        self.per_attempt = per_attempt

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        errors = columns.get(ERROR)
        started, before = time.perf_counter(), failures(errors)
        todo = call.todo(columns, n_rows)
        if todo is None:
            call.store(columns, await self._rows(columns, n_rows, errors, None))
            call.reported(n_rows, 0, started, failures(errors) - before)
            return
        waiting = self._join(todo)
        try:
            subset = call.subset(columns, todo.rows)
            computed = await self._rows(subset, len(todo.rows), errors, todo.rows)
            self._hand_over(todo, computed, errors)
        finally:
            for row in todo.rows:  # interrupted: the batches waiting go on (no-op when done)
                call.inflight.finish(todo.keys[row], error=_INTERRUPTED)
        if waiting:
            await self._wait(columns, todo, waiting, errors)
        call.complete(columns, todo, computed)
        call.reported_todo(todo, started, failures(errors) - before)

    def _join(self, todo: _Todo) -> dict[int, Any]:
        """Take out of `todo` the rows whose call another batch is making: row -> its
        outcome's future. The rows left to compute announce theirs."""
        waiting, computing = {}, []
        for row in todo.rows:
            key = todo.keys[row]
            running = None if key is None else self.call.inflight.join(key)
            if running is None:
                computing.append(row)
            else:
                waiting[row] = running
        todo.rows = computing
        return waiting

    def _hand_over(self, todo: _Todo, computed: list[Any], errors: Errors) -> None:
        """Each computed row's outcome, to the batches waiting for its key."""
        for row, result in zip(todo.rows, computed, strict=True):
            failed = None if errors is None else errors[row]
            if failed is None:
                self.call.inflight.finish(todo.keys[row], result)
            else:
                self.call.inflight.finish(todo.keys[row], error=failed.original)

    async def _wait(
        self, columns: Columns, todo: _Todo, waiting: dict[int, Any], errors: Errors
    ) -> None:
        """The outcomes of the rows another batch computed: a hit each, or its failure."""
        shared = {row: asyncio.wrap_future(future) for row, future in waiting.items()}
        await asyncio.wait(shared.values())
        for row, outcome in shared.items():
            error = outcome.exception()
            if error is None:
                todo.results[row] = outcome.result()
                todo.cached += 1
            else:
                self.call.fail(error, self.call.subset(columns, [row]), 0, errors, row)

    async def _rows(
        self, columns: Columns, n_rows: int, errors: Errors, rows: list[int] | None
    ) -> list[Any]:
        with self.call.scope():  # entered before the tasks exist: each copies the context
            results = await self._gathered(columns, n_rows)
        for row, result in enumerate(results):
            if isinstance(result, Exception):
                self.call.fail(result, columns, row, errors, row if rows is None else rows[row])
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


class BatchNode:
    """One `@node(batch=True)` node, called once per batch with Arrow arrays. Under
    on_error "skip"/"collect", a failing call fails every row it was given."""

    is_async = False

    def __init__(self, call: _Call):
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
            summary = summarize_inputs({a: f"<{n_rows} rows>" for a in arrays})
            raise wrap_error(error, self.call.label, summary, None, self.call.on_error) from error

    def compute(self, columns: Columns, n_rows: int) -> None:
        call = self.call
        errors = columns.get(ERROR)
        started, before = time.perf_counter(), failures(errors)
        todo = call.todo(columns, n_rows)
        if todo is None:
            columns.update(self._rows(columns, n_rows, errors, range(n_rows)))
            call.reported(n_rows, 0, started, failures(errors) - before)
            return
        subset = call.subset(columns, todo.rows)
        computed = self._rows(subset, len(todo.rows), errors, todo.rows)
        rows = list(zip(*(computed[name] for name in call.outputs), strict=True))
        fresh = [row[0] for row in rows] if len(call.outputs) == 1 else rows
        call.complete(columns, todo, fresh)
        call.reported_todo(todo, started, failures(errors) - before)

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
                raise wrap_error(error, self.call.label, "", None, self.call.on_error) from error
        except ExecutionError as error:
            if errors is None or error.on_error == "raise":
                raise
            for row in rows:
                errors[row] = error
            return {name: [None] * n_rows for name in outputs}


class ListBatchNode:
    """One `@node(batch_size=N)` node: the rows of a batch in chunks of N, each chunk one
    call with a list per argument. The rows are all here, so nothing waits for company.
    Async chunks are awaited together, at most the node's max_concurrency (else the
    engine's limit) grouped calls in flight, a slot per attempt (`_Call`'s `slots`). A
    chunk whose call fails, or returns a list of the wrong length, fails each of its rows:
    raised, or under on_error "skip"/"collect" recorded per row."""

    def __init__(self, call: _Call, size: int, is_async: bool):
        self.call = call
        self.size = size
        self.is_async = is_async

    def compute(self, columns: Columns, n_rows: int) -> None:
        started = time.perf_counter(), failures(columns.get(ERROR))
        todo, rows, subset = self._todo(columns, n_rows)
        with self.call.scope():
            outcomes = [self._outcome(lists, n) for lists, n in self._chunks(subset, len(rows))]
        self._complete(columns, todo, rows, subset, outcomes, started)

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        started = time.perf_counter(), failures(columns.get(ERROR))
        todo, rows, subset = self._todo(columns, n_rows)
        chunks = self._chunks(subset, len(rows))
        with self.call.scope():  # entered before the tasks exist: each copies the context
            outcomes = await asyncio.gather(*(self._aoutcome(lists, n) for lists, n in chunks))
        self._complete(columns, todo, rows, subset, outcomes, started)

    def _todo(self, columns: Columns, n_rows: int) -> tuple[_Todo | None, Sequence[int], Columns]:
        """What to compute: (the todo, None for every row; the batch's rows computed; the
        columns they are read from, one entry per computed row)."""
        todo = self.call.todo(columns, n_rows)
        if todo is None:
            return None, range(n_rows), columns
        return todo, todo.rows, self.call.subset(columns, todo.rows)

    def _chunks(self, columns: Columns, n_rows: int) -> list[tuple[list[list[Any]], int]]:
        """(a list per argument, rows) for each chunk of `size` rows."""
        constants, chunks = self.call.constants, []
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

    def _complete(
        self,
        columns: Columns,
        todo: _Todo | None,
        rows: Sequence[int],
        subset: Columns,
        outcomes: list[list[Any] | Exception],
        started: tuple[float, int],
    ) -> None:
        """Each chunk's results, or its failure for each of its rows; then store them and
        report the batch (`started`: when, and how many rows had failed before)."""
        call, errors, results = self.call, columns.get(ERROR), []
        for start, outcome in zip(range(0, len(rows), self.size), outcomes, strict=True):
            if isinstance(outcome, Exception):
                n = min(self.size, len(rows) - start)
                for row in range(start, start + n):
                    call.fail(outcome, subset, row, errors, rows[row])
                results.extend([None] * n)
            else:
                results.extend(outcome)
        if todo is None:
            call.store(columns, results)
            call.reported(len(rows), 0, started[0], failures(errors) - started[1])
        else:
            call.complete(columns, todo, results)
            call.reported_todo(todo, started[0], failures(errors) - started[1])


class PlanRunner:
    """A whole (inner) plan over columns. Its steps that read only constants run now; if
    one fails under on_error "skip"/"collect", every row fails with it (`failure`)."""

    def __init__(self, plan: RunPlan, constants: dict[str, Any], setup: Setup):
        self.constants = dict(constants)
        self.runners: list[Any] = []
        self.failure: ExecutionError | None = None
        keys = setup.lineages(plan)
        for group in plan_groups(plan, set(self.constants)):
            if group.kind == "driver":
                outputs, failure = run_on_driver(group.steps[0], self.constants, setup)
                self.failure = self.failure or failure
                self.constants.update(outputs)
            else:
                self.runners.append(make_runner(group, self.constants, setup, keys))
        self.is_async = any(r.is_async for r in self.runners)

    def compute(self, columns: Columns, n_rows: int) -> None:
        self._fail_rows(columns, n_rows)
        for runner in self.runners:
            runner.compute(columns, n_rows)

    def _fail_rows(self, columns: Columns, n_rows: int) -> None:
        if self.failure is not None:
            errors = columns[ERROR]
            for row in range(n_rows):
                errors[row] = errors[row] or self.failure

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        self._fail_rows(columns, n_rows)
        for runner in self.runners:
            if runner.is_async:
                await runner.acompute(columns, n_rows)
            else:
                runner.compute(columns, n_rows)

    def column(self, name: str, columns: Columns, n_rows: int) -> list[Any]:
        """An output's values, also when it is a constant."""
        return columns[name] if name in columns else [self.constants[name]] * n_rows


class _Nested:
    """A nested pipeline: outer columns renamed in, the inner plan, outputs renamed out."""

    def __init__(self, step: Step, constants: dict[str, Any], setup: Setup):
        nested = step.nested
        assert nested is not None
        self.label = step.label
        self.nested = nested
        self.renamed = [(o, i) for o, i in nested.rename_in if o not in constants]
        known = dict(nested.bound)  # inner values known now; columns override them per row
        known.update({i: constants[o] for o, i in nested.rename_in if o in constants})
        varying = {i for _, i in self.renamed} | set(nested.map_over)
        self.known = known
        fixed = {k: v for k, v in known.items() if k not in varying}
        self.inner = PlanRunner(nested.item, fixed, setup)
        self.is_async = self.inner.is_async

    def compute(self, columns: Columns, n_rows: int) -> None:
        inner, n_inner, counts = self.prepare(columns, n_rows)
        try:
            self.inner.compute(inner, n_inner)
        except ExecutionError as error:
            raise error.located(self.label) from error.original
        self.finish(columns, inner, n_inner, counts)

    async def acompute(self, columns: Columns, n_rows: int) -> None:
        inner, n_inner, counts = self.prepare(columns, n_rows)
        try:
            await self.inner.acompute(inner, n_inner)
        except ExecutionError as error:
            raise error.located(self.label) from error.original
        self.finish(columns, inner, n_inner, counts)

    def prepare(self, columns: Columns, n_rows: int) -> tuple[Columns, int, list[int]]:
        """The inner plan's columns, their length, and how many inner rows each row has."""
        inner = {i: columns[o] for o, i in self.renamed}
        if ERROR in columns:  # a copy: the inner plan's failures are located in `finish`
            inner[ERROR] = list(columns[ERROR])
        return inner, n_rows, []

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        for inner_name, outer in self.nested.rename_out:
            columns[outer] = self.inner.column(inner_name, inner, n_inner)
        errors = columns.get(ERROR)
        if errors is not None:
            for row, error in enumerate(inner[ERROR]):
                if error is not None and errors[row] is None:
                    errors[row] = error.located(self.label)


class NestedInline(_Nested):
    """A nested pipeline run once per row: the inner plan over the same rows."""


class NestedMap(_Nested):
    """A nested pipeline mapped over lists: every row's items flattened into one batch.
    A row fails with the first of its items that fails (rows failed upstream add none)."""

    def prepare(self, columns: Columns, n_rows: int) -> tuple[Columns, int, list[int]]:
        nested = self.nested
        errors = columns.get(ERROR)
        given = {i: columns[o] for o, i in self.renamed}
        repeated = [name for name in given if name not in nested.map_over]
        flat: Columns = {name: [] for name in [*nested.map_over, *repeated]}
        counts = []
        label = f"nested pipeline '{self.label}'"
        for row in range(n_rows):
            if errors is not None and errors[row] is not None:
                counts.append(0)
                continue
            values = {**self.known, **{name: column[row] for name, column in given.items()}}
            check_map_inputs(label, values, nested.map_over, nested.map_mode)
            lists = [values[name] for name in nested.map_over]
            items = list(
                zip(*lists, strict=True) if nested.map_mode == "zip" else itertools.product(*lists)
            )
            for name, column in zip(nested.map_over, zip(*items, strict=True), strict=False):
                flat[name].extend(column)
            for name in repeated:
                flat[name].extend(itertools.repeat(values[name], len(items)))
            counts.append(len(items))
        if errors is not None:
            flat[ERROR] = [None] * sum(counts)
        return flat, sum(counts), counts

    def finish(self, columns: Columns, inner: Columns, n_inner: int, counts: list[int]) -> None:
        errors = columns.get(ERROR)
        if errors is not None:
            start = 0
            for row, count in enumerate(counts):
                inner_errors = inner[ERROR][start : start + count]
                failed = [(p, e) for p, e in enumerate(inner_errors) if e is not None]
                if failed:
                    position, error = failed[0]
                    errors[row] = error.located(self.label, position)
                start += count
        for inner_name, outer in self.nested.rename_out:
            values = self.inner.column(inner_name, inner, n_inner)
            grouped, start = [], 0
            for row, count in enumerate(counts):
                failed = errors is not None and errors[row] is not None
                grouped.append(None if failed else values[start : start + count])
                start += count
            columns[outer] = grouped


@dataclass(frozen=True)
class Setup:
    """What building runners needs from the engine."""

    limit: int = 100  # async calls in flight per node, unless the node sets its own
    services: Services = NO_SERVICES  # with the driver's events: driver steps fire hooks
    in_process: bool = True  # the native runner: Daft functions run in this process
    report: Any = None  # where batches are reported for the callbacks (reporting.py)
    on_error: str = "raise"  # the run's, for the nodes that do not set their own
    tolerant: bool = False  # some node may record failures: frames carry an ERROR column

    def lineages(self, plan: RunPlan) -> dict[int, str]:
        """Each step's lineage (its cache key's first part), by step id; empty: no cache."""
        if self.services.cache is None:
            return {}
        return {id(s): key for s, key in zip(plan.steps, lineages(plan.steps), strict=True)}


def make_runner(group: Group, constants: dict[str, Any], setup: Setup, keys: dict[int, str]) -> Any:
    """The runner for a group of steps (not "driver": those run at planning time)."""
    step = group.steps[0]
    if group.kind in ("nested", "map"):
        kind = NestedInline if group.kind == "nested" else NestedMap
        return kind(step, constants, setup)
    bound, cluster = _bounds(step, setup)
    if group.kind == "lists":  # its async bound counts grouped calls, taken per attempt
        slots = LoopSlots(bound) if step.is_async else None
        call = _Call(step, constants, setup, keys.get(id(step), ""), cluster or slots)
        return ListBatchNode(call, step.node.batch_size, step.is_async)
    if group.kind == "async":
        slots = LoopSlots(bound)
        per_attempt = bool(getattr(step.node, "retries", 0))
        limit = cluster or (slots if per_attempt else None)
        call = _Call(step, constants, setup, keys.get(id(step), ""), limit)
        return AsyncNode(call, slots, per_attempt)
    calls = [
        _Call(s, constants, setup, keys.get(id(s), ""), _bounds(s, setup)[1]) for s in group.steps
    ]
    if group.kind == "sync":
        return SyncNodes(calls)
    return BatchNode(calls[0])


def _bounds(step: Step, setup: Setup) -> tuple[int, ClusterLimit | None]:
    """A node's calls in flight per process (its own bound, else the engine's), and its
    ClusterLimit if it has one (then the process bound is the engine's; the cluster's
    slots are taken per call)."""
    bound = getattr(step.node, "max_concurrency", None)
    if isinstance(bound, ClusterLimit):
        return setup.limit, bound
    return bound or setup.limit, None


def run_on_driver(
    step: Step, constants: dict[str, Any], setup: Setup, within: tuple[str, ...] = ()
) -> tuple[dict[str, Any], ExecutionError | None]:
    """Run a step whose inputs are all constants, once, with the local node runtime (its
    node hooks fire; it is not an item of its own): its outputs, and None. If it fails
    under on_error "skip"/"collect", every row fails with it: its outputs are None and its
    error (located in the nested steps `within`) is returned; otherwise it is raised."""
    plan = RunPlan(step.label, (step,), ((0,),), step.args, step.outputs)
    (call,) = node_calls(plan, compile_run, map_items, setup.services)
    values = {a: constants[a] for a in step.args}
    try:
        call(values)
    except ExecutionError as failure:
        error = failure.located(*within) if within else failure
        if not setup.tolerant or error.on_error == "raise":
            raise error from failure.original
        return dict.fromkeys(step.outputs), error
    return {name: values[name] for name in step.outputs}, None


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
