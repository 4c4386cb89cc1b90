"""Ledger SQL has one owner (issue 22): no module may start executing SQL outside the ledger modules.

AST-based, so a comment or docstring that mentions SELECT cannot fool it either way. The files in
KNOWN_SQL are today's debt (SQL not yet moved behind a named function in `analysis/ledger/`): the
list may only shrink — a new file with SQL fails, and a listed file that no longer holds SQL fails
until it is struck from the list, so the count is a ratchet.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pruning", "analysis", "usecases", "app", "benchmarks")
LEDGER_OWNERS_DIR = "analysis/ledger/"
# Debt, not permission: each entry should move behind a named function in the ledger.
KNOWN_SQL: set[str] = set()
SQL_TEXT = re.compile(
    r"^\s*(SELECT\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|CREATE\s+(TABLE|INDEX|VIEW|SEQUENCE)\b"
    r"|ALTER\s+TABLE\b|DROP\s+TABLE\b|WITH\s+\w+\s+AS\s*\()"
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_uses(source: str) -> list[str]:
    """What in `source` executes or spells SQL: `.execute(`/`.sql(` calls, `duckdb.connect`, SQL literals."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in ("execute", "executemany", "sql"):
                found.append(f"line {node.lineno}: .{attr}(")
            if attr == "connect" and isinstance(node.func.value, ast.Name) and node.func.value.id == "duckdb":
                found.append(f"line {node.lineno}: duckdb.connect(")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if SQL_TEXT.match(node.value):
                found.append(f"line {node.lineno}: SQL literal {node.value.strip()[:40]!r}")
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and SQL_TEXT.match(head.value):
                found.append(f"line {node.lineno}: SQL f-string {head.value.strip()[:40]!r}")
    return found


def _offenders() -> dict[str, list[str]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            uses = sql_uses(path.read_text())
            if uses:
                out[rel] = uses
    return out


def test_detector_sees_sql_and_ignores_comments_and_docstrings() -> None:
    assert sql_uses('con.execute("SELECT 1")')
    assert sql_uses('q = "INSERT INTO tickets VALUES (?)"')
    assert sql_uses('q = f"SELECT {cols} FROM t"')
    assert sql_uses("import duckdb\nc = duckdb.connect(p)")
    assert sql_uses("df = con.sql(q).df()")
    assert not sql_uses('"""SELECT the best ticket."""\n# SELECT * FROM tickets\nx = "Select a ticket"')


def test_no_sql_outside_the_ledger_package() -> None:
    offenders = _offenders()
    new = {f: u for f, u in offenders.items() if not f.startswith(LEDGER_OWNERS_DIR) and f not in KNOWN_SQL}
    assert not new, "SQL outside the ledger (put it behind a named function in the ledger): " + repr(new)


def test_known_sql_debt_only_shrinks() -> None:
    cleaned = sorted(KNOWN_SQL - set(_offenders()))
    assert not cleaned, f"these files no longer hold SQL: strike them from KNOWN_SQL: {cleaned}"
