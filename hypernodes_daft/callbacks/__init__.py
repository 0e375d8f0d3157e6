"""Callbacks: HyperNodes-0.4-compatible hooks, progress bars, metrics and a node's own context.

    from hypernodes_daft import Pipeline, SeqEngine, node
    from hypernodes_daft.callbacks import (
        MetricsCallback, PipelineCallback, ProgressCallback, current_node, report_progress,
    )

    class Printer(PipelineCallback):            # override only the hooks you need
        def on_node_end(self, node_id, outputs, duration, ctx):
            print(node_id, f"{duration:.3f}s")

    @node(output_name="y")
    def slow(x: int) -> int:
        where = current_node()                  # NodeContext(node_name='slow', ..., item_index=2)
        for step in range(10):
            report_progress(step + 1, 10)       # a sub-bar under the ProgressCallback
        return x

    metrics = MetricsCallback()
    engine = SeqEngine(callbacks=[ProgressCallback(), metrics, Printer()])
    Pipeline(nodes=[slow], engine=engine).map(inputs={"x": [1, 2, 3]}, map_over="x")
    print(metrics.table())                      # calls, cache hits, p50/p95/max, in-flight peak

The modules: `base` (`PipelineCallback`, every hook declared), `progress` (tqdm bars and
`report_progress`), `metrics` (`MetricsCallback` and its table), `telemetry`
(`TelemetryCallback`, HyperNodes 0.4's tracing, and the OpenTelemetry spans of
`MetricsCallback(otel=True)`).

Engines do not call the hooks one by one: the node runtime fires them through a
`Callbacks` dispatcher (`hypernodes_daft.runtime.dispatch`, re-exported here), built once
per run. As in 0.4, an exception raised by a callback is not caught: it propagates and
fails the run (a broken callback should be seen, not silently disabled). Engines that see
events per batch rather than per row (DaftEngine) report through `record_batch` and
`advance_items`; callbacks that leave those hooks as inherited get the 0.4 hooks per row.
"""

from ..runtime.context import NodeContext, current_node, node_context
from ..runtime.dispatch import HOOKS, CallbackContext, Callbacks, RowFailed
from .base import PipelineCallback
from .metrics import MetricsCallback
from .progress import ProgressCallback, report_progress
from .telemetry import TelemetryCallback

__all__ = [
    "HOOKS",
    "CallbackContext",
    "Callbacks",
    "MetricsCallback",
    "NodeContext",
    "PipelineCallback",
    "ProgressCallback",
    "RowFailed",
    "TelemetryCallback",
    "current_node",
    "node_context",
    "report_progress",
]
