"""`DaftEngine`: a pipeline as a lazy Daft DataFrame.

    engine = DaftEngine()                                   # local, multi-threaded
    pipeline.map(inputs=read_parquet("in/*.parquet"), map_over="text", engine=engine)
    frame = pipeline.map(..., engine=DaftEngine(collect=False))   # lazy: compose, write
    frame.write_parquet("out/")

Mapped inputs become columns; every other input is a constant bound into the functions.
`collect=True` returns the list of per-item dicts the local engines return.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import daft
from daft import col

from ...dataset import Column, count_rows, dataset_of
from ...exceptions import ExecutionError, PlanningError
from ...plan import MapPlan, RunPlan, iter_rows
from ...results import ERROR_FIELD, error_of, record_from_row
from ...runtime import cancel
from ...runtime.dispatch import callback_list
from ...runtime.events import Events, observed_map
from ...runtime.item_order import Priority, inputs_in_start_order
from ...runtime.items import collected, may_settle
from ...runtime.loop import pumped, stream_in_thread
from ...runtime.node_call import Services, check_cache
from .column_call import ERROR, Setup
from .compile import Const, Names, build, constant_column
from .placement import Cluster, connect
from .reporting import batch_report
from .types import ERROR_TYPE, input_column

RUNNERS = ("native", "ray")
_ROW = "__hypernodes_row"


class DaftEngine:
    """Runs plans as lazy Daft DataFrames on the native runner or on Ray.

    - `collect`: return Python results (True) or the lazy `daft.DataFrame` (False), whose
      columns are the mapped inputs (every column of a dataset, so ids come along) and
      then the requested outputs.
    - `runner`: "native" (this machine) or "ray"; `address` is the Ray cluster's.
    - `partitions`: on Ray, split the input rows into this many partitions (default for
      lists: twice the cluster's CPUs; datasets keep Daft's split by file). The native
      runner streams batches of rows through every function and ignores it.
    - `max_concurrency`: async calls in flight per function, unless the node sets its own.
    - `native`: sync nodes whose bodies are plain arithmetic, comparisons or string
      methods run as Daft expressions once verified against Python (native.py); False:
      every node is a Python function.
    - `use_batch_udf`, `default_daft_config`: accepted for HyperNodes 0.4 code; nodes are
      always batched here, and the config is applied with `daft.set_execution_config`.
    """

    reads_datasets = True  # Pipeline.map passes dataset columns through unread

    def __init__(
        self,
        collect: bool = True,
        runner: str = "native",
        address: str | None = None,
        partitions: int | None = None,
        max_concurrency: int = 100,
        cache: Any = None,
        callbacks: list[Any] | None = None,
        use_batch_udf: bool = True,
        default_daft_config: dict[str, Any] | None = None,
        native: bool = True,
    ):
        if runner not in RUNNERS:
            raise ValueError(f"DaftEngine: runner must be one of {RUNNERS}, got {runner!r}")
        if partitions is not None and partitions < 1:
            raise ValueError(f"DaftEngine: partitions must be >= 1, got {partitions}")
        if max_concurrency < 1:
            raise ValueError(f"DaftEngine: max_concurrency must be >= 1, got {max_concurrency}")
        if not isinstance(native, bool):
            raise ValueError(f"DaftEngine: native must be True or False, got {native!r}")
        self.collect = collect
        self.runner = runner
        self.address = address
        self.partitions = partitions
        self.max_concurrency = max_concurrency
        self.cache = cache
        self.callbacks = callback_list(callbacks, "DaftEngine")
        self.use_batch_udf = use_batch_udf
        self.default_daft_config = dict(default_daft_config or {})
        self.native = native

    def lazy(self) -> DaftEngine:
        """The same engine returning lazy DataFrames."""
        lazy = object.__new__(DaftEngine)
        lazy.__dict__.update(self.__dict__, collect=False)
        return lazy

    # -- the Engine protocol -------------------------------------------------------------------
    # `cache` and `callbacks` come from the pipeline: its cache replaces the engine's, its
    # callbacks are fired after the engine's. Hooks: pipeline and map start/end here, exact;
    # node calls and hits per batch from the Daft functions (reporting.py); map items per
    # partition. A lazy frame (collect=False) reports its batches when it is collected.

    def run(
        self,
        plan: RunPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Any:
        """One item: a one-row frame whose inputs are all constants."""
        with cancel.cancellable():  # Ctrl-C stops the query (not Daft: it drops the results)
            return self._run(plan, inputs, cache, callbacks, on_error)

    def _run(
        self, plan: RunPlan, inputs: dict[str, Any], cache: Any, callbacks: Any, on_error: str
    ) -> Any:
        execution = self._execution(plan, cache, callbacks, on_error)
        events = execution.events
        started = events.item_start(None, inputs) if events and self.collect else 0.0
        frame = execution.with_errors(daft.from_pydict({_ROW: [0]}))  # one row, no input
        names: Names = {name: Const(value) for name, value in inputs.items()}
        with execution.reporting():  # nodes reading only constants run while building
            frame = build(frame, plan, names, execution.setup)
            frame = self._outputs(frame, plan.outputs, names, (), execution)
            if not self.collect:
                return frame
            (columns,) = _drained(_called(frame.to_pydict), execution.token)
            (outputs,) = list(_items(columns, plan.outputs, None))
        if events:
            events.item_end(None, outputs, started)
        return outputs

    def map(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> Any:
        if not self.collect:
            _no_priority(priority, "a lazy frame (collect=False)")
            execution = self._execution(plan.item, cache, callbacks, on_error)
            return self._lazy_map(plan, inputs, None, execution)
        streamed = self.iter_map(plan, inputs, cache, callbacks, on_error, priority)
        if priority is None:
            return [outputs for _, outputs in streamed]
        return collected(streamed, plan.n_items or 0)

    def iter_map(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> Iterator[tuple[int, Any]]:
        """`(index, outputs)` per row, a partition at a time as Daft produces them (with a
        `priority`, the rows in priority order: `_by_priority`)."""
        if priority is not None:
            return self._iter_by_priority(plan, inputs, cache, callbacks, on_error, priority)
        return self._iter_map(plan, inputs, cache, callbacks, on_error)

    def _iter_by_priority(
        self, plan: MapPlan, inputs: dict[str, Any], *call: Any
    ) -> Iterator[tuple[int, Any]]:
        *options, priority = call
        plan, inputs, order = _by_priority(plan, inputs, priority)
        for position, outputs in self._iter_map(plan, inputs, *options):
            record = error_of(outputs)  # numbered by its position: renumber it
            if record is not None:
                outputs = {ERROR_FIELD: replace(record, index=order[position])}
            yield order[position], outputs

    def _iter_map(
        self, plan: MapPlan, inputs: dict[str, Any], cache: Any, callbacks: Any, on_error: str
    ) -> Iterator[tuple[int, Any]]:
        execution = self._execution(plan.item, cache, callbacks, on_error)
        outputs = plan.item.outputs
        with observed_map(execution.events, plan.n_items), execution.reporting():
            frame = self._lazy_map(plan, inputs, (), execution)
            index, started = 0, time.perf_counter()
            for partition in _drained(frame.iter_partitions(), execution.token):
                columns = _local(partition).to_pydict()
                del partition  # only the Python values of a partition are held
                rows = len(next(iter(columns.values()))) if columns else 0
                execution.partition_done(index, rows, time.perf_counter() - started)
                for item in _items(columns, outputs, index):  # made one at a time
                    yield index, item
                    index += 1
                del columns
                started = time.perf_counter()

    def write_parquet(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        path: str,
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
        **options: Any,
    ) -> list[str]:
        """Run the map and write the input columns and the outputs as Parquet under `path`
        (Daft writes the partitions in parallel); returns the files written. Callbacks see
        the map start and end, the nodes' batches as they run, the items when written."""
        _no_priority(priority, "write_parquet (rows are written in item order)")
        execution = self._execution(plan.item, cache, callbacks, on_error)
        with observed_map(execution.events, plan.n_items), execution.reporting():
            started = time.perf_counter()
            frame = self._lazy_map(plan, inputs, None, execution)
            write = _called(lambda: frame.write_parquet(path, **options).to_pydict())
            (written,) = _drained(write, execution.token)
            files = list(written["path"])
            seconds = time.perf_counter() - started
            if execution.events is not None:
                execution.partition_done(0, count_rows(files), seconds)
        return files

    def aiter_map(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> AsyncIterator[tuple[int, Any]]:
        return stream_in_thread(self.iter_map(plan, inputs, cache, callbacks, on_error, priority))

    async def arun(
        self,
        plan: RunPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
    ) -> Any:
        return await asyncio.to_thread(self.run, plan, inputs, cache, callbacks, on_error)

    async def amap(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        cache: Any = None,
        callbacks: Any = None,
        on_error: str = "raise",
        priority: Priority = None,
    ) -> Any:
        call = (plan, inputs, cache, callbacks, on_error, priority)
        return await asyncio.to_thread(self.map, *call)

    def __repr__(self) -> str:
        return (
            f"DaftEngine(collect={self.collect}, runner={self.runner!r}, "
            f"address={self.address!r}, partitions={self.partitions})"
        )

    # -- building frames -----------------------------------------------------------------------

    def _execution(self, plan: RunPlan, cache: Any, callbacks: Any, on_error: str) -> _Execution:
        """What one call builds its frame with: the cache, the callbacks' events, and
        whether failures are kept per row (then the frame has an ERROR column)."""
        use_runner(self.runner, self.address)  # before any frame exists: frames pick one
        cache = cache if cache is not None else self.cache
        check_cache(cache)  # before any node runs: one error, not one per row
        every = [*self.callbacks, *(callbacks or ())]
        events = Events.start(every, plan, type(self).__name__, cache=cache)
        if events is not None and self.runner == "ray":
            connect(self.address)  # the report's actor lives on the cluster
        services = Services(cache, events, (), on_error)
        report = batch_report(events, self.runner)
        tolerant = may_settle(plan, on_error)
        in_process = self.runner == "native"
        cluster = Cluster(self.runner, self.address, self.partitions)
        token = cancel.current()
        setup = Setup(
            self.max_concurrency,
            *(services, in_process, report, tolerant, cluster, self.native),
            cancel=None if token is None else token.id,
        )
        return _Execution(setup, events, report, token, self.runner == "ray")

    def _lazy_map(
        self,
        plan: MapPlan,
        inputs: dict[str, Any],
        kept: tuple[str, ...] | None,
        execution: _Execution,
    ) -> daft.DataFrame:
        """The map as a lazy frame: the `kept` input columns and the outputs. None keeps
        every input column, for a frame the caller gets or writes: then the rows failed
        under on_error "skip" are left out, as `map` leaves them out."""
        source, by_file = self._source(plan, inputs)
        frame = self._split(source, by_file, execution.setup.cluster)
        for_caller = kept is None
        if kept is None:
            kept = tuple(c for c in frame.column_names if c not in plan.item.outputs)
        names: Names = {name: name for name in plan.map_over}
        names.update({k: Const(v) for k, v in inputs.items() if k not in plan.map_over})
        # the first rows are read from the source as given (on Ray, Daft 0.7.26 hangs on a
        # limit after into_partitions: seen)
        frame = build(
            execution.with_errors(frame), plan.item, names, execution.setup, sample=source
        )
        frame = self._outputs(frame, plan.item.outputs, names, kept, execution)
        if for_caller and execution.setup.tolerant:
            frame = frame.where(col(ERROR).is_null() | (col(ERROR)["on_error"] != "skip"))
        return frame

    def _source(self, plan: MapPlan, inputs: dict[str, Any]) -> tuple[daft.DataFrame, bool]:
        """The mapped inputs as the columns of a frame, one row per item; and whether the
        frame is a dataset's, read by file."""
        dataset = dataset_of(inputs, plan.map_over, "DaftEngine")
        if dataset is not None and plan.map_mode == "zip":  # every column stays, e.g. ids
            renamed = {n: col(inputs[n].name) for n in plan.map_over if inputs[n].name != n}
            return (dataset.frame.with_columns(renamed) if renamed else dataset.frame), True
        columns = _item_columns(inputs, plan)
        frame = daft.from_pydict({n: input_column(values) for n, values in columns.items()})
        return frame, False

    def _split(self, frame: daft.DataFrame, by_file: bool, cluster: Cluster) -> daft.DataFrame:
        """The source split for Ray: as asked, else a list in twice the cluster's CPUs (one
        partition would use one CPU; a dataset keeps Daft's split by file). The native
        runner streams batches and needs no split."""
        if self.runner != "ray":
            return frame
        if self.partitions:
            return frame.into_partitions(self.partitions)
        return frame if by_file else frame.into_partitions(cluster.partitions())

    def _outputs(
        self,
        frame: daft.DataFrame,
        outputs: tuple[str, ...],
        names: Names,
        inputs: tuple[str, ...],
        execution: _Execution,
    ) -> daft.DataFrame:
        """The `inputs` columns, the outputs, and the error records when they are kept."""
        columns = [col(n) for n in inputs]
        for name in outputs:
            ref = names[name]
            if isinstance(ref, Const):
                expr = constant_column(ref.value, col(frame.column_names[0]))
            else:
                expr = col(ref)
            columns.append(expr.alias(name))
        if execution.setup.tolerant:
            columns.append(col(ERROR))
        return frame.select(*columns)


@dataclass(frozen=True)
class _Execution:
    """One call's setup for the Daft functions, and the callbacks' side of it."""

    setup: Setup
    events: Events | None
    report: Any
    token: cancel.Cancel | None = None  # the run's cancellation token
    on_ray: bool = False

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Around collecting: the batches still on their way are fired when it ends, then
        an error fires on_error (0.4: for the failing node). A cancelled run raises its
        interrupt, as the local engines do, unless its rows are kept as records (on_error
        "collect"): instead of the query's failure, or once its rows are all out. On Ray,
        cancelling the run tells the workers (`raise_cluster_flag`)."""
        token = self.token
        lower = cancel.raise_cluster_flag(token) if token and self.on_ray else (lambda: None)
        try:
            yield
        except BaseException as error:
            self._close_report()
            if self._interrupted() and not isinstance(error, GeneratorExit):
                raise token.error() from error  # type: ignore[union-attr]
            if isinstance(error, ExecutionError) and self.events is not None:
                self.events.node_error(error.node_name, error.original)
            raise
        finally:
            lower()
        self._close_report()
        if self._interrupted() and self.setup.services.on_error != "collect":
            raise token.error()  # type: ignore[union-attr]

    def _interrupted(self) -> bool:
        """Whether the run was cancelled (and not forced to stop by a second Ctrl-C)."""
        return self.token is not None and self.token.cancelled and not self.token.forced

    def with_errors(self, frame: daft.DataFrame) -> daft.DataFrame:
        """`frame` with an empty ERROR column, when failures are kept per row."""
        if not self.setup.tolerant:
            return frame
        return frame.with_column(ERROR, daft.lit(None).cast(ERROR_TYPE))

    def _close_report(self) -> None:
        if self.report is not None:
            self.report.close()

    def partition_done(self, first: int, rows: int, seconds: float) -> None:
        """Items done: the batches reported so far fire first, then the items."""
        if self.events is not None:  # and so a report
            self.report.drain()
            self.events.items_done(first, rows, seconds)


def _drained(stream: Iterator[Any], token: cancel.Cancel | None) -> Iterator[Any]:
    """`stream` (a query's results), produced in a helper thread while this thread waits,
    so a signal's handler runs at once, keeping SIGINT ours: Daft's native runner would
    otherwise take Ctrl-C and drop the query's results (`cancel.reassert_signals`)."""
    if token is None or threading.current_thread() is not threading.main_thread():
        return stream
    return pumped(stream, idle=cancel.reassert_signals)


def _called(call: Callable[[], Any]) -> Iterator[Any]:
    """`call()` as a one-entry stream, made when the stream is read (for `_drained`)."""
    yield call()


def _by_priority(
    plan: MapPlan, inputs: dict[str, Any], priority: Priority
) -> tuple[MapPlan, dict[str, Any], list[int]]:
    """The map with its rows in priority order (zip mode): Daft's first batches hold the
    most urgent rows, so they run first; and each row's item index, to give results back
    in item order. Rows read from a dataset are not ordered here: an error says so."""
    dataset = [name for name in plan.map_over if isinstance(inputs.get(name), Column)]
    if dataset:
        _no_priority(priority, f"rows read from a dataset ({dataset})")
    reordered, order = inputs_in_start_order(inputs, plan.map_over, plan.map_mode, priority)
    return replace(plan, map_mode="zip"), reordered, order


def _no_priority(priority: Priority, what: str) -> None:
    if priority is not None:
        raise PlanningError(
            f"DaftEngine: a map's priority={priority!r} orders the rows of in-memory inputs "
            f"(map, iter_map, amap, aiter_map with collect=True), not {what}; use "
            "HypernodesEngine for it, or leave priority out"
        )


def _local(partition: Any) -> Any:
    """A partition from `iter_partitions`: on Ray it is a reference to fetch."""
    if hasattr(partition, "to_pydict"):
        return partition
    import ray

    return ray.get(partition)


def _item_columns(inputs: dict[str, Any], plan: MapPlan) -> dict[str, list[Any]]:
    """The mapped values of every item as lists (the product spelled out in product mode)."""
    lists = {n: _as_list(inputs[n]) for n in plan.map_over}
    if plan.map_mode == "zip":
        return lists
    rows = list(iter_rows(lists, plan.map_over, plan.map_mode))
    return {n: [row[i] for row in rows] for i, n in enumerate(plan.map_over)}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, Column):  # product over dataset columns: read them
        return value.dataset.frame.select(value.name).to_pydict()[value.name]
    return value


def _items(
    columns: dict[str, list[Any]], outputs: tuple[str, ...], first: int | None
) -> Iterator[dict[str, Any]]:
    """Each row's outputs, or its error record (rows numbered from `first`; None: a run)."""
    errors = columns.get(ERROR)
    rows = zip(*(columns[n] for n in outputs), strict=True)
    for offset, row in enumerate(rows):
        error = None if errors is None else errors[offset]
        if error is None:
            yield dict(zip(outputs, row, strict=True))
        else:
            yield {ERROR_FIELD: record_from_row(error, None if first is None else first + offset)}


def use_runner(runner: str, address: str | None) -> None:
    """Make Daft run on `runner`; a process keeps the runner it started with."""
    from daft.runners import _get_runner

    current = _get_runner()
    if current is None:
        if runner == "native":
            daft.set_runner_native()
        else:
            daft.set_runner_ray(address=address)
        return
    if current.name != runner:
        raise PlanningError(
            f"DaftEngine(runner={runner!r}): this process already runs Daft on the "
            f"{current.name!r} runner, and Daft keeps one runner per process. Use "
            f"runner={current.name!r} here, or run this pipeline in another process"
        )
