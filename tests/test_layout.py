"""The package layout: layered subpackages, small modules, entry points that still resolve.

import-linter (``lint-imports``, in the lint session) checks who may import whom; these tests
check what it cannot: that no private module sits flat at the top level again, that modules
stay small, and that no SQL is written outside the data edge (``_pg/``).  The size exceptions
below are debt, listed so that it shows: each one may not grow, and the test fails once it is
fixed so that the entry is removed.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asynqpg_trio"

#: What may sit at the top of the package: the public surface and the layered subpackages.
TOP_FILES = {"__init__.py", "sync.py", "py.typed"}
SUBPACKAGES = {
    "_core",
    "_pg",
    "_telemetry",
    "_maintenance",
    "_consumer",
    "_api",
    "_cli",
    "web",
    "testing",
}

MAX_LINES = 450
#: Modules over MAX_LINES today, with their size when the limit was set (they may not grow).
OVERSIZED: dict[str, int] = {}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_flat_private_modules() -> None:
    top = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    files = {name for name in top if not (PACKAGE / name).is_dir()}
    dirs = top - files
    assert files == TOP_FILES, "private modules belong in a subpackage, not at the top level"
    assert dirs == SUBPACKAGES
    for name in dirs:
        assert (PACKAGE / name / "__init__.py").is_file(), f"{name} is not a package"


def test_modules_stay_small() -> None:
    sizes = {
        p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in _modules()
    }
    too_big = {name: n for name, n in sizes.items() if n > OVERSIZED.get(name, MAX_LINES)}
    assert not too_big, f"split these modules (limit {MAX_LINES} lines): {too_big}"
    fixed = [name for name in OVERSIZED if sizes.get(name, 0) <= MAX_LINES]
    assert not fixed, f"no longer oversized, remove from OVERSIZED: {fixed}"


def test_console_script_resolves() -> None:
    (script,) = [
        ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "asynqpg-trio"
    ]
    assert script.value == "asynqpg_trio._cli:main"
    assert callable(script.load())


@pytest.mark.parametrize("module", ["asynqpg_trio._cli", "asynqpg_trio._cli._web"])
def test_runnable_with_python_m(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "usage:" in proc.stdout


# --- SQL lives in the data edge ------------------------------------------------------------

#: A string that reads as a SQL statement (the house style writes SQL keywords in capitals).
_SQL = re.compile(
    r"""^\s*(?:
        SELECT\s+\S | INSERT\s+INTO\s | UPDATE\s+\w+(?:\s+\w+)?\s+SET\s | DELETE\s+FROM\s
        | WITH\s+\w+\s+AS\s*\( | (?:LISTEN|UNLISTEN|NOTIFY)\s+\w+\s*;?\s*$
        | (?:CREATE|ALTER|DROP)\s+(?:UNLOGGED\s+)?(?:TABLE|INDEX|FUNCTION|TYPE|SCHEMA|VIEW
            |EXTENSION|TRIGGER|DATABASE)\b
        | TRUNCATE\s | (?:BEGIN|COMMIT|ROLLBACK)\s*;?\s*$ | SET\s+\w+\s*(?:=|TO)\s
    )""",
    re.VERBOSE,
)

#: SQL that must stay outside ``_pg/`` for now, by (module, line text).  Each entry says why and
#: when it goes; an entry that no longer matches fails the test, so the list only shrinks.
#: SQL that must stay outside _pg/, with the reason (empty: there is none).
SQL_ALLOWED: set[tuple[str, str]] = set()


def _text(node: ast.expr) -> str | None:
    """The text of a string literal; an f-string's placeholders read as ``x``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x"
            for v in node.values
        )
    return None


def _names_queries(node: ast.AST) -> bool:
    """``QUERIES`` or ``x.QUERIES``: a repository's statement holder."""
    if isinstance(node, ast.Attribute):
        return node.attr == "QUERIES"
    return isinstance(node, ast.Name) and node.id == "QUERIES"


def _sql_sites(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals that are SQL: statement-shaped text, anything passed to an
    ``execute`` or ``SQL(...)`` call, and any use of a ``QUERIES`` holder."""
    found: list[tuple[int, str]] = []
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstring.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if id(node) in inside_fstring:
            continue
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"execute", "executemany", "SQL"} and node.args:
                text = _text(node.args[0])
                if text is not None and not _SQL.match(text):
                    found.append((node.lineno, text.strip()[:40]))
        elif isinstance(node, ast.expr) and _names_queries(node):
            found.append((node.lineno, "QUERIES"))
        elif isinstance(node, ast.expr):
            text = _text(node)
            if text is not None and _SQL.match(text):
                found.append((node.lineno, text.strip()[:40]))
    return found


def test_no_sql_outside_the_data_edge() -> None:
    found: set[tuple[str, str]] = set()
    lines: list[str] = []
    for path in _modules():
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("_pg/"):
            continue
        for lineno, text in _sql_sites(ast.parse(path.read_text(encoding="utf-8"))):
            found.add((name, text))
            if (name, text) not in SQL_ALLOWED:
                lines.append(f"{name}:{lineno}: {text!r}")
    assert not lines, "SQL belongs in _pg/sql/*.sql behind a repository:\n" + "\n".join(lines)
    stale = SQL_ALLOWED - found
    assert not stale, f"no longer found, remove from SQL_ALLOWED: {sorted(stale)}"


@pytest.mark.parametrize(
    "source",
    [
        'conn.execute("SELECT 1")',
        'conn.execute("select id from asynqpg_tasks")',
        'q = "DELETE FROM asynqpg_tasks WHERE id = %s"',
        'q = f"LISTEN {channel}"',
        "q = sql.SQL('UPDATE asynqpg_tasks t SET status = 1')",
        "cur = await conn.execute(repo.QUERIES.claim)",
        'q = """\n    WITH gone AS (DELETE FROM t RETURNING id) SELECT 1"""',
    ],
)
def test_the_sql_scan_sees(source: str) -> None:
    assert _sql_sites(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        'logger.warning("LISTEN connection failed (%s); retrying", ex)',
        'methods = ["POST", "DELETE"]',
        'help = "Select the tasks to show"',
        'raise ValueError("UPDATE the package first")',
    ],
)
def test_the_sql_scan_ignores(source: str) -> None:
    assert not _sql_sites(ast.parse(source))
