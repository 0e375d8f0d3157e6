"""Stable fingerprints of code, the same in every process.

A node's fingerprint covers its own source, the values its closure captured, and the user
code it reaches: the module-level functions and classes of the user's own modules that it
refers to (by name, or as `module.name` of a user module), transitively. Editing a helper
therefore re-runs every node that calls it, and only those. The standard library, installed
packages and hypernodes_daft itself are left out: their code changes with their version.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
import os
import re
import site
import sys
import sysconfig
import textwrap
import types
from collections.abc import Iterator
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 4
_MAX_REACHED = 256  # bounds the walk in a large code base; the nearest code counts most


def hash_code(func: Any, _depth: int = 0) -> str:
    """SHA-256 of a callable's source, of the values its closure captured and of the user
    code it reaches (see the module docstring).

    Computed once per node: reading source from disk costs milliseconds, far too much to
    repeat per call (HyperNodes 0.4 hashed source per item).
    """
    parts = [_source_of(func)]
    for cell in getattr(func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
        parts.append(_stable_repr(value, _depth))
    if _depth == 0:
        parts.extend(_source_of(helper) for helper in reached_code(func))
    return hashlib.sha256("::".join(parts).encode()).hexdigest()


def reached_code(func: Any) -> list[Any]:
    """The functions and classes of the user's own modules that `func` reaches, in the
    order first met (deterministic: it follows the code's names)."""
    seen = {id(func)}
    found: list[Any] = []
    pending = [func]
    while pending and len(found) < _MAX_REACHED:
        for target in _referenced(pending.pop(0)):
            if id(target) not in seen:
                seen.add(id(target))
                found.append(target)
                pending.append(target)
    return found


def _referenced(obj: Any) -> Iterator[Any]:
    """The user functions and classes `obj` (a function or a class) names."""
    if inspect.isclass(obj):
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)  # staticmethod, classmethod
            if inspect.isfunction(member):
                yield from _referenced(member)
        return
    func = inspect.unwrap(getattr(obj, "func", obj))
    code = getattr(func, "__code__", None)
    if code is None:
        return
    namespace = getattr(func, "__globals__", {})
    names = list(_names_of(code))
    for name in names:
        value = namespace.get(name)
        if isinstance(value, types.ModuleType):
            if _is_user_module(value.__name__):  # `helpers.normalize(x)`
                yield from (v for n in names if _is_user_code(v := getattr(value, n, None)))
        elif _is_user_code(value := getattr(value, "func", value)):
            yield value


def _names_of(code: types.CodeType) -> Iterator[str]:
    """The global and attribute names a code object and the code nested in it read."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names_of(const)


def _is_user_code(value: Any) -> bool:
    if not (inspect.isfunction(value) or inspect.isclass(value)):
        return False
    return _is_user_module(getattr(value, "__module__", None) or "")


@functools.lru_cache(maxsize=1024)
def _is_user_module(name: str) -> bool:
    """Whether module `name` is the user's own code: `__main__`, or a module loaded from a
    file outside the standard library and the installed packages."""
    if name == "__main__":
        return True
    top = name.partition(".")[0]
    if not name or top == "hypernodes_daft" or top in sys.stdlib_module_names:
        return False
    path = getattr(sys.modules.get(name), "__file__", None)
    if not path:  # built in, or not imported as a file
        return False
    path = os.path.realpath(path)
    return not any(path.startswith(library) for library in _library_paths())


@functools.lru_cache(maxsize=1)
def _library_paths() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


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
