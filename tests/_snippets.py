"""Python snippets in prose (the README, the docs) split into statements to run one by one,
each with the result its page shows for it.

    for code, line, expected in statements(block):   # expected: a literal's source, or None
        ...
"""

from __future__ import annotations

import ast


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
