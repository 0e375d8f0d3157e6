"""Engines: each executes plans behind one protocol (`Engine`)."""

from .local import HypernodesEngine, SeqEngine
from .protocol import Engine

__all__ = ["Engine", "HypernodesEngine", "SeqEngine"]
