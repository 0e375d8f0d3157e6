"""`Pipeline`: nodes wired by name, run once with `.run()` or over many items with `.map()`.

@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x

@node(output_name="result")
def add(doubled: int, offset: int = 1) -> int:
    return doubled + offset

pipeline = Pipeline(nodes=[double, add])
pipeline.run(inputs={"x": 5})                       # {'doubled': 10, 'result': 11}
pipeline.map(inputs={"x": [1, 2]}, map_over="x")    # [{'doubled': 2, 'result': 3}, ...]
pipeline.run(inputs={"x": 5}, output_name="doubled")  # only `double` runs
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .dataset import Column, as_inputs, materialize
from .exceptions import PlanningError
from .graph import build_graph
from .node import Node
from .pipeline_node import PipelineNode
from .plan import (
    MapPlan,
    RunPlan,
    check_map_inputs,
    iter_rows,
    normalize_map_over,
    plan_run,
    product_order,
    requested_outputs,
)
from .results import MapResults, check_on_error, skipped
from .runtime.cancel import cancellable, check_deadline
from .runtime.dispatch import callback_list

if TYPE_CHECKING:  # the contract only: importing pipeline.py loads no engine
    from .engines.protocol import Engine
    from .estimate import Estimate

_PLAN_CACHE_SIZE = 64


class Pipeline:
    """A DAG of nodes, wired by argument names.

    `bind`, `unbind`, `with_engine` and `with_name` change the pipeline in place and return
    it, as in HyperNodes 0.4. A `Pipeline` placed in another pipeline's `nodes` acts as one
    node (like `as_node()` with no mapping).
    """

    def __init__(
        self,
        nodes: list[Any],
        engine: Engine | None = None,
        name: str | None = None,
        cache: Any = None,
        callbacks: list[Any] | None = None,
    ):
        self.nodes = nodes
        self.engine: Engine = engine if engine is not None else _default_engine()
        self.name = name
        self.cache = cache
        self.callbacks = callback_list(callbacks, "Pipeline")
        self.id = f"pipeline_{id(self)}"
        self._bound: dict[str, Any] = {}
        self._version = 0
        self._plans: dict[tuple[Any, ...], RunPlan] = {}
        graph_nodes = [_as_graph_node(n, i) for i, n in enumerate(nodes)]
        self._nested = [n.pipeline for n in graph_nodes if isinstance(n, PipelineNode)]
        self.graph = build_graph(graph_nodes)

    @property
    def label(self) -> str:
        """The name errors and plans use for this pipeline."""
        return self.name or "pipeline"

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        inputs: dict[str, Any] | None = None,
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
    ) -> dict[str, Any]:
        """Run the pipeline once; returns the outputs (all of them, or those asked for).
        With on_error "skip" or "collect", a failure returns `{"_error": ErrorRecord}`."""
        values = self._merged(inputs)
        plan = self._plan(frozenset(values), output_name)
        return (engine or self.engine).run(plan, values, **self._options(on_error))

    def map(
        self,
        inputs: Any = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
        priority: str | Callable[[dict[str, Any]], float] | None = None,
        deadline: float | None = None,
    ) -> MapResults:
        """Run the pipeline once per item of the `map_over` lists; one dict per item, in order.

        `map_mode="zip"` pairs the lists element by element; `"product"` runs every
        combination (the last list varies fastest). Other inputs are shared by all items.
        `inputs` may also hold dataset columns (`read_parquet`, a pyarrow Table or a Daft
        DataFrame); `map_over` then defaults to the columns the pipeline reads.

        `on_error` is what a failing node does to its item, unless the node sets its own:
        "raise" stops the map; "collect" records the failure as the item's result
        (`{"_error": ErrorRecord}`) and goes on; "skip" leaves the item out. The results
        list the failures (`.errors`) and re-run them (`.retry()`): see results.py.

        `priority` decides which items go first whenever they wait (to start, for a node's
        `max_concurrency` slot or `rate_limit` turn): the name of an item input holding a
        number, or a function of an item's inputs returning one; higher first, added to
        each node's own `priority`. Results stay in item order (docs/resilient-io.md).

        Ctrl-C, SIGTERM or `deadline` (seconds for the whole map) stop the map and keep
        what finished: in the cache, and under "collect" in the results, where each item
        not finished is a `Cancelled` record (`.cancelled`; `.retry()` runs them).
        Otherwise the interrupt is raised (KeyboardInterrupt, `DeadlineExceeded`) once the
        map has stopped. See runtime/cancel.py.
        """
        call = self._map_call(inputs, map_over, map_mode, output_name, engine)
        engine, plan, values = call
        options = self._map_options(on_error, priority, values)
        with cancellable(self._deadline(deadline)):
            results = engine.map(plan, values, **options)
        return self._map_results(results, call, output_name, on_error, priority)

    def iter_map(
        self,
        inputs: Any = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
        priority: str | Callable[[dict[str, Any]], float] | None = None,
        deadline: float | None = None,
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """`map`, streamed: `(index, outputs)` per item as soon as it is done, without
        holding every result (a million-item stream stays in bounded memory). Sequential
        engines yield in order; concurrent ones in the order items finish; DaftEngine a
        batch of rows at a time (with a `priority`, as `map` starts them: the sequential
        engine yields in priority order). Leaving the loop early stops the work not yet
        started.
        With on_error "collect" a failed item comes as `(index, {"_error": ErrorRecord})`;
        with "skip" it does not come.

            for index, outputs in pipeline.iter_map(inputs={"url": urls}, map_over="url"):
                save(index, outputs)
        """
        engine, plan, values = self._map_call(inputs, map_over, map_mode, output_name, engine)
        options = self._map_options(on_error, priority, values)
        limit = self._deadline(deadline)
        return _without_skipped(_scoped(lambda: engine.iter_map(plan, values, **options), limit))

    def aiter_map(
        self,
        inputs: Any = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
        priority: str | Callable[[dict[str, Any]], float] | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """`iter_map` for async code: `async for index, outputs in pipeline.aiter_map(...)`."""
        engine, plan, values = self._map_call(inputs, map_over, map_mode, output_name, engine)
        options = self._map_options(on_error, priority, values)
        limit = self._deadline(deadline)
        stream = _ascoped(lambda: engine.aiter_map(plan, values, **options), limit)
        return _awithout_skipped(stream)

    async def arun(
        self,
        inputs: dict[str, Any] | None = None,
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
    ) -> dict[str, Any]:
        """`run` for async code: `await pipeline.arun(inputs={...})`."""
        values = self._merged(inputs)
        plan = self._plan(frozenset(values), output_name)
        return await (engine or self.engine).arun(plan, values, **self._options(on_error))

    async def amap(
        self,
        inputs: Any = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
        priority: str | Callable[[dict[str, Any]], float] | None = None,
        deadline: float | None = None,
    ) -> MapResults:
        """`map` for async code: `await pipeline.amap(inputs={...}, map_over="x")`. If the
        task awaiting it is cancelled, the items in flight are cancelled (their `finally`
        blocks run) and CancelledError goes on: what finished is in the cache."""
        call = self._map_call(inputs, map_over, map_mode, output_name, engine)
        engine, plan, values = call
        options = self._map_options(on_error, priority, values)
        with cancellable(self._deadline(deadline)):
            results = await engine.amap(plan, values, **options)
        return self._map_results(results, call, output_name, on_error, priority)

    def estimate(
        self,
        inputs: Any = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        sample: int = 20,
        engine: Engine | None = None,
        output_name: str | list[str] | None = None,
        seed: int | None = None,
    ) -> Estimate:
        """How long a `map` with these arguments will take, how many calls it makes and what
        they cost, from `sample` random items run for real (and cached). See `estimate.py`.

            print(pipeline.estimate(inputs={"prompt": prompts}, map_over="prompt", seed=1))
        """
        from .estimate import measure, project

        measured = measure(self, inputs, map_over, map_mode, sample, engine, output_name, seed)
        return project(measured, seed=seed)

    def write_parquet(
        self,
        inputs: Any,
        path: str,
        map_over: str | list[str] | None = None,
        output_name: str | list[str] | None = None,
        engine: Engine | None = None,
        on_error: str = "raise",
        priority: str | Callable[[dict[str, Any]], float] | None = None,
        **options: Any,
    ) -> list[str]:
        """`map` (zip mode), written as Parquet under `path`: the mapped inputs (on
        DaftEngine, every column of a dataset), then the outputs; returns the files written.
        With on_error "collect" or "skip" an `_error` struct column holds each failed row's
        record (its outputs are null); rows failed under "skip" are left out. `options` go
        to the writer (`daft.DataFrame.write_parquet`: `write_mode="overwrite"`, ...).

            files = pipeline.write_parquet(read_parquet("in/*.parquet"), "out/", map_over="text")
        """
        engine, plan, values = self._map_call(inputs, map_over, "zip", output_name, engine)
        given = self._map_options(on_error, priority, values)
        with cancellable():
            return engine.write_parquet(plan, values, path, **given, **options)

    def plan(
        self,
        inputs: dict[str, Any] | None = None,
        output_name: str | list[str] | None = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
    ) -> RunPlan | MapPlan:
        """The plan a `run` (or, with `map_over`, a `map`) with these arguments would execute."""
        values = self._merged(inputs)
        if map_over is None:
            return self._plan(frozenset(values), output_name)
        return self._map_plan(values, map_over, map_mode, output_name)

    # -- binding and settings --------------------------------------------------------------

    def bind(self, **inputs: Any) -> Pipeline:
        """Set default values for inputs; call-time inputs win over them."""
        self._bound.update(inputs)
        self._changed()
        return self

    def unbind(self, *names: str) -> Pipeline:
        """Drop the named bindings (all of them when no name is given)."""
        if not names:
            self._bound.clear()
        for name in names:
            self._bound.pop(name, None)
        self._changed()
        return self

    def with_engine(self, engine: Engine) -> Pipeline:
        self.engine = engine
        return self

    def with_name(self, name: str) -> Pipeline:
        self.name = name
        return self

    @property
    def bound_inputs(self) -> dict[str, Any]:
        return dict(self._bound)

    @property
    def unfulfilled_args(self) -> tuple[str, ...]:
        """Inputs still needed: not bound and without a default value."""
        optional = self._optional_args()
        return tuple(a for a in self.graph.root_args if a not in self._bound and a not in optional)

    def as_node(
        self,
        input_mapping: dict[str, str] | None = None,
        output_mapping: dict[str, str] | None = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        name: str | None = None,
        cache: bool = True,
    ) -> PipelineNode:
        """This pipeline as a node of another; see `PipelineNode`."""
        return PipelineNode(self, input_mapping, output_mapping, map_over, map_mode, cache, name)

    def visualize(
        self,
        filename: str | None = None,
        engine: str = "graphviz",
        depth: int | None = 1,
        orient: str = "TB",
        **options: Any,
    ) -> Any:
        """Draw the DAG as SVG (inline in Jupyter; to `filename` when given); nested
        pipelines expanded `depth - 1` levels (`None`: all). See `visualize.py`."""
        from .visualize import visualize

        return visualize(self, filename, engine, depth, orient, **options)

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}"] if self.name else []
        parts.append(f"nodes={len(self.nodes)}")
        if self._bound:
            parts.append(f"bound=[{', '.join(f'{k}={v!r}' for k, v in self._bound.items())}]")
        if self.unfulfilled_args:
            parts.append(f"needs=[{', '.join(self.unfulfilled_args)}]")
        return f"Pipeline({', '.join(parts)})"

    # -- planning (used by engines and by nested pipelines) ---------------------------------

    def _options(self, on_error: str = "raise") -> dict[str, Any]:
        """The pipeline's own cache and callbacks for the engine (none: the engine's), and
        the call's on_error (given only when it is not the default, "raise")."""
        check_on_error(on_error, f"pipeline '{self.label}'")
        options: dict[str, Any] = {} if on_error == "raise" else {"on_error": on_error}
        if self.cache is not None or self.callbacks:
            options.update(cache=self.cache, callbacks=self.callbacks)
        return options

    def _map_options(self, on_error: str, priority: Any, values: dict[str, Any]) -> dict[str, Any]:
        """`_options`, and the map's `priority` (given only when set), checked: an input of
        the map's items, or a function of their inputs."""
        options = self._options(on_error)
        if priority is None:
            return options
        owner = f"pipeline '{self.label}'"
        if isinstance(priority, str):
            if priority not in values:
                raise PlanningError(
                    f"{owner}: priority={priority!r} is not an input of the map's items; "
                    f"give the name of one of {sorted(values)} or a function of an item's "
                    "inputs returning a number"
                )
        elif not callable(priority):
            raise TypeError(
                f"{owner}: priority must be an input name or a function of an item's inputs "
                f"returning a number, got {priority!r}"
            )
        return {**options, "priority": priority}

    def _deadline(self, deadline: Any) -> float | None:
        """A map's `deadline`, checked (seconds > 0, or None)."""
        return check_deadline(deadline, f"pipeline '{self.label}'")

    def _map_results(
        self,
        results: Any,
        call: tuple[Engine, MapPlan, dict[str, Any]],
        output_name: Any,
        on_error: str,
        priority: Any = None,
    ) -> Any:
        """An engine's map results as MapResults, which can re-run their failed items
        (a lazy frame, from DaftEngine(collect=False), as it is)."""
        if not isinstance(results, list):
            return results
        return MapResults(results, _MapSource(self, call, output_name, on_error, priority))

    def _merged(self, inputs: Any) -> dict[str, Any]:
        if inputs is not None and not isinstance(inputs, dict):
            table = as_inputs(inputs)
            if table is None:
                raise TypeError(
                    f"pipeline '{self.label}': inputs must be a dict of name -> value or a "
                    f"table (read_parquet, pyarrow.Table, daft.DataFrame), got "
                    f"{type(inputs).__name__}"
                )
            inputs = table
        return {**self._bound, **inputs} if inputs else dict(self._bound)

    def _map_call(
        self, inputs: Any, map_over: Any, map_mode: str, output_name: Any, engine: Engine | None
    ) -> tuple[Engine, MapPlan, dict[str, Any]]:
        """What every kind of map needs: the engine, the plan and the merged inputs."""
        engine = engine or self.engine
        values, map_over = self._map_inputs(inputs, map_over, engine)
        return engine, self._map_plan(values, map_over, map_mode, output_name), values

    def _map_inputs(self, inputs: Any, map_over: Any, engine: Engine) -> tuple[dict[str, Any], Any]:
        """The merged inputs and map_over of a map; dataset columns are read into lists
        unless the engine reads datasets itself."""
        values = self._merged(inputs)
        columns = [n for n, v in values.items() if isinstance(v, Column)]
        if not columns:
            return values, map_over
        if map_over is None:
            map_over = [n for n in columns if n in self.graph.root_args]
        names = self._map_over_names(map_over)
        unmapped = [n for n in columns if n in self.graph.root_args and n not in names]
        if unmapped:
            raise PlanningError(
                f"pipeline '{self.label}': inputs {unmapped} are dataset columns but not in "
                f"map_over {list(names)}; map over them or pass single values"
            )
        if not engine.reads_datasets:
            values = materialize(values, names, f"pipeline '{self.label}'")
        return values, map_over

    def _map_over_names(self, map_over: Any) -> tuple[str, ...]:
        """`map_over` as a tuple of names, each an input of the pipeline."""
        names = normalize_map_over(map_over, f"pipeline '{self.label}'")
        unknown = [n for n in names if n not in self.graph.root_args]
        if unknown:
            raise PlanningError(
                f"pipeline '{self.label}': map_over names {unknown}, which no node takes as "
                f"input. The pipeline's inputs: {self.graph.root_args}"
            )
        return names

    def _plan(self, available: frozenset[str], output_name: Any) -> RunPlan:
        outputs = (
            output_name
            if output_name is None or isinstance(output_name, str)
            else tuple(output_name)
        )
        key = (available, outputs, self._state())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[key] = plan_run(
                self.graph, self.label, available, output_name, self.id
            )
        return plan

    def _map_plan(
        self, values: dict[str, Any], map_over: Any, map_mode: str, output_name: Any
    ) -> MapPlan:
        names = self._map_over_names(map_over)
        requested_outputs(self.graph, output_name, self.label)
        n_items = check_map_inputs(f"pipeline '{self.label}'", values, names, map_mode)
        if map_mode == "product":
            names = product_order(names, list(values))
        item = self._plan(frozenset(values), output_name)
        return MapPlan(item, names, map_mode, n_items)

    def _optional_args(self) -> frozenset[str]:
        """Root inputs every consumer has a default for."""
        consumers = self.graph.consumers
        return frozenset(
            a for a in self.graph.root_args if all(a in n.optional_args for n in consumers[a])
        )

    def _output_positions(self) -> dict[str, int]:
        """Each output's position in execution order."""
        names = (o for n in self.graph.execution_order for o in n.output_names)
        return {name: i for i, name in enumerate(names)}

    def _state(self) -> tuple[int, ...]:
        """Changes whenever a binding of this pipeline or of a nested one changes."""
        if not self._nested:
            return (self._version,)
        return (self._version, *(v for p in self._nested for v in p._state()))

    def _changed(self) -> None:
        self._version += 1


class _MapSource:
    """A map call, kept by its results so their failed items can be re-run (with the
    same options: the priority too)."""

    def __init__(
        self,
        pipeline: Pipeline,
        call: tuple[Engine, MapPlan, dict[str, Any]],
        output_name: Any,
        on_error: str,
        priority: Any = None,
    ):
        self.pipeline = pipeline
        self.engine, self.plan, self.values = call
        self.output_name = output_name
        self.on_error = on_error
        self.priority = priority

    def inputs_of(self, indices: list[int]) -> dict[str, Any]:
        names = self.plan.map_over
        values = materialize(self.values, names, f"pipeline '{self.pipeline.label}'")
        rows = list(iter_rows(values, names, self.plan.map_mode))
        picked = [rows[i] for i in indices]
        mapped = {name: [row[i] for row in picked] for i, name in enumerate(names)}
        return {**{k: v for k, v in values.items() if k not in names}, **mapped}

    def map(self, indices: list[int]) -> MapResults:
        return self.pipeline.map(
            inputs=self.inputs_of(indices),
            map_over=list(self.plan.map_over),
            output_name=self.output_name,
            engine=self.engine,
            on_error=self.on_error,
            priority=self.priority,
        )


def _scoped(make: Callable[[], Iterator[Any]], deadline: float | None) -> Iterator[Any]:
    """The stream `make()` gives, made and consumed inside one cancellable scope."""
    with cancellable(deadline):
        yield from make()


async def _ascoped(make: Callable[[], AsyncIterator[Any]], deadline: float | None) -> Any:
    with cancellable(deadline):
        async for entry in make():
            yield entry


def _without_skipped(stream: Iterator[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    return ((i, outputs) for i, outputs in stream if not skipped(outputs))


async def _awithout_skipped(
    stream: AsyncIterator[Any],
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    async for index, outputs in stream:
        if not skipped(outputs):
            yield index, outputs


def _as_graph_node(item: Any, position: int) -> Any:
    if isinstance(item, Pipeline):
        return PipelineNode(item)
    if isinstance(item, (Node, PipelineNode)):
        return item
    if callable(item):
        name = getattr(item, "__name__", repr(item))
        raise TypeError(
            f"Pipeline nodes[{position}] is the plain function '{name}'; "
            "decorate it with @node (or @node(output_name=...)) first"
        )
    raise TypeError(
        f"Pipeline nodes[{position}] is {item!r}; expected a node, a Pipeline or a PipelineNode"
    )


def _default_engine() -> Engine:
    from .engines.local import HypernodesEngine

    return HypernodesEngine()
