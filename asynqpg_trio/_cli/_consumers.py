"""The ``consumers`` command: the live consumers from the registry, and what each runs now.

Theory of operation
-------------------
One read (`_pg._consumers_repo.list_consumers`: the live rows, then the running tasks whose
lease each holds), printed as one JSON document (``{"consumers": [...]}``, times ISO 8601 with
offset) with ``--json``, else as a table with times in UTC and one line per running task under
its consumer.  Consumers write the registry themselves (register at start, a heartbeat every
third of their lease, deregister at a graceful shutdown); a consumer silent for three
heartbeats is dead and not shown.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .._core._consumers import consumer_document
from .._core._views import format_age, format_utc
from .._pg._consumers_repo import list_consumers
from ._args import command
from ._commands import database

if TYPE_CHECKING:
    import argparse

    from .._core._consumers import ConsumerRow
    from .._pg._pool import Pool
    from ._args import Parser

__all__ = ["add_consumer_commands", "consumers_table"]


def _queues(row: ConsumerRow) -> str:
    return ", ".join(
        name if cap is None else f"{name} (cap {cap})" for name, cap in row.queues.items()
    )


def consumers_table(rows: list[ConsumerRow]) -> Group:
    """The consumers as a table (times in UTC), each followed by the tasks it runs now."""
    if not rows:
        return Group(Text("no live consumers", style="dim"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for title in ("Consumer", "Host", "Pid", "Version", "Queues", "Workers", "Started (UTC)"):
        table.add_column(title, no_wrap=title.endswith("(UTC)"))
    table.add_column("Heartbeat", no_wrap=True)
    table.add_column("Running", justify="right")
    for row in rows:
        workers = ", ".join(f"{t} x{n}" for t, n in row.handlers.items())
        table.add_row(
            row.id,
            row.host,
            str(row.pid),
            row.version,
            _queues(row),
            workers,
            format_utc(row.started_at),
            f"{format_age(row.heartbeat_age)} ago",
            str(len(row.running)),
        )
        for task in row.running:
            table.add_row(
                f"  task {task.id}",
                task.type,
                "",
                "",
                task.queue,
                "",
                format_utc(task.started_at),
                "",
                "",
                style="dim",
            )
    return Group(table)


async def _consumers(pool: Pool, args: argparse.Namespace) -> int:
    async with pool.connection() as conn:
        rows = await list_consumers(conn)
    if args.json:
        document: dict[str, Any] = {"consumers": [consumer_document(r) for r in rows]}
        print(json.dumps(document), flush=True)
        return 0
    console = Console(markup=False, emoji=False, highlight=False)
    if not console.is_terminal:  # piped: print every value in full
        console = Console(markup=False, emoji=False, highlight=False, width=1_000_000)
    console.print(consumers_table(rows))
    return 0


def add_consumer_commands(sub: Any, common: Parser) -> None:
    """Register ``consumers``."""
    p = command(
        sub,
        "consumers",
        common,
        "list the live consumers and the tasks each is running",
        "List the live consumers (from the registry each keeps with its heartbeat): id, host, "
        "pid, version, queues, workers per type, start, last heartbeat, and the tasks running "
        "under each one's lease.",
    )
    p.set_defaults(func=database(_consumers))
