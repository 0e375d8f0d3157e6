"""The docs: every ```python block of every page runs, and `mkdocs build --strict` passes.

Each page's blocks run in order in one namespace, in a fresh temporary working directory.
An expression statement followed by a `# <python literal>` comment line must evaluate to
that literal (tests/_snippets.py, shared with tests/test_readme.py), so the results the
docs show are checked.
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
from _snippets import statements

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, source) of each ```python block of `page`."""
    text = page.read_text()
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1)) for match in _FENCE.finditer(text)
    ]


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
    for line, source in blocks(page):
        run_block(source, name, line, namespace)


def test_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in pages():
        relative = str(page.relative_to(DOCS))
        if relative == "benchmarks/report.md":  # included by benchmarks/index.md
            continue
        assert relative in config, f"{relative} is not in mkdocs.yml's nav"


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
