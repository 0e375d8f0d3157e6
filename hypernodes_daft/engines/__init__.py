"""Engines: each executes plans behind one protocol (`Engine`)."""

from .local import HypernodesEngine, SeqEngine
from .protocol import Engine

__all__ = ["DaftEngine", "Engine", "HypernodesEngine", "SeqEngine"]


def __getattr__(name: str) -> object:
    # DaftEngine imports daft (about a second): only when it is asked for
    if name == "DaftEngine":
        from .daft import DaftEngine

        return DaftEngine
    raise AttributeError(f"module 'hypernodes_daft.engines' has no attribute {name!r}")
