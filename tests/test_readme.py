"""The README's Python examples run, and print what their `# result` comments say."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def checked_statements(source: str) -> list[tuple[str, str | None]]:
    """Each top-level statement's source and the `# expected` comment right after it."""
    lines = source.splitlines()
    result = []
    for statement in ast.parse(source).body:
        decorators = getattr(statement, "decorator_list", [])
        start = min([statement.lineno, *(d.lineno for d in decorators)])
        code = "\n".join(lines[start - 1 : statement.end_lineno])
        after = lines[statement.end_lineno] if statement.end_lineno < len(lines) else ""
        expected = after[2:] if after.startswith("# ") else None
        result.append((code, expected if isinstance(statement, ast.Expr) else None))
    return result


def test_readme_examples_give_the_results_they_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"text": ["a b", "c"]}), "texts.parquet")
    namespace: dict = {}
    checked = 0
    for block in python_blocks():
        for code, expected in checked_statements(block):
            if expected is None:
                exec(compile(code, "README.md", "exec"), namespace)
                continue
            value = eval(compile(code, "README.md", "eval"), namespace)
            if expected.startswith(("{", "[", "'", '"')) or expected[0].isdigit():
                assert value == ast.literal_eval(expected), code
                checked += 1
    assert checked >= 4
    assert list(tmp_path.glob("scored/*.parquet"))
