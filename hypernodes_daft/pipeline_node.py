"""`PipelineNode`: a pipeline used as one node of another, with renamed inputs and outputs.

inner = Pipeline(nodes=[tokenize, embed])
step = inner.as_node(
    input_mapping={"documents": "text"},     # outer name -> inner name
    output_mapping={"embedding": "vectors"},  # inner name -> outer name
    map_over="documents",                     # run the inner pipeline once per document
)
outer = Pipeline(nodes=[load, step, index])
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .exceptions import PlanningError
from .node import OutputName
from .plan import MAP_MODES, NestedPlan, frozen, normalize_map_over, product_order

if TYPE_CHECKING:
    from .pipeline import Pipeline


class PipelineNode:
    """A nested pipeline. Built by `Pipeline.as_node(...)`; its names are outer names."""

    def __init__(
        self,
        pipeline: Pipeline,
        input_mapping: dict[str, str] | None = None,
        output_mapping: dict[str, str] | None = None,
        map_over: str | list[str] | None = None,
        map_mode: str = "zip",
        cache: bool = True,
        name: str | None = None,
    ):
        self._pipeline = pipeline
        self.input_mapping = dict(input_mapping or {})
        self.output_mapping = dict(output_mapping or {})
        self.map_over = list(normalize_map_over(map_over, self._where)) if map_over else None
        self.map_mode = map_mode
        self.cache = cache
        self.name = name if name is not None else pipeline.name
        self._inner_of = self.input_mapping  # outer input name -> inner input name
        self._outer_of = {inner: outer for outer, inner in self.input_mapping.items()}
        self._inner_output_of = {outer: inner for inner, outer in self.output_mapping.items()}
        self._check_mappings()

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def code_hash(self) -> str:
        """The inner nodes' fingerprints, combined (read when used: the user code a node
        reaches may be defined after the pipeline is built)."""
        inner = ":".join(n.code_hash for n in self._pipeline.graph.nodes)
        return hashlib.sha256(inner.encode()).hexdigest()

    @property
    def bound_inputs(self) -> dict[str, Any]:
        return self._pipeline.bound_inputs

    @property
    def root_args(self) -> tuple[str, ...]:
        """The inner pipeline's unbound inputs, in outer names (with defaults too)."""
        bound = self._pipeline._bound
        args = [self._outer(a) for a in self._pipeline.graph.root_args if a not in bound]
        args += [m for m in self.map_over or () if m not in args]
        return tuple(args)

    @property
    def optional_args(self) -> frozenset[str]:
        """Inputs the inner pipeline can do without (every node using them has a default)."""
        mapped = set(self.map_over or ())
        optional = self._pipeline._optional_args()
        return frozenset(self._outer(a) for a in optional if self._outer(a) not in mapped)

    @property
    def unfulfilled_args(self) -> tuple[str, ...]:
        optional = self.optional_args
        return tuple(a for a in self.root_args if a not in optional)

    @property
    def output_names(self) -> tuple[str, ...]:
        available = self._pipeline.graph.available_output_names
        if not self.output_mapping:
            return tuple(available)
        return tuple(self.output_mapping.values())

    @property
    def output_name(self) -> OutputName:
        names = self.output_names
        return names[0] if len(names) == 1 else names

    @property
    def is_async(self) -> bool:
        return any(getattr(n, "is_async", False) for n in self._pipeline.graph.nodes)

    def plan_nested(
        self, args: frozenset[str], outputs: tuple[str, ...] | None, by_name: bool = False
    ) -> NestedPlan:
        """Plan the inner pipeline for a step that reads `args` and must write `outputs`,
        listed in name order if `by_name`. `outputs` None: what HyperNodes 0.4 computes when
        no output is asked for, every output of `output_mapping`, or without one, the inner
        pipeline's own outputs when asked for none (its nested pipelines' unconsumed
        outputs left out)."""
        rename_in = tuple((a, self._inner_of.get(a, a)) for a in self.root_args if a in args)
        bound = self._pipeline._bound
        available = frozenset(inner for _, inner in rename_in) | frozenset(bound)
        if outputs is None and not self.output_mapping:
            item = self._pipeline._plan(available, None)
            rename_out = tuple((o, o) for o in item.outputs)
        else:
            wanted = self.output_names if outputs is None else outputs
            rename_out = self._renamed_outputs(wanted, by_name)
            item = self._pipeline._plan(available, [inner for inner, _ in rename_out])
        map_over = tuple(self._inner_of.get(m, m) for m in self.map_over or ())
        if self.map_mode == "product":  # inner inputs are built as bound, then rename_in
            map_over = product_order(map_over, [*bound, *(inner for _, inner in rename_in)])
        return NestedPlan(item, rename_in, rename_out, frozen(bound), map_over, self.map_mode)

    def _renamed_outputs(
        self, outputs: tuple[str, ...], by_name: bool
    ) -> tuple[tuple[str, str], ...]:
        """(inner name, outer name) of `outputs`, ordered as HyperNodes 0.4 orders results:
        by outer name when only some are consumed (0.4 asks the inner pipeline for a sorted
        list), else as `output_mapping` if there is one, else in the inner pipeline's
        execution order."""
        if by_name:
            return tuple(
                sorted(((self._inner_output_of.get(o, o), o) for o in outputs), key=lambda p: p[1])
            )
        if self.output_mapping:
            position = {inner: i for i, inner in enumerate(self.output_mapping)}
        else:
            position = self._pipeline._output_positions()
        pairs = ((self._inner_output_of.get(o, o), o) for o in outputs)
        return tuple(sorted(pairs, key=lambda pair: position[pair[0]]))

    def __call__(self, required_outputs: list[str] | None = None, **outer_inputs: Any) -> dict:
        """Run the nested pipeline directly on outer-named inputs; returns outer-named outputs."""
        inner_inputs = {self._inner_of.get(k, k): v for k, v in outer_inputs.items()}
        outputs = required_outputs or list(self.output_names)
        inner_outputs = [self._inner_output_of.get(o, o) for o in outputs]
        if not self.map_over:
            result = self._pipeline.run(inputs=inner_inputs, output_name=inner_outputs)
            return {o: result[i] for o, i in zip(outputs, inner_outputs, strict=False)}
        items = self._pipeline.map(
            inputs=inner_inputs,
            map_over=[self._inner_of.get(m, m) for m in self.map_over],
            map_mode=self.map_mode,
            output_name=inner_outputs,
        )
        return {
            o: [item[i] for item in items] for o, i in zip(outputs, inner_outputs, strict=False)
        }

    def __repr__(self) -> str:
        parts = []
        if self.bound_inputs:
            parts.append(f"bound=[{', '.join(self.bound_inputs)}]")
        if self.unfulfilled_args:
            parts.append(f"needs=[{', '.join(self.unfulfilled_args)}]")
        if not parts:
            return f"PipelineNode({self._pipeline!r})"
        return f"PipelineNode({self.name or 'unnamed'}, {', '.join(parts)})"

    @property
    def _where(self) -> str:
        return f"as_node of pipeline '{self._pipeline.label}'"

    def _outer(self, inner_name: str) -> str:
        return self._outer_of.get(inner_name, inner_name)

    def _check_mappings(self) -> None:
        graph = self._pipeline.graph
        for outer, inner in self.input_mapping.items():
            if inner not in graph.root_args:
                raise PlanningError(
                    f"{self._where}: input_mapping maps '{outer}' to '{inner}', which is not "
                    f"an input of the inner pipeline. Its inputs: {graph.root_args}"
                )
        for inner in self.output_mapping:
            if inner not in graph.output_to_node:
                raise PlanningError(
                    f"{self._where}: output_mapping names '{inner}', which the inner pipeline "
                    f"does not produce. Its outputs: {graph.available_output_names}"
                )
        outer_inputs = [self._outer(a) for a in graph.root_args]
        for outer in self.map_over or ():
            if outer not in outer_inputs:
                raise PlanningError(
                    f"{self._where}: map_over names '{outer}', which is not an input of the "
                    f"inner pipeline (its inputs, in outer names: {outer_inputs})"
                )
        if self.map_mode not in MAP_MODES:
            raise PlanningError(
                f"{self._where}: unknown map_mode {self.map_mode!r}; "
                f"expected one of {list(MAP_MODES)}"
            )
