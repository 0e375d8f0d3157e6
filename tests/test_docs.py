"""The docs: every ```python block of every page runs, and `mkdocs build --strict` passes.

Each page's blocks run in order in one namespace, in a fresh temporary working directory.
An expression statement followed by a `# <python literal>` comment line must evaluate to
that literal (as in tests/test_readme.py), so the results the docs show are checked.

A block preceded by `<!-- docs-test: skip REASON -->` is not run while REASON is in SKIP;
the skipped blocks are listed by their own skipped test, so they stay visible.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Blocks that need the engines to fire callbacks were marked with this reason while the
# wiring was being done; it has landed, so SKIP is empty and every block runs. Put the
# reason back in SKIP (and the marker before a block) only if a page must wait again.
CALLBACKS_WIRING = "callbacks-wiring"
SKIP: set[str] = set()

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s+([\w-]+)\s*-->\s*$")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line number, source, skip reason or None) of each ```python block of `page`."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        found.append((line, match.group(1), marker.group(1) if marker else None))
    return found


def statements(source: str) -> list[tuple[str, int, str | None]]:
    """Each top-level statement: its source, first line and the literal it must equal
    (a `# literal` comment line right after an expression statement), or None."""
    lines = source.splitlines()
    result = []
    for statement in ast.parse(source).body:
        decorators = getattr(statement, "decorator_list", [])
        start = min([statement.lineno, *(d.lineno for d in decorators)])
        code = "\n".join(lines[start - 1 : statement.end_lineno])
        after = lines[statement.end_lineno] if statement.end_lineno < len(lines) else ""
        expected = None
        if isinstance(statement, ast.Expr) and after.startswith("# "):
            try:
                ast.literal_eval(after[2:])
                expected = after[2:]
            except (ValueError, SyntaxError):
                expected = None  # a comment in prose, not a result
        result.append((code, start, expected))
    return result


def run_block(source: str, name: str, first_line: int, namespace: dict) -> int:
    """Run one block statement by statement; returns how many results it checked."""
    checked = 0
    for code, line, expected in statements(source):
        padded = "\n" * (first_line + line - 1) + code  # tracebacks point into the page
        if expected is None:
            exec(compile(padded, name, "exec"), namespace)
            continue
        value = eval(compile(padded, name, "eval"), namespace)
        assert value == ast.literal_eval(expected), (
            f"{name}, line {first_line + line}: {code!r} gave {value!r}, the page shows {expected}"
        )
        checked += 1
    return checked


PAGES = [p for p in pages() if blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_code_runs_and_shows_true_results(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # modules a page writes can be imported
    name = str(page.relative_to(ROOT))
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, source, reason in blocks(page):
        if reason is not None and reason in SKIP:
            continue
        run_block(source, name, line, namespace)


def test_every_page_is_in_the_nav_and_blocks_are_marked_correctly():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in pages():
        relative = str(page.relative_to(DOCS))
        if relative == "benchmarks/report.md":  # included by benchmarks/index.md
            continue
        assert relative in config, f"{relative} is not in mkdocs.yml's nav"
        for line, _, reason in blocks(page):
            assert reason is None or reason in {CALLBACKS_WIRING}, (
                f"{relative}:{line}: unknown skip reason {reason!r}"
            )


def test_blocks_waiting_for_callbacks_wiring():
    waiting = [
        f"{p.relative_to(DOCS)}:{line}"
        for p in pages()
        for line, _, reason in blocks(p)
        if reason == CALLBACKS_WIRING
    ]
    if waiting and CALLBACKS_WIRING in SKIP:
        pytest.skip(f"{CALLBACKS_WIRING}: not run until the engines fire callbacks: {waiting}")


def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "index.html").exists()
    assert (site / "benchmarks" / "index.html").exists()
