"""Imports point down the layers (docs/architecture.md): every import of a package module,
at module level or inside a function, relative or absolute, is checked against RULES.

A failure lists each forbidden edge as `module -> imported module (line N)`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "hypernodes_daft"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# A layer is a set of modules: "x" names x.py, or the package x/ and everything in it.
LAYERS = {
    "authoring": ("node", "stateful", "pipeline_node", "pipeline"),
    "planning": ("graph", "plan", "dataset"),
    "runtime": ("runtime",),
    "callbacks": ("callbacks",),
    "engines": ("engines",),
    "engines/local": ("engines.local",),
    "engines/daft": ("engines.daft",),
    "surfaces": ("io", "cli", "visualize", "estimate"),
    "vocabulary": (
        "exceptions",
        "results",
        "options",
        "resources",
        "cache",
        "_storage",
        "_hashing",
    ),
    "pipeline": ("pipeline",),
}

# layer -> the layers its modules must not import (type-checking-only imports count too)
RULES = {
    # the runtime calls nodes and fires events; it never knows who runs it or who listens
    "runtime": ("engines", "callbacks", "surfaces", "pipeline"),
    # engines stand side by side; both build on the runtime
    "engines/daft": ("engines/local",),
    "engines/local": ("engines/daft",),
    # an engine runs plans; the surfaces (the CLI, write_parquet) and the listeners sit above
    "engines": ("surfaces", "callbacks", "pipeline"),
    # planning is plain data: it reads nothing, runs nothing, draws nothing
    "planning": ("authoring", "engines", "runtime", "callbacks", "surfaces"),
    # callbacks listen to any engine through the runtime's events
    "callbacks": ("engines",),
    # what users write works on every engine
    "authoring": ("engines", "callbacks"),
    # errors, error records, node options, cache stores and keys: every layer's words
    "vocabulary": ("authoring", "planning", "runtime", "callbacks", "engines", "surfaces"),
}

# (module, imported package) allowed only inside a function. The one exception: a
# Pipeline made without an engine gets HypernodesEngine(), imported when it is made
# (pipeline._default_engine), so importing pipeline.py loads no engine.
LAZY_EXCEPTIONS = {("pipeline", "engines.local")}

# (module, imported module) allowed only under `if TYPE_CHECKING:`: the pipeline's `engine`
# is typed with the engines' contract, while importing pipeline.py still loads no engine.
TYPING_EXCEPTIONS = {("pipeline", "engines.protocol")}


def relative(module: str) -> str:
    return module.removeprefix(f"{PACKAGE}.")


def layers_of(module: str) -> set[str]:
    name = relative(module)
    return {
        layer
        for layer, members in LAYERS.items()
        if any(name == m or name.startswith(f"{m}.") for m in members)
    }


def package_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = package_modules()


def imports(module: str, is_package: bool, source: str):
    """(imported package module, line, inside a function, under `if TYPE_CHECKING:`) for
    each import in `source`."""
    tree = ast.parse(source)
    functions = (
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    lazy = {id(inner) for f in functions for inner in ast.walk(f)}
    checks = (n for n in ast.walk(tree) if isinstance(n, ast.If) and _is_type_checking(n.test))
    typing_only = {id(inner) for n in checks for stmt in n.body for inner in ast.walk(stmt)}
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y, from .. import y
                parent = here[: len(here) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from package import module` imports that module; otherwise the package itself
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(f"{PACKAGE}."):
                yield target, node.lineno, id(node) in lazy, id(node) in typing_only


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING`."""
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def violations(module: str, is_package: bool, source: str) -> list[str]:
    """Each forbidden import of `module` as 'module -> imported module (line N)'."""
    found = []
    for target, line, lazy, typing_only in imports(module, is_package, source):
        banned = {b for layer in layers_of(module) for b in RULES.get(layer, ())}
        crossed = banned & layers_of(target)
        excepted = (lazy and _excepted(module, target, LAZY_EXCEPTIONS)) or (
            typing_only and _excepted(module, target, TYPING_EXCEPTIONS)
        )
        if crossed and not excepted:
            found.append(f"{relative(module)} -> {relative(target)} (line {line})")
    return sorted(set(found))


def _excepted(module: str, target: str, exceptions: set[tuple[str, str]]) -> bool:
    return any(
        relative(module) == m and (relative(target) + ".").startswith(f"{t}.")
        for m, t in exceptions
    )


def test_imports_point_down_the_layers():
    found = [
        edge
        for module, path in MODULES.items()
        for edge in violations(module, path.name == "__init__.py", path.read_text())
    ]
    assert not found, "imports crossing a layer the wrong way:\n" + "\n".join(found)


def test_the_rules_bite():
    """A wrong-way import is reported: relative or absolute, at module level or lazy."""
    source = (
        "from ..engines.local import HypernodesEngine\n"  # runtime -> engines
        "from .node_call import Services\n"  # within the runtime: fine
        "def later():\n"
        "    from hypernodes_daft import callbacks\n"  # runtime -> callbacks, lazily
    )
    assert violations(f"{PACKAGE}.runtime.fake", False, source) == [
        "runtime.fake -> callbacks (line 4)",
        "runtime.fake -> engines.local (line 1)",
    ]
    assert violations(f"{PACKAGE}.engines.daft", True, "from ..local import engine\n") == [
        "engines.daft -> engines.local.engine (line 1)"
    ]
    assert violations(f"{PACKAGE}.plan", False, "from . import io\n") == ["plan -> io (line 1)"]
    # the default engine: allowed inside a function, not at module level
    lazy = "def default():\n    from .engines.local import HypernodesEngine\n"
    assert violations(f"{PACKAGE}.pipeline", False, lazy) == []
    eager = "from .engines.local import HypernodesEngine\n"
    assert violations(f"{PACKAGE}.pipeline", False, eager) == ["pipeline -> engines.local (line 1)"]
    # the engine contract: allowed for type checking only, and only the contract
    typing_only = "if TYPE_CHECKING:\n    from .engines.protocol import Engine\n"
    assert violations(f"{PACKAGE}.pipeline", False, typing_only) == []
    contract = "from .engines.protocol import Engine\n"
    assert violations(f"{PACKAGE}.pipeline", False, contract) == [
        "pipeline -> engines.protocol (line 1)"
    ]
    engine = "if TYPE_CHECKING:\n    from .engines.local import HypernodesEngine\n"
    assert violations(f"{PACKAGE}.pipeline", False, engine) == [
        "pipeline -> engines.local (line 2)"
    ]
