"""The README's Python examples run, and print what their `# result` comments say."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _snippets import statements

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_examples_give_the_results_they_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"text": ["a b", "c"]}), "texts.parquet")
    namespace: dict = {}
    checked = 0
    for block in python_blocks():
        for code, _, expected in statements(block):
            if expected is None:
                exec(compile(code, "README.md", "exec"), namespace)
                continue
            value = eval(compile(code, "README.md", "eval"), namespace)
            assert value == ast.literal_eval(expected), code
            checked += 1
    assert checked >= 4
    assert list(tmp_path.glob("scored/*.parquet"))
