"""Engines that run on this machine."""

from .engine import HypernodesEngine, SeqEngine

__all__ = ["HypernodesEngine", "SeqEngine"]
