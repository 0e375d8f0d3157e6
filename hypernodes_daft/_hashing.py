"""Stable fingerprints of code, the same in every process."""

from __future__ import annotations

import hashlib
import inspect
import marshal
import re
import textwrap
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 4


def hash_code(func: Any, _depth: int = 0) -> str:
    """SHA-256 of a callable's source and of the values its closure captured.

    Computed once per node, when the node is created: reading source from disk costs
    milliseconds, far too much to repeat per call (HyperNodes 0.4 hashed source per item).
    """
    parts = [_source_of(func)]
    for cell in getattr(func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
        parts.append(_stable_repr(value, _depth))
    return hashlib.sha256("::".join(parts).encode()).hexdigest()


def _source_of(func: Any) -> str:
    target = func if inspect.isroutine(func) or inspect.isclass(func) else type(func)
    try:
        return textwrap.dedent(inspect.getsource(target))
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        if code is not None:  # defined in exec() or a REPL: the bytecode is what we have
            return marshal.dumps(code).hex()
        return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"


def _stable_repr(value: Any, depth: int) -> str:
    if callable(value) and depth < _MAX_DEPTH and hasattr(value, "__code__"):
        return hash_code(value, depth + 1)
    return _ADDRESS.sub("", repr(value))
