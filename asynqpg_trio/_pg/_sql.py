"""The one SQL loader: every ``sql/*.sql`` file, read once at import into frozen objects.

Theory of operation
-------------------
A block starts with ``-- name: <identifier>``; the comment lines after it document the query;
everything up to the next block is the statement.  A block that writes ``asynqpg_tasks`` names
the state-table events it implements on a ``-- events: a, b`` comment line (checked against
``_core/_state.py`` by ``tests/test_state_sql.py``).

At import this module parses every file of ``sql/`` once (`BLOCKS`) and checks that no name
is defined twice, within a file or across files.  `load` then fills a frozen dataclass whose
field names must match one file's block names exactly, so a missing or misspelt query fails
at import rather than at the first call.  Each repository declares its holder and loads it
here (``TaskQueries``, ``ClientQueries``, ``MaintenanceQueries``); the statements the pool and
the migrator run on every database (``schema.sql``) are loaded here as `SCHEMA`.  Migration
files are read through `read_migration`, as they are on disk: their checksums depend on it.

A block may name variants (``-- variants: <name>, ...``): statements that differ from it only
in regions marked by comment lines ``-- only <name> {`` and ``-- }``.  Each variant, the block
itself included, keeps the regions marked with its own name and drops the others, so the
statements share one text and each is planned with only what it runs (see ``claim``).

Parameters are always bound (``%(name)s``), never formatted in.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BLOCKS",
    "SCHEMA",
    "SchemaQueries",
    "load",
    "migration_files",
    "parse",
    "read_migration",
]

_T = TypeVar("_T")
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_VARIANTS = re.compile(r"^--\s*variants:\s*(.+?)\s*$", re.MULTILINE)
_ONLY = re.compile(r"^\s*--\s*only\s+([a-z_][a-z0-9_]*)\s*\{\s*$")
_END = re.compile(r"^\s*--\s*\}\s*$")


def parse(text: str) -> dict[str, str]:
    """Split a SQL file into ``{name: statement}``, variants included; duplicate names are an
    error."""
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        statement = body.rstrip().removesuffix(";").strip()
        name = match[1]
        found = _VARIANTS.search(statement)
        names = [name] + ([v.strip() for v in found[1].split(",")] if found else [])
        for each in names:
            if each in blocks:
                raise RuntimeError(f"SQL block {each!r} is defined twice")
            blocks[each] = _variant(statement, each, set(names))
    return blocks


def _variant(statement: str, name: str, names: set[str]) -> str:
    """``statement`` as variant ``name``: its own ``-- only`` regions kept, the others'
    dropped, the markers removed."""
    kept: list[str] = []
    region: str | None = None
    for line in statement.splitlines():
        opened = _ONLY.match(line)
        if opened:
            if region is not None or opened[1] not in names:
                raise RuntimeError(f"SQL block {name!r}: bad region {line.strip()!r}")
            region = opened[1]
        elif region is not None and _END.match(line):
            region = None
        elif region is None or region == name:
            kept.append(line)
    if region is not None:
        raise RuntimeError(f"SQL block {name!r}: region {region!r} is not closed")
    return "\n".join(kept)


def _read_all() -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    owner: dict[str, str] = {}
    directory = resources.files("asynqpg_trio._pg").joinpath("sql")
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        blocks = parse(entry.read_text("utf-8"))
        for name in blocks:
            if name in owner:
                raise RuntimeError(
                    f"SQL block {name!r} is defined in {owner[name]} and {entry.name}"
                )
            owner[name] = entry.name
        files[entry.name] = blocks
    return files


#: Every named block of every ``sql/*.sql`` file: ``{filename: {name: statement}}``.
BLOCKS: Mapping[str, Mapping[str, str]] = _read_all()


def load(cls: type[_T], filename: str) -> _T:
    """Build ``cls`` (a frozen dataclass of ``str`` fields) from the blocks of ``sql/<filename>``.

    Raises:
        RuntimeError: the file is unknown, or its block names differ from the fields.
    """
    if filename not in BLOCKS:
        raise RuntimeError(f"no SQL file {filename!r} in asynqpg_trio/_pg/sql/")
    blocks = BLOCKS[filename]
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if fields != set(blocks):
        missing = sorted(fields - set(blocks))
        extra = sorted(set(blocks) - fields)
        raise RuntimeError(f"{filename}: queries missing {missing}, unexpected {extra}")
    return cls(**blocks)


def migration_files() -> list[str]:
    """The file names in ``migrations/``, sorted."""
    directory = resources.files("asynqpg_trio._pg").joinpath("migrations")
    return sorted(entry.name for entry in directory.iterdir())


def read_migration(filename: str) -> str:
    """The text of ``migrations/<filename>`` exactly as shipped (never stripped or normalised:
    the recorded checksum is of this text)."""
    return (
        resources.files("asynqpg_trio._pg")
        .joinpath("migrations", filename)
        .read_text(encoding="utf-8")
    )


@dataclass(frozen=True, slots=True)
class SchemaQueries:
    """The statements of ``sql/schema.sql``: the migrator's bookkeeping and the pool's ping."""

    migration_try_lock: str
    migration_unlock: str
    set_lock_timeout: str
    create_bookkeeping: str
    recorded_versions: str
    record_version: str
    create_progress: str
    progress: str
    record_progress: str
    clear_progress: str
    index_is_invalid: str
    drop_index: str
    has_bookkeeping: str
    ping: str


#: The loaded schema statements.
SCHEMA: SchemaQueries = load(SchemaQueries, "schema.sql")
