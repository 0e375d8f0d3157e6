"""The Daft engine: pipelines compiled to lazy Daft DataFrames (design.md, engines/daft)."""

from .engine import DaftEngine

__all__ = ["DaftEngine"]
