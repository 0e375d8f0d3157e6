"""Estimates before a run: a random sample of a map's items runs through the real pipeline
on the chosen engine, and its measurements are projected to the whole input.

    estimate = pipeline.estimate(inputs={"prompt": prompts}, map_over="prompt", sample=20)
    print(estimate)                        # per node: calls, s/call p50 and p95, total, cost
    estimate.wall_seconds                  # projected wall time of the whole map
    estimate.wall_range                    # (low, high): 90% range from the sample's spread
    estimate.nodes["ask"].calls            # calls expected for the whole input
    estimate.cost                          # with @node(cost_per_call=0.002); None without

Two halves, kept apart so the projection can be checked on plain numbers:

- `measure` runs the sample (with the engine's or the pipeline's cache, so the sample is
  not wasted: a later map finds those items stored) and returns a `Sample`: per node the
  calls, cache hits and seconds per call it saw, and the engine's concurrency (`Concurrency`).
- `project` turns a `Sample` into an `Estimate`. No engine, no clock: pure arithmetic.

The wall-time models (docs/estimate.md has them in full, with their limits):

- HypernodesEngine: items flow through the nodes, `C` at once (sequential 1; threaded and
  parallel `max_workers`; async `max_concurrency`); a node's `max_concurrency` or
  `rate_limit` (per process: x processes on "parallel"), or the async executor's threads
  for sync nodes, may bound it tighter. The wall time is the largest bound.
- DaftEngine: each node is a stage over batches of rows, running its calls at most `c` at
  once (an async node: its `max_concurrency` or the engine's; a sync node: 1, or its
  `max_concurrency` threads) and starting at most `rate_limit` a second. One batch runs the
  stages one after the other; many batches overlap them. On Ray, stages are divided among
  `partitions` processes (1 when unset).
- Every bound is a makespan (`_makespan`): jobs over slots, plus the lateness of the slot
  that ends last, which grows with the spread of the calls' seconds.
- The sample's wall time minus the model's time for the sample is a fixed cost per run
  (planning, Daft's query start, a process pool's start), added to the projection.

On DaftEngine the sample runs one row per Daft batch (Daft reports calls a batch at a
time: a batch of one row is one call, timed).

The range is a bootstrap: the seconds per call are resampled from the sample's calls, the
calls per item drawn from their sampling error (a node called once per item: binomial in
its cache hits; several times, e.g. inside a nested `map_over`: Poisson), 1,000 times;
`wall_range` and the calls' and cost's ranges are the 5th and 95th percentiles. It covers
the sampling error, not the model's own error.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .callbacks.base import PipelineCallback
from .callbacks.metrics import _markdown, _percentiles
from .dataset import Column, materialize
from .options import SharedLimit
from .plan import check_map_inputs
from .runtime.cancel import cancellable

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "Concurrency",
    "Estimate",
    "NodeEstimate",
    "NodeSample",
    "Sample",
    "describe",
    "measure",
    "project",
    "wall_model",
]

RESAMPLES = 1000
_RESAMPLED_MAX = 200  # calls resampled per node and draw (see _resampled)
_LOW, _HIGH = 0.05, 0.95  # the range's percentiles
_STARTUP_SHOWN = 0.05  # seconds of start-up worth a line in the table
_ASYNC_THREADS_MAX = 256  # as HypernodesEngine: sync nodes' threads under the async executor


# -- what the sample saw: plain data ----------------------------------------------------------


@dataclass(frozen=True)
class NodeSample:
    """One node as the sample saw it, and the options that bound how fast it can go.

    `seconds` holds one value per call measured (a batch of several rows, as DaftEngine may
    report, gives its seconds per call once per row: `per_call` is then False).
    `top_level`: a step of the item's plan (its time is part of the item's; a nested
    pipeline's inner nodes are not). `nested`: the step is a nested pipeline (its time holds
    its inner nodes').
    """

    name: str
    calls: float = 0  # in the sample (a bootstrap draw's are not whole numbers)
    cached: int = 0
    errors: int = 0
    seconds: tuple[float, ...] = ()
    is_async: bool = False
    top_level: bool = True
    nested: bool = False
    max_concurrency: int | None = None
    rate_limit: float | None = None
    cost_per_call: float | None = None
    per_call: bool = True

    @cached_property  # read many times per bootstrap draw
    def mean_seconds(self) -> float:
        return statistics.fmean(self.seconds) if self.seconds else 0.0

    @cached_property
    def sd_seconds(self) -> float:
        return statistics.pstdev(self.seconds) if len(self.seconds) > 1 else 0.0


@dataclass(frozen=True)
class Concurrency:
    """How an engine runs calls at once: the engine's side of the wall-time model.

    `model` is "items" (HypernodesEngine: items flow through the nodes, `items_in_flight`
    at once) or "stages" (DaftEngine: each node a stage over batches of `batch_rows` rows,
    an async node at most `node_limit` calls in flight unless it sets its own).
    `processes`: how many processes share the work (per-process limits multiply).
    `sync_threads`: the threads sync nodes share (the async executor), None: unbounded.
    """

    engine: str
    model: str = "items"
    items_in_flight: int = 1
    processes: int = 1
    sync_threads: int | None = None
    batch_rows: int | None = None
    node_limit: int = 100


@dataclass(frozen=True)
class Sample:
    """A sample of `size` items out of `items`, run in `seconds` of wall time.

    `runs` are the maps the sample ran, one after another, as (items, seconds): the first
    item alone (it pays what an engine starts once: a process pool, Daft's first query),
    then the others in runs no larger than the smallest `max_concurrency` (so no call
    waits for a slot, and each call's seconds are its own). Empty: one run of them all.
    """

    pipeline: str
    items: int
    size: int
    seconds: float
    nodes: tuple[NodeSample, ...]
    concurrency: Concurrency
    runs: tuple[tuple[int, float], ...] = ()


# -- the projection: plain data ----------------------------------------------------------------


@dataclass(frozen=True)
class NodeEstimate:
    """One node's projection for the whole input. `calls` and `cached` are expected calls
    and cache hits (hits are not calls: they cost no time and no money); `p50`/`p95` are
    seconds per call in the sample (None: no call measured); `seconds` is calls x mean
    seconds per call, the node's total time (not its share of the wall time)."""

    name: str
    calls: float
    calls_range: tuple[float, float]
    cached: float
    sample_calls: int
    sample_cached: int
    p50: float | None
    p95: float | None
    seconds: float
    cost: float | None
    cost_range: tuple[float, float] | None
    per_call: bool = True


@dataclass(frozen=True)
class Estimate:
    """What a map over the whole input is expected to take: calls, time, money.

    `wall_seconds` and `wall_range` (5th-95th percentile) are the projected wall time on
    the engine the sample ran on; `cost` the sum of the nodes' (None: no node has a
    `cost_per_call`). `measured` is True when the sample was the whole input: the numbers
    are then a measurement, not a projection.

        estimate = pipeline.estimate(inputs={"x": xs}, map_over="x", sample=20, seed=1)
        estimate.wall_seconds, estimate.wall_range, estimate.nodes["ask"].calls
    """

    pipeline: str
    engine: str
    items: int
    sample_size: int
    sample_seconds: float
    fixed_seconds: float
    startup_seconds: float
    wall_seconds: float
    wall_range: tuple[float, float]
    nodes: dict[str, NodeEstimate]
    cost: float | None
    cost_range: tuple[float, float] | None
    measured: bool
    notes: tuple[str, ...] = ()

    @property
    def calls(self) -> float:
        """Expected calls of every node together."""
        return sum(n.calls for n in self.nodes.values())

    def table(self) -> str:
        """The estimate as a Markdown table (as `MetricsCallback.table()`), then the
        projected wall time with its range, the cost, and notes."""
        header = ["node", "calls", "calls range", "cached", "p50 ms", "p95 ms", "total s"]
        rows = [[*header, "cost"]]
        for n in self.nodes.values():
            rows.append(
                [
                    n.name,
                    _count(n.calls),
                    _span(n.calls_range, _count),
                    _count(n.cached),
                    _ms(n.p50),
                    _ms(n.p95),
                    f"{n.seconds:.3f}",
                    "-" if n.cost is None else _money(n.cost),
                ]
            )
        kind = "measured" if self.measured else "estimated"
        lines = [
            f"pipeline '{self.pipeline}' on {self.engine}: {self.items} items, {kind} from "
            f"a sample of {self.sample_size} ({self.sample_seconds:.2f} s)",
            "",
            _markdown(rows),
            "",
            f"wall time: {self.wall_seconds:.2f} s "
            f"(range {_span(self.wall_range, lambda s: f'{s:.2f}')} s)",
        ]
        if self.cost is not None and self.cost_range is not None:
            lines.append(f"cost:      {_money(self.cost)} (range {_span(self.cost_range, _money)})")
        if self.startup_seconds >= _STARTUP_SHOWN:
            lines.append(
                f"start-up:  {self.startup_seconds:.2f} s more in the sample's first run (a "
                "process pool, Daft's first query): a new engine or process pays it again"
            )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def project(sample: Sample, seed: int | None = 0, resamples: int = RESAMPLES) -> Estimate:
    """The whole input's calls, time and cost from what `sample` measured (pure: no engine,
    no clock; `seed` makes the bootstrap's range reproducible)."""
    measured = sample.size >= sample.items
    startup, fixed = _unexplained(sample)
    draws = list(_bootstrap(sample, random.Random(seed), resamples))
    walls = [_projected_wall(sample, draw) + fixed for draw in draws]
    # the sample was the whole input: its wall time is the answer
    wall = sample.seconds if measured else _projected_wall(sample, sample.nodes) + fixed
    nodes = {
        node.name: _node_estimate(node, [draw[at] for draw in draws], sample, measured)
        for at, node in enumerate(sample.nodes)
    }
    priced = [n.cost for n in nodes.values() if n.cost is not None]
    cost = sum(priced) if priced else None
    costs = [_draw_cost(draw, sample) for draw in draws]
    return Estimate(
        pipeline=sample.pipeline,
        engine=sample.concurrency.engine,
        items=sample.items,
        sample_size=sample.size,
        sample_seconds=sample.seconds,
        fixed_seconds=fixed,
        startup_seconds=startup,
        wall_seconds=wall,
        wall_range=_range(walls, measured, wall),
        nodes=nodes,
        cost=cost,
        cost_range=None if cost is None else _range(costs, measured, cost),
        measured=measured,
        notes=_notes(sample, measured),
    )


def _unexplained(sample: Sample) -> tuple[float, float]:
    """What the model does not explain of the sample's runs: a fixed cost every map pays
    (planning, Daft's query), the mean over the runs after the first; and a start-up cost,
    what the first run took beyond that (an engine's pool, Daft's first query)."""
    runs = sample.runs or ((sample.size, sample.seconds),)
    left = [
        max(0.0, seconds - wall_model(sample.nodes, sample.size, items, sample.concurrency))
        for items, seconds in runs
    ]
    if len(left) == 1:
        return 0.0, left[0]
    fixed = statistics.fmean(left[1:])
    return max(0.0, left[0] - fixed), fixed


def _projected_wall(sample: Sample, nodes: tuple[NodeSample, ...]) -> float:
    return wall_model(nodes, sample.size, sample.items, sample.concurrency)


def wall_model(
    nodes: tuple[NodeSample, ...], size: int, items: int, concurrency: Concurrency
) -> float:
    """Seconds to map `items` items, given each node's calls in a sample of `size` items
    and its seconds per call (the `Sample`'s nodes, or a bootstrap draw of them)."""
    if items <= 0 or size <= 0:
        return 0.0
    per_item = {n.name: n.calls / size for n in nodes}
    if concurrency.model == "stages":
        return _stages_wall(nodes, per_item, items, concurrency)
    return _items_wall(nodes, per_item, items, concurrency)


def _items_wall(
    nodes: tuple[NodeSample, ...], per_item: dict[str, float], items: int, c: Concurrency
) -> float:
    """HypernodesEngine: items flow through the nodes; the tightest bound sets the pace:
    the items in flight, a node's max_concurrency or rate_limit, or the async executor's
    threads for sync nodes."""
    top = [n for n in nodes if n.top_level]
    bounds = [_makespan(items, *_item_time(top, per_item), c.items_in_flight)]
    for n in _leaves(nodes):
        calls = per_item[n.name] * items
        if n.max_concurrency:
            bounds.append(_makespan(calls, *_spread(n), n.max_concurrency * c.processes))
        if n.rate_limit and calls > 0:
            bounds.append(calls / (n.rate_limit * c.processes) + n.mean_seconds)
    sync = [n for n in _leaves(nodes) if not n.is_async]
    if c.sync_threads and sync:
        bounds.append(_makespan(items, *_item_time(sync, per_item), c.sync_threads))
    return max(bounds)


def _stages_wall(
    nodes: tuple[NodeSample, ...], per_item: dict[str, float], items: int, c: Concurrency
) -> float:
    """DaftEngine: each node a stage over batches; one batch runs the stages in turn, many
    batches overlap them."""
    rows = min(items, c.batch_rows or items)
    batches = math.ceil(items / rows)
    stages = []
    for n in _leaves(nodes):
        calls = per_item[n.name] * items
        if calls <= 0:
            continue
        stage = _makespan(calls, *_spread(n), min(_at_once(n, c), rows) * c.processes)
        if n.rate_limit:
            stage = max(stage, calls / (n.rate_limit * c.processes) + n.mean_seconds)
        stages.append(stage)
    if not stages:
        return 0.0
    slowest = max(stages)
    return slowest + (sum(stages) - slowest) / batches


def _makespan(jobs: float, mean: float, sd: float, slots: float) -> float:
    """Seconds for `jobs` jobs of `mean` (+- `sd`) seconds on `slots` slots, each slot
    taking the next job when it is free: every slot's share of the work, plus the spread of
    the one that ends last (its sum of jobs is about normal; the last of `slots` such sums
    ends about `_expected_max(slots)` standard deviations late). With `sd` 0 it is
    jobs x mean / slots, and never less than one job."""
    if jobs <= 0 or mean <= 0:
        return 0.0
    used = max(1.0, min(slots, jobs))  # no more slots busy than jobs
    per_slot = jobs / used
    return per_slot * mean + sd * math.sqrt(per_slot) * _expected_max(round(used))


def _expected_max(k: int) -> float:
    """The expected largest of `k` standard normal draws (Blom's approximation)."""
    if k <= 1:
        return 0.0
    return statistics.NormalDist().inv_cdf((k - 0.375) / (k + 0.25))


def _spread(node: NodeSample) -> tuple[float, float]:
    """A node's mean and standard deviation of seconds per call."""
    return node.mean_seconds, node.sd_seconds


def _item_time(nodes: list[NodeSample], per_item: dict[str, float]) -> tuple[float, float]:
    """The mean and standard deviation of one item's time in `nodes` (its calls of each,
    independent)."""
    spreads = [(per_item[n.name], *_spread(n)) for n in nodes]
    mean = sum(k * m for k, m, _ in spreads)
    return mean, math.sqrt(sum(k * sd * sd for k, _, sd in spreads))


def _at_once(node: NodeSample, c: Concurrency) -> int:
    """Calls of `node` in flight at once in one Daft process."""
    if node.is_async:
        return node.max_concurrency or c.node_limit
    return node.max_concurrency or 1  # a sync node with max_concurrency runs on threads


def _leaves(nodes: tuple[NodeSample, ...]) -> Iterator[NodeSample]:
    """The nodes that call a function (not nested pipelines, whose time is their inner
    nodes')."""
    return (n for n in nodes if not n.nested)


def _bootstrap(
    sample: Sample, rng: random.Random, resamples: int
) -> Iterator[tuple[NodeSample, ...]]:
    """`resamples` versions of the sample's nodes: seconds per call resampled from the calls
    seen; calls per item drawn around the sample's with their sampling error."""
    for _ in range(resamples):
        yield tuple(_draw_node(n, sample, rng) for n in sample.nodes)


def _draw_node(node: NodeSample, sample: Sample, rng: random.Random) -> NodeSample:
    calls = max(0.0, rng.gauss(node.calls, _calls_error(node, sample) * sample.size))
    return replace(node, seconds=_resampled(node, rng), calls=calls)


def _resampled(node: NodeSample, rng: random.Random) -> tuple[float, ...]:
    """A bootstrap resample of the node's seconds per call. Past `_RESAMPLED_MAX` values,
    a resample of that many, shifted so its mean strays from the sample's as much as a full
    resample's would (by sqrt(that many / all)): the same spread of means, at a bounded
    cost per draw."""
    seconds = node.seconds
    if len(seconds) <= _RESAMPLED_MAX:
        return tuple(rng.choices(seconds, k=len(seconds))) if seconds else ()
    part = rng.choices(seconds, k=_RESAMPLED_MAX)
    strayed = statistics.fmean(part) - node.mean_seconds
    shift = strayed * (math.sqrt(_RESAMPLED_MAX / len(seconds)) - 1)
    return tuple(value + shift for value in part)


def _calls_error(node: NodeSample, sample: Sample) -> float:
    """The standard error of a node's calls per item: binomial when it is called at most
    once per item (its cache hits vary), Poisson when more (a nested map's lists vary);
    with the finite-population correction (0 when the sample is the whole input)."""
    n, total = sample.size, sample.items
    if n >= total or n == 0:
        return 0.0
    seen = node.calls + node.cached + node.errors
    rate = node.calls / n
    variance = rate * (1 - rate) if seen <= n else rate
    return math.sqrt(max(variance, 0.0) / n * (total - n) / max(total - 1, 1))


def _node_estimate(
    node: NodeSample, draws: list[NodeSample], sample: Sample, measured: bool
) -> NodeEstimate:
    """`node`'s projection; `draws` are its bootstrap versions."""
    scale = sample.items / sample.size
    calls = node.calls * scale
    drawn = [d.calls * scale for d in draws]
    p50, p95, _ = _percentiles(list(node.seconds))
    cost, cost_range, price = None, None, node.cost_per_call
    if price is not None:  # hits cost nothing: only calls are paid for
        cost = calls * price
        cost_range = _range([c * price for c in drawn], measured, cost)
    return NodeEstimate(
        name=node.name,
        calls=calls,
        calls_range=_range(drawn, measured, calls),
        cached=node.cached * scale,
        sample_calls=node.calls,
        sample_cached=node.cached,
        p50=p50,
        p95=p95,
        seconds=calls * node.mean_seconds,
        cost=cost,
        cost_range=cost_range,
        per_call=node.per_call,
    )


def _draw_cost(draw: tuple[NodeSample, ...], sample: Sample) -> float:
    scale = sample.items / sample.size
    return sum(n.calls * scale * (n.cost_per_call or 0.0) for n in draw)


def _range(values: list[float], measured: bool, point: float) -> tuple[float, float]:
    """The 5th and 95th percentiles of `values`, widened to hold `point`; a measurement's
    range is the point itself."""
    if measured or not values:
        return (point, point)
    ordered = sorted(values)
    low = ordered[int(_LOW * (len(ordered) - 1))]
    high = ordered[math.ceil(_HIGH * (len(ordered) - 1))]
    return (min(low, point), max(high, point))


def _notes(sample: Sample, measured: bool) -> tuple[str, ...]:
    notes = []
    if measured:
        notes.append(
            f"the sample was the whole input ({sample.items} items): this is a measurement"
        )
    if any(not n.per_call for n in sample.nodes if n.calls):
        notes.append(
            "some calls were timed a batch of rows at a time (DaftEngine): their p50/p95 "
            "are a batch's seconds per call, and the range does not see single calls"
        )
    unmeasured = [n.name for n in _leaves(sample.nodes) if not n.calls and not n.cached]
    if unmeasured:
        notes.append(
            f"not called in the sample (a native Daft expression, or not run): {unmeasured}"
        )
    return tuple(notes)


# -- running the sample ------------------------------------------------------------------------


class _Recorder(PipelineCallback):
    """Counts each node's calls, cache hits and errors, and keeps the seconds per call
    (per-call hooks on HypernodesEngine; batches on DaftEngine)."""

    def __init__(self, limits: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self.limits = limits  # per node: the calls a Daft batch runs at once
        self.calls: dict[str, int] = {}
        self.cached: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.seconds: dict[str, list[float]] = {}
        self.batched: set[str] = set()  # nodes timed a batch of several rows at a time

    def _add(self, counts: dict[str, int], node_id: str, n: int = 1) -> None:
        with self._lock:
            counts[node_id] = counts.get(node_id, 0) + n

    def on_node_start(self, node_id: str, inputs: dict, ctx: Any) -> None:
        self._add(self.calls, node_id)

    def on_node_end(self, node_id: str, outputs: dict, duration: float, ctx: Any) -> None:
        with self._lock:
            self.seconds.setdefault(node_id, []).append(duration)

    def on_node_cached(self, node_id: str, signature: str, ctx: Any) -> None:
        self._add(self.cached, node_id)

    def on_error(self, node_id: str, error: Exception, ctx: Any) -> None:
        self._add(self.errors, node_id)

    def record_batch(
        self, node_id: str, rows: int, seconds: float, cached: int = 0, errors: int = 0
    ) -> None:
        """A Daft batch: `rows` calls in `seconds`. Its seconds per call: the batch's time
        over its rows when they run one after another, over its waves of at most `limit`
        calls when they run at once (async nodes, sync nodes on threads)."""
        self._add(self.calls, node_id, rows)
        self._add(self.cached, node_id, cached)
        self._add(self.errors, node_id, errors)
        if rows > 0:
            at_once = self.limits.get(node_id, 1)
            per_call = seconds / math.ceil(rows / at_once)
            with self._lock:
                self.seconds.setdefault(node_id, []).extend([per_call] * rows)
                if rows > 1:  # a batch of one row is one call, timed
                    self.batched.add(node_id)


def measure(
    pipeline: Pipeline,
    inputs: Any = None,
    map_over: str | list[str] | None = None,
    map_mode: str = "zip",
    sample: int = 20,
    engine: Any = None,
    output_name: str | list[str] | None = None,
    seed: int | None = None,
) -> Sample:
    """Run a random sample of `sample` items of the map through `pipeline` on `engine`
    (default: the pipeline's), with the pipeline's or engine's cache, and return what it
    measured. Errors name the pipeline and the argument.

        sample = measure(pipeline, {"x": xs}, map_over="x", sample=20, seed=1)
        project(sample).wall_seconds
    """
    from .pipeline import _MapSource  # the map's items as Pipeline.map forms them

    owner = f"pipeline '{pipeline.label}'"
    _check_arguments(pipeline, inputs, map_over, sample, owner)
    engine, plan, values = pipeline._map_call(inputs, map_over, map_mode, output_name, engine)
    values = materialize(values, plan.map_over, owner)
    total = _count_items(values, plan.map_over, plan.map_mode, owner)
    picked = sorted(random.Random(seed).sample(range(total), min(sample, total)))
    rows = _MapSource(pipeline, (engine, plan, values), output_name, "raise").inputs_of(picked)
    read = {k: v for k, v in rows.items() if k in pipeline.graph.root_args}  # not other columns
    concurrency = describe(engine)
    steps = [(_node_sample(s, top), s) for s, top in _unique(_steps(plan.item.steps, True))]
    recorder = _Recorder({n.name: _at_once(n, concurrency) for n, _ in steps})
    sizes = _run_sizes(len(picked), total, [n for n, _ in steps])
    runs = _run(pipeline, read, list(plan.map_over), output_name, engine, recorder, sizes)
    nodes = tuple(_observed(n, recorder) for n, step in steps if _seen(step, recorder))
    seconds = sum(s for _, s in runs)
    return Sample(pipeline.label, total, len(picked), seconds, nodes, concurrency, tuple(runs))


def _check_arguments(
    pipeline: Pipeline, inputs: Any, map_over: Any, sample: Any, owner: str
) -> None:
    """estimate's own arguments (the map's are checked as `map` checks them)."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"{owner}: estimate(sample=...) must be an int >= 1, got {sample!r}")
    if map_over is None and not any(isinstance(v, Column) for v in _given(pipeline, inputs)):
        raise TypeError(
            f"{owner}: estimate() needs map_over=, the name(s) of the list inputs to map "
            "(or dataset columns as inputs)"
        )


def _given(pipeline: Pipeline, inputs: Any) -> list[Any]:
    """The values of the inputs as the pipeline merges them (tables become columns)."""
    try:
        return list(pipeline._merged(inputs).values())
    except TypeError:
        return []  # _map_call raises the clear error


def _count_items(values: dict[str, Any], names: tuple[str, ...], mode: str, owner: str) -> int:
    """The map's items, counted as `map` counts them (dataset columns read into lists)."""
    total = check_map_inputs(owner, values, names, mode) or 0
    if total == 0:
        raise ValueError(f"{owner}: estimate() over an empty input: there is nothing to map")
    return total


def _run(
    pipeline: Pipeline,
    rows: dict[str, Any],
    map_over: list[str],
    output_name: Any,
    engine: Any,
    recorder: _Recorder,
    sizes: list[int],
) -> list[tuple[int, float]]:
    """The sample's maps, one per run of `sizes` items (zip over its rows), with the
    pipeline's cache and callbacks plus `recorder`; (items, wall time) of each."""
    runs, first = [], 0
    for size in sizes:
        part = {k: v[first : first + size] if k in map_over else v for k, v in rows.items()}
        first += size
        runs.append((size, _run_once(pipeline, part, map_over, output_name, engine, recorder)))
    return runs


def _run_once(
    pipeline: Pipeline,
    rows: dict[str, Any],
    map_over: list[str],
    output_name: Any,
    engine: Any,
    recorder: _Recorder,
) -> float:
    engine, plan, values = pipeline._map_call(rows, map_over, "zip", output_name, engine)
    options = pipeline._options()
    cache, callbacks = options.get("cache"), [*(options.get("callbacks") or ()), recorder]
    started = time.perf_counter()
    with cancellable(), _row_batches(engine):  # Ctrl-C stops the sample as it stops a map
        if getattr(engine, "collect", True):
            engine.map(plan, values, cache=cache, callbacks=callbacks)
        else:  # DaftEngine(collect=False) would only build a frame: its stream runs it
            for _ in engine.iter_map(plan, values, cache=cache, callbacks=callbacks):
                pass
    return time.perf_counter() - started


def _run_sizes(size: int, total: int, nodes: list[NodeSample]) -> list[int]:
    """How many items each of the sample's maps runs: all at once when the sample is the
    whole input (then it is the map itself, measured); else the first item alone, then
    runs of at most the smallest max_concurrency (none waits for a slot)."""
    if size >= total or size == 1:
        return [size]
    step = min([n.max_concurrency for n in nodes if n.max_concurrency] + [size - 1])
    rest = size - 1
    return [1, *([step] * (rest // step)), *([rest % step] if rest % step else [])]


@contextmanager
def _row_batches(engine: Any) -> Iterator[None]:
    """On DaftEngine, the sample's rows one per Daft batch: Daft reports a node's calls a
    batch at a time, so a batch of one row is one call, timed (a batch of 20 async calls
    would give only its slowest). Daft runs these batches at once, each node's
    max_concurrency still bounding its calls in flight."""
    if type(engine).__name__ != "DaftEngine":
        yield
        return
    import daft

    with daft.context.execution_config_ctx(default_morsel_size=1):
        yield


def _steps(steps: Any, top_level: bool) -> Iterator[tuple[Any, bool]]:
    """Every step of a plan, nested pipelines' inner steps too, with whether it is a step
    of the item's own plan."""
    for step in steps:
        yield step, top_level
        if step.nested is not None:
            yield from _steps(step.nested.item.steps, top_level=False)


def _unique(steps: Iterator[tuple[Any, bool]]) -> list[tuple[Any, bool]]:
    """The steps, one per label: callbacks name a node by its label, so two nested pipelines
    holding a node of the same name report into one row (kept once, not counted twice)."""
    kept: dict[str, tuple[Any, bool]] = {}
    for step, top_level in steps:
        kept.setdefault(step.label, (step, top_level))
    return list(kept.values())


def _node_sample(step: Any, top_level: bool) -> NodeSample:
    options = step.options
    limit = options.max_concurrency
    if isinstance(limit, SharedLimit):
        limit = limit.limit
    return NodeSample(
        name=step.label,
        is_async=step.is_async,
        top_level=top_level,
        nested=step.nested is not None,
        max_concurrency=limit,
        rate_limit=options.rate_limit,
        cost_per_call=options.cost_per_call,
    )


def _seen(step: Any, recorder: _Recorder) -> bool:
    """Whether to report the step: every node that calls a function; a nested pipeline only
    where the engine reports it (DaftEngine inlines them)."""
    if step.nested is None:
        return True
    return step.label in recorder.calls or step.label in recorder.cached


def _observed(node: NodeSample, recorder: _Recorder) -> NodeSample:
    name = node.name
    return replace(
        node,
        calls=recorder.calls.get(name, 0),
        cached=recorder.cached.get(name, 0),
        errors=recorder.errors.get(name, 0),
        seconds=tuple(recorder.seconds.get(name, ())),
        per_call=name not in recorder.batched,
    )


def describe(engine: Any) -> Concurrency:
    """The concurrency an engine gives a map, read from its settings (duck-typed: the
    estimate reads engines, it does not import them)."""
    kind = type(engine).__name__
    if kind == "DaftEngine":
        return _daft_concurrency(engine)
    executor = getattr(engine, "map_executor", "sequential")
    workers = getattr(engine, "max_workers", None) or os.cpu_count() or 1
    limit = getattr(engine, "max_concurrency", 100)
    in_flight = {"sequential": 1, "async": limit}.get(executor, workers)
    label = f"{kind}(map_executor={executor!r})"
    return Concurrency(
        engine=label,
        model="items",
        items_in_flight=in_flight,
        processes=workers if executor == "parallel" else 1,
        sync_threads=(
            (getattr(engine, "max_workers", None) or min(limit, _ASYNC_THREADS_MAX))
            if executor == "async"
            else None
        ),
        node_limit=limit,
    )


def _daft_concurrency(engine: Any) -> Concurrency:
    """DaftEngine: batches of Daft's morsel size; on Ray, `partitions` processes (1 when
    not set: the cluster's size is not known before it runs)."""
    import daft

    config = daft.context.get_context().daft_execution_config
    runner = getattr(engine, "runner", "native")
    processes = (getattr(engine, "partitions", None) or 1) if runner == "ray" else 1
    return Concurrency(
        engine=f"DaftEngine(runner={runner!r})",
        model="stages",
        processes=processes,
        batch_rows=getattr(config, "default_morsel_size", None),
        node_limit=getattr(engine, "max_concurrency", 100),
    )


# -- the table's cells ---------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _money(value: float) -> str:
    return f"{value:,.4f}"


def _span(bounds: tuple[float, float], fmt: Any) -> str:
    return f"{fmt(bounds[0])}-{fmt(bounds[1])}"
