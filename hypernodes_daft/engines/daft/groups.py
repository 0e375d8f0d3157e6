"""How the steps of a plan are grouped into Daft functions: pure planning, no execution.

    >>> print(*plan_groups(plan, constants={"model_name"}), sep="\\n")
    driver: load_model
    sync: clean+tokenize
    async: enrich
    sync: score

- "driver": the step reads only constants, so it runs once, on the driver; its outputs
  become constants. No work per row that can be done once.
- "sync": consecutive sync nodes, fused into one function that runs them column-wise.
- "async", "arrow": one async / `@node(batch=True)` node per function (an Arrow call).
- "grouped": one `@node(batch_size=N)` node (sync or async): called with lists, a chunk of
  N rows of the batch per call (request grouping).
- "nested": a nested pipeline run once per row; its steps are inlined.
- "map": a nested pipeline mapped over lists: items flattened, run, regrouped per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...plan import RunPlan, Step


@dataclass
class Group:
    """Steps that one Daft function (or the driver) runs."""

    kind: str
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "+".join(s.label for s in self.steps)

    def __str__(self) -> str:
        return f"{self.kind}: {self.label}"


def plan_groups(plan: RunPlan, constants: set[str]) -> list[Group]:
    """The steps of `plan` grouped by how they run, given which values are constants."""
    groups: list[Group] = []
    known = set(constants)
    for step in plan.steps:
        kind = _kind(step, known)
        if kind == "driver":
            known.update(step.outputs)
        if kind == "sync" and groups and groups[-1].kind == "sync":
            groups[-1].steps.append(step)
        else:
            groups.append(Group(kind, [step]))
    return groups


def _kind(step: Step, constants: set[str]) -> str:
    if all(a in constants for a in step.args):
        return "driver"
    if step.nested is not None:
        return "map" if step.nested.map_over else "nested"
    if step.options.batch_size is not None:
        return "grouped"
    if step.options.arrow_function is not None:  # a DualNode: its batch function runs
        return "arrow"
    if step.is_async:
        return "async"
    return "arrow" if step.options.batch else "sync"
