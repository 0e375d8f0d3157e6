"""`HypernodesEngine`: runs plans on this machine with the executors chosen for nodes and
for map items.

    engine = HypernodesEngine()              # sequential: predictable, easy to debug
    pipeline = Pipeline(nodes=[...], engine=engine)
"""

from __future__ import annotations

from typing import Any

from ...plan import MapPlan, RunPlan
from ...runtime import Values
from .sequential import SequentialExecutor

_EXECUTORS = {"sequential": SequentialExecutor}


class HypernodesEngine:
    """Local execution. `cache` and `callbacks` are stored for the node runtime."""

    def __init__(
        self,
        node_executor: str = "sequential",
        map_executor: str = "sequential",
        cache: Any = None,
        callbacks: list[Any] | None = None,
    ):
        for role, choice in (("node_executor", node_executor), ("map_executor", map_executor)):
            if choice not in _EXECUTORS:
                raise ValueError(
                    f"HypernodesEngine: unknown {role} {choice!r}; "
                    f"expected one of {sorted(_EXECUTORS)}"
                )
        self.node_executor = node_executor
        self.map_executor = map_executor
        self.cache = cache
        self.callbacks = list(callbacks or [])
        self._executor = SequentialExecutor()

    def run(self, plan: RunPlan, inputs: Values) -> Values:
        return self._executor.run(plan, inputs)

    def map(self, plan: MapPlan, inputs: Values) -> list[Values]:
        return self._executor.map(plan, inputs)

    def __repr__(self) -> str:
        return (
            f"HypernodesEngine(node_executor={self.node_executor!r}, "
            f"map_executor={self.map_executor!r})"
        )


SeqEngine = HypernodesEngine
"""HyperNodes 0.4's name for the sequential engine."""
