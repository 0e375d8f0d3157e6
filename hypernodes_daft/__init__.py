"""hypernodes_daft: pipelines of plain Python functions, from one item to a Ray cluster.

from hypernodes_daft import Pipeline, node

@node(output_name="doubled")
def double(x: int) -> int:
    return 2 * x

Pipeline(nodes=[double]).map(inputs={"x": [1, 2, 3]}, map_over="x")
# [{'doubled': 2}, {'doubled': 4}, {'doubled': 6}]
"""

from .cache import DiskCache, MemoryCache
from .callbacks import (
    CallbackContext,
    MetricsCallback,
    PipelineCallback,
    ProgressCallback,
    report_progress,
)
from .dataset import Dataset
from .dual_node import DualNode
from .engines import HypernodesEngine, SeqEngine
from .estimate import Estimate
from .exceptions import (
    CycleError,
    DependencyError,
    ExecutionError,
    HyperNodesError,
    PlanningError,
    WorkerDiedError,
)
from .io import read_parquet, write_parquet
from .node import HyperNode, Node, node
from .pipeline import Pipeline
from .pipeline_node import PipelineNode
from .plan import MapPlan, RunPlan
from .resources import ResourceError
from .results import Cancelled, ErrorRecord, MapResults
from .runtime.cancel import DeadlineExceeded
from .runtime.context import NodeContext, current_node
from .runtime.limits import ClusterLimit
from .runtime.resilience import CircuitBreaker, CircuitOpenError
from .stateful import stateful
from .visualize import visualize


def __getattr__(name: str) -> object:
    # DaftEngine imports daft (about a second): only when it is asked for
    if name == "DaftEngine":
        from .engines.daft import DaftEngine

        return DaftEngine
    raise AttributeError(f"module 'hypernodes_daft' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "node",
    "stateful",
    "DualNode",
    "HyperNode",
    "Node",
    "Pipeline",
    "PipelineNode",
    "HypernodesEngine",
    "SeqEngine",
    "DiskCache",
    "MemoryCache",
    "RunPlan",
    "MapPlan",
    "HyperNodesError",
    "PlanningError",
    "CycleError",
    "DependencyError",
    "ExecutionError",
    "WorkerDiedError",
    "ResourceError",
    "ErrorRecord",
    "Cancelled",
    "DeadlineExceeded",
    "MapResults",
    "Estimate",
    "DaftEngine",
    "Dataset",
    "read_parquet",
    "write_parquet",
    "visualize",
    "CircuitBreaker",
    "ClusterLimit",
    "CircuitOpenError",
    "PipelineCallback",
    "CallbackContext",
    "ProgressCallback",
    "MetricsCallback",
    "NodeContext",
    "current_node",
    "report_progress",
]
