"""Plain nodes run column-wise over the rows of one batch, as Python lists.

A runner reads its arguments by name from `columns` (a dict of equal-length lists) or from
its constants, and writes its outputs into `columns`:

    runner = make_runner(group, constants, setup, keys={})    # plan_runner.py
    runner.compute(columns, n_rows)            # or: await runner.acompute(columns, n_rows)

- `SyncNodes`: each node runs as `map(func, *columns)`: no per-row dict, no per-row Daft call.
- `AsyncNode`: the rows awaited together on the running event loop, at most `limit` at once.
- `ArrowNode`: a `@node(batch=True)` node, called once with Arrow arrays.
- `GroupedNode`: a `@node(batch_size=N)` node, called with lists, N rows at a time.

Every runner calls its node through one `ColumnCall` (column_call.py), the node runtime's
call over a batch's rows: only how the rows to call are called differs here.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections.abc import Sequence
from typing import Any

from ...exceptions import ExecutionError, summarize_inputs, wrap_error
from ...runtime import cancel
from ...runtime.arrow_calls import as_argument, as_values
from ...runtime.grouping import split
from ...runtime.limits import LoopSlots
from .column_call import ERROR, ColumnCall, Columns, Errors, Todo, failures


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
                computed = self._rows(call, subset, todo, errors)
                call.complete(columns, todo, computed)
            call.reported(todo, started, failures(errors) - before)

    @staticmethod
    def _rows(call: ColumnCall, columns: Columns, todo: Todo, errors: Errors) -> list[Any]:
        """The node over `columns`, which hold the batch's rows to call (`todo.rows`)."""
        if call.threads is not None:
            return SyncNodes._threaded(call, columns, todo, errors)
        results: list[Any] = []
        rows = todo.rows
        func, arguments = call.rows(columns, todo)
        calls = map(func, *arguments)
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
    def _threaded(call: ColumnCall, columns: Columns, todo: Todo, errors: Errors) -> list[Any]:
        """`_rows` on the node's threads: at most `max_concurrency` calls at once in this
        process, as the local executors run a sync node that does I/O."""
        rows, n_rows = todo.rows, len(todo.rows)
        func, arguments = call.rows(columns, todo)
        pool, by_row = call.pool(), zip(*arguments, strict=False)
        with call.scope():  # each call runs in a copy of this context: it sees its node
            futures = [
                pool.submit(contextvars.copy_context().run, func, *row)
                for row in itertools.islice(by_row, n_rows)
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
            computed = await self._rows(subset, todo, errors)
            await call.acomplete(columns, todo, computed)
        call.reported(todo, started, failures(errors) - before)

    async def _rows(self, columns: Columns, todo: Todo, errors: Errors) -> list[Any]:
        with self.call.scope():  # entered before the tasks exist: each copies the context
            results = await self._gathered(columns, todo)
        token = self.call.token()
        for row, result in enumerate(results):
            if isinstance(result, asyncio.CancelledError) and token and token.cancelled:
                result = token.stopped()  # cancelled before it started
            if isinstance(result, Exception):
                self.call.fail(result, columns, row, errors, todo.rows[row])
                results[row] = None
            elif isinstance(result, BaseException):
                raise result
        return results

    async def _gathered(self, columns: Columns, todo: Todo) -> list[Any]:
        n_rows = len(todo.rows)
        slots = self._slots.here()
        func, rows = self.call.rows(columns, todo)
        if self.per_attempt:
            return await self._each(map(func, *rows))
        if slots.take(n_rows):  # the whole batch fits: no per-row wrapper
            try:
                return await self._each(map(func, *rows))
            finally:
                slots.give(n_rows)

        priority = self.call.node.options.priority  # rows waiting for a slot: by it

        async def bounded(*row: Any) -> Any:
            await slots.wait(priority)
            try:
                return await func(*row)
            finally:
                slots.give(1)

        return await self._each(map(bounded, *rows))

    async def _each(self, calls: Any) -> list[Any]:
        """Each call's result or exception; a cancelled run cancels those in flight."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        stop = cancel.cancelling(self.call.token(), tasks)
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop()


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


def _array(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values  # Python objects Arrow cannot hold: the list itself
