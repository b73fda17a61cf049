"""Loads the named SQL blocks of ``sql/*.sql`` into frozen objects, once, at import.

A block starts with ``-- name: <identifier>``; the comment lines after it document the query;
everything up to the next block is the statement.  A block that writes ``asynqpg_tasks`` names
the state-table events it implements on a ``-- events: a, b`` comment line (checked against
``_state.py`` by ``tests/test_state_sql.py``).  `load` fills a frozen dataclass whose field
names must match the file's block names exactly, so a missing or misspelt query fails at import
rather than at the first call.  Parameters are always bound (``%(name)s``), never formatted in.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import TypeVar

__all__ = ["load", "parse"]

_T = TypeVar("_T")
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a SQL file into ``{name: statement}``; duplicate names are an error."""
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        statement = body.rstrip().removesuffix(";").strip()
        name = match[1]
        if name in blocks:
            raise RuntimeError(f"SQL block {name!r} is defined twice")
        blocks[name] = statement
    return blocks


def load(cls: type[_T], filename: str) -> _T:
    """Read ``sql/<filename>`` and build ``cls`` (a frozen dataclass of ``str`` fields)."""
    text = resources.files("asynqpg_trio._pg").joinpath("sql", filename).read_text("utf-8")
    blocks = parse(text)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if fields != set(blocks):
        missing = sorted(fields - set(blocks))
        extra = sorted(set(blocks) - fields)
        raise RuntimeError(f"{filename}: queries missing {missing}, unexpected {extra}")
    return cls(**blocks)
