"""HyperNodes 0.4's `hypernodes.telemetry`: progress bars and tracing callbacks.

from hypernodes_daft.telemetry import ProgressCallback, TelemetryCallback
"""

from .callbacks.progress import ProgressCallback
from .callbacks.telemetry import TelemetryCallback

__all__ = ["ProgressCallback", "TelemetryCallback"]
