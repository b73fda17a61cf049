"""The migration files, loaded and split into the steps the runner applies one by one.

Theory of operation
-------------------
A migration is the exact text of one ``migrations/NNNN_name.sql`` file (its checksum is of that
text) and the `Step` tuple parsed from it when the `Migration` is built, so a file the runner
could not apply fails at import, not half-way through a deployment.  The syntax is documented
in ``_migrate.py``, which applies the steps; this module only reads text and does no I/O
besides reading the package's own files.

A step is the unit that is applied and recorded as done: a transactional section as a whole, or
a single statement of a ``concurrently`` section.  Parsing refuses what the runner could not
repair later: a ``CREATE INDEX CONCURRENTLY`` without ``IF NOT EXISTS`` and a plain index name,
two statements sharing a line, a statement without its closing ``;``, an unknown directive.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ._sql import migration_files, read_migration

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "Step", "split_steps"]

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: A line switching the section: ``-- asynqpg: transaction`` or ``-- asynqpg: concurrently``.
_DIRECTIVE = re.compile(r"^--\s*asynqpg:(.*)$", re.MULTILINE)
_SECTIONS = ("transaction", "concurrently")
_CREATE_INDEX_CONCURRENTLY = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b", re.IGNORECASE
)
_NAMED_IF_NOT_EXISTS = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+"
    r"((?:[a-z_][a-z0-9_$]*\.)?[a-z_][a-z0-9_$]*)\s+ON\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of a migration that is applied, and recorded as done, on its own.

    Attributes:
        sql: the text to execute: a whole transactional section, or one statement.
        in_transaction: run inside a transaction (with ``lock_timeout``), else alone in
            autocommit.
        index: for a ``CREATE INDEX CONCURRENTLY``, the index it builds (lower case, maybe
            schema-qualified), which the runner drops first if a failed build left it invalid.
    """

    sql: str
    in_transaction: bool
    index: str | None = None


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, name, SQL text, checksum and steps.

    Raises:
        ValueError: the text breaks the migration syntax (see ``_migrate.py``).
    """

    version: int
    name: str
    sql: str
    steps: tuple[Step, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"migration {self.version} ({self.name})"
        object.__setattr__(self, "steps", split_steps(self.sql, where=where))

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def split_steps(text: str, *, where: str = "migration") -> tuple[Step, ...]:
    """Split a migration's text into its steps, in order.

    Raises:
        ValueError: an unknown directive, a malformed ``concurrently`` section, or no step.
    """
    steps: list[Step] = []
    section, start = "transaction", 0
    for match in [*_DIRECTIVE.finditer(text), None]:
        body = text[start : match.start() if match else len(text)]
        if section == "transaction":
            if _code(body):
                steps.append(Step(body, in_transaction=True))
        else:
            steps.extend(_concurrent_steps(body, where))
        if match is None:
            break
        section, start = match[1].strip().lower(), match.end()
        if section not in _SECTIONS:
            raise ValueError(
                f"{where}: unknown directive {match[0].strip()!r}; use "
                + " or ".join(f"'-- asynqpg: {s}'" for s in _SECTIONS)
            )
    if not steps:
        raise ValueError(f"{where}: no statements")
    return tuple(steps)


def _code(text: str) -> str:
    """``text`` without its comment lines and surrounding blank space."""
    return "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("--")
    ).strip()


def _concurrent_steps(body: str, where: str) -> list[Step]:
    """One step per statement: each ends with a ``;`` at the end of a line."""
    steps: list[Step] = []
    pending: list[str] = []
    for line in _code(body).splitlines():
        pending.append(line)
        if not line.rstrip().endswith(";"):
            continue
        statement = "\n".join(pending).strip().removesuffix(";").strip()
        pending = []
        if ";" in statement:
            raise ValueError(
                f"{where}: one statement per ';'-ended line in a concurrently section: "
                f"{statement!r}"
            )
        if statement:
            steps.append(Step(statement, in_transaction=False, index=_index_built(statement)))
    rest = "\n".join(pending).strip()
    if rest:
        raise ValueError(f"{where}: statement without its closing ';': {rest!r}")
    if not steps:
        raise ValueError(f"{where}: a concurrently section without statements")
    for step in steps:
        if step.index is None and _CREATE_INDEX_CONCURRENTLY.match(step.sql):
            raise ValueError(
                f"{where}: write CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON ..., with a "
                f"plain (unquoted) name, so that a rerun can find and repair the index: "
                f"{step.sql!r}"
            )
    return steps


def _index_built(statement: str) -> str | None:
    match = _NAMED_IF_NOT_EXISTS.match(statement)
    # Unquoted identifiers fold to lower case, as PostgreSQL folds them.
    return match[1].lower() if match else None


def _load() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for filename in migration_files():
        match = _FILE.match(filename)
        if match:
            found.append(Migration(int(match[1]), match[2], read_migration(filename)))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise RuntimeError(f"migration files must be numbered 1..n without gaps: {found}")
    return tuple(found)


#: Every migration this package ships, in order.
MIGRATIONS: tuple[Migration, ...] = _load()
#: The schema version this package needs.
LATEST_VERSION: int = MIGRATIONS[-1].version
