"""The notebooks in notebooks/ run from top to bottom in a fresh kernel, each well within its
time budget. The kernel inherits this process's environment, so the local-only settings of
conftest.py (keep_local) reach it; each notebook also calls keep_local() itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
BUDGET_SECONDS = 60  # each notebook takes well under 30 s here; this catches a hang early


def test_the_three_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"quick_start", "async_io", "caching"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=BUDGET_SECONDS,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    elapsed = time.perf_counter() - started
    assert elapsed < BUDGET_SECONDS, f"{path.name} took {elapsed:.0f} s"
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing"
            )
