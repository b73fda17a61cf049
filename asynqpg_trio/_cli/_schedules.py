"""The ``schedules`` command: the periodic schedules consumers run, from ``asynqpg_schedules``.

Theory of operation
-------------------
One read of the table (`_pg._schedules_repo.list_schedules`), printed as one JSON document
(``{"schedules": [...]}``, times ISO 8601 with offset) with ``--json``, else as a table with
times in UTC.  A row is written by every consumer that runs the schedule, at its start and
with each fire, so ``updated_at`` (JSON) says when one last did: a row nobody updates any
more belongs to a schedule no consumer runs (its next fire then lies in the past).  Schedules
are declared in code (``open_consumer(..., schedules=[...])`` or ``worker --schedules``); the
table only reports them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .._core._views import format_utc
from .._pg._schedules_repo import list_schedules
from ._args import command
from ._commands import database

if TYPE_CHECKING:
    import argparse

    from .._core._schedule_rows import ScheduleRow
    from .._pg._pool import Pool
    from ._args import Parser

__all__ = ["add_schedule_commands", "schedule_json", "schedules_table"]


def schedule_json(row: ScheduleRow) -> dict[str, Any]:
    """One schedule row as JSON-ready data."""
    return {
        "name": row.name,
        "type": row.type,
        "spec": row.spec,
        "timezone": row.timezone,
        "catch_up": row.catch_up,
        "last_fire": None if row.last_fire is None else row.last_fire.isoformat(),
        "next_fire": None if row.next_fire is None else row.next_fire.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def schedules_table(rows: list[ScheduleRow]) -> Group:
    """The schedules as a table (times in UTC), or a line saying there are none."""
    if not rows:
        return Group(Text("no schedules: none has run in a consumer yet", style="dim"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for title in ("Name", "Type", "Spec", "Zone", "Last fire (UTC)", "Next fire (UTC)"):
        table.add_column(title, no_wrap=title.endswith("(UTC)"))
    for row in rows:
        table.add_row(
            row.name,
            row.type,
            row.spec,
            row.timezone,
            format_utc(row.last_fire),
            format_utc(row.next_fire),
        )
    return Group(table)


async def _schedules(pool: Pool, args: argparse.Namespace) -> int:
    async with pool.connection() as conn:
        rows = await list_schedules(conn)
    if args.json:
        print(json.dumps({"schedules": [schedule_json(r) for r in rows]}), flush=True)
        return 0
    console = Console(markup=False, emoji=False, highlight=False)
    if not console.is_terminal:  # piped: print every value in full
        console = Console(markup=False, emoji=False, highlight=False, width=1_000_000)
    console.print(schedules_table(rows))
    return 0


def add_schedule_commands(sub: Any, common: Parser) -> None:
    """Register ``schedules``."""
    p = command(
        sub,
        "schedules",
        common,
        "list the periodic schedules with their last and next fires",
        "List the periodic schedules consumers run (declared in code, recorded in the "
        "database), with their last and next fire times.",
    )
    p.set_defaults(func=database(_schedules))
