"""The protocol every engine implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..plan import MapPlan, RunPlan


@runtime_checkable
class Engine(Protocol):
    """Executes plans. `Pipeline.run` and `.map` validate and plan, then call these with
    inputs already merged with the pipeline's bindings."""

    def run(self, plan: RunPlan, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one item; return the plan's outputs."""
        ...

    def map(self, plan: MapPlan, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Run every item of the map; return one output dict per item, in order."""
        ...
