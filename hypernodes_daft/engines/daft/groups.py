"""How the steps of a plan are grouped into Daft functions: pure planning, no execution.

    >>> print(*plan_groups(plan, constants={"model_name": "mini", "encoder": Encoder()}),
    ...       sep="\\n")
    driver: load_model
    sync: clean+tokenize
    async: enrich
    sync: embed [gpus=1, replicas=2]
    sync: score

- "driver": the step reads only constants, so it runs once, on the driver; its outputs
  become constants. No work per row that can be done once.
- "native": consecutive sync nodes whose bodies run as Daft expressions (native.py): a
  projection, no Python function at all.
- "sync": consecutive sync nodes, fused into one function that runs them column-wise.
- "async", "arrow": one async / `@node(batch=True)` node per function (an Arrow call).
- "grouped": one `@node(batch_size=N)` node (sync or async): called with lists, a chunk of
  N rows of the batch per call (request grouping).
- "nested": a nested pipeline run once per row; its steps are inlined.
- "map": a nested pipeline mapped over lists: items flattened, run, regrouped per row.

A group also says what each of its calls needs (`request`: the node's `cpus`/`gpus`/...
with those of the `@stateful` constants it reads) and how many instances must serve it
(`replicas`, from `@stateful(replicas=N)`). Nodes with different needs never share a
function: a GPU node is a function of its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ...plan import RunPlan, Step
from ...resources import Placement, Resources
from ...stateful import request_of


@dataclass
class Group:
    """Steps that one Daft function (or the driver) runs."""

    kind: str
    steps: list[Step] = field(default_factory=list)
    request: Resources = Resources()
    replicas: int = 0
    why_python: str = ""  # why a sync group's nodes are not native, for explain()

    @property
    def label(self) -> str:
        return "+".join(s.label for s in self.steps)

    @property
    def placement(self) -> Placement | None:
        """Where the group's function must run, if it asks for anything."""
        if not (self.request or self.replicas):
            return None
        return Placement(self.label, self.request, self.replicas)

    @property
    def needs(self) -> str:
        """What each call asks for, as `explain()` shows it: "" or "[gpus=1, replicas=2]"."""
        parts = [str(self.request)] if self.request else []
        parts += [f"replicas={self.replicas}"] if self.replicas else []
        return f"[{', '.join(parts)}]" if parts else ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.label} {self.needs}".rstrip()


def plan_groups(
    plan: RunPlan, constants: dict[str, Any], native: Collection[str] = ()
) -> list[Group]:
    """The steps of `plan` grouped by how they run, given the values that are constants
    and the labels of the steps that run as Daft expressions (`native`)."""
    groups: list[Group] = []
    known = set(constants)
    for step in plan.steps:
        kind = _kind(step, known)
        if kind == "driver":
            known.update(step.outputs)
        elif step.label in native:
            kind = "native"
        group = Group(kind, [step], *_needs(step, constants))
        if kind in ("sync", "native") and groups and _fuses(groups[-1], group):
            groups[-1].steps.append(step)
        else:
            groups.append(group)
    return groups


def _fuses(last: Group, group: Group) -> bool:
    """Consecutive sync steps share a function when they ask for the same things."""
    same_needs = (last.request, last.replicas) == (group.request, group.replicas)
    return last.kind == group.kind and same_needs


def _needs(step: Step, constants: dict[str, Any]) -> tuple[Resources, int]:
    """A step's request: its node's, with that of each `@stateful` constant it reads (the
    instance lives where the call runs); its replicas: the most any of them asks for."""
    request, replicas = step.options.request, 0
    for arg in step.args:
        if arg in constants:
            wanted, copies = request_of(constants[arg])
            request, replicas = request.merged(wanted), max(replicas, copies)
    return request, replicas


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
