"""The command line's database commands: migrate, enqueue, tasks ..., stats.

Theory of operation
-------------------
Each command is an async function (pool, args) -> exit status that makes one library call and
prints its result: JSON (one document per line) with ``--json``, else a rich table or line.
`database` wraps a command for the parser: it resolves the DSN (``--dsn``, else
``$ASYNQPG_DSN``; none is a usage error), then ``trio.run``s the command with a
one-connection pool (`checked_pool`).  That pool connects once, with no retries, and
``--connect-timeout`` bounds the connect and the schema check together (libpq's own
``connect_timeout`` is whole seconds, at least 2, and applies to each address a host name
resolves to), so a server that does not answer is reported in that time; every command but
``migrate`` then checks the schema, so an unmigrated database gets a hint instead of an SQL
error.  Errors propagate to `_cli.run`, which prints them.  ``stats --watch`` loops until
Ctrl-C.  Printed to a terminal, tables fit its width; piped or redirected, every value is
printed in full (``--json`` is still the format meant for scripts).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from .._api._client import Client
from .._api._producer import Producer
from .._core._listing import DEFAULT_LIMIT, MAX_LIMIT, ORDER_FIELDS
from .._core._task import DEFAULT_QUEUE, MAX_PRIORITY, MIN_PRIORITY, Task
from .._core._unique import DEFAULT_UNIQUE_STATES, Unique
from .._pg._migrate import LATEST_VERSION, check_schema, migrate
from .._pg._pool import Pool, open_pool
from .._pg._server import DSN_ENV, resolve_dsn
from . import _args as argtypes
from . import _render as render
from ._args import CommandError, pool_options

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Handler = Callable[[Pool, argparse.Namespace], Awaitable[int]]

__all__ = ["add_admin_commands", "checked_pool", "database", "emit", "full_output", "one_line"]

#: The line width when stdout is not a terminal: wide enough that nothing is cut.
_UNBOUNDED = 1_000_000


def _console() -> Console:
    console = Console(markup=False, emoji=False, highlight=False)
    if console.is_terminal:
        return console
    return Console(markup=False, emoji=False, highlight=False, width=_UNBOUNDED)


def full_output() -> bool:
    """Whether to print values in full: stdout is not a terminal (a pipe or a file)."""
    return not _console().is_terminal


def emit(args: argparse.Namespace, data: Any, human: Any) -> None:
    """Print a result: ``data`` as one JSON document with ``--json``, else ``human``."""
    if args.json:
        print(json.dumps(data), flush=True)
    else:
        _console().print(human)


async def _migrate(pool: Pool, args: argparse.Namespace) -> int:
    applied = await migrate(pool)
    if applied:
        noun = "version" if len(applied) == 1 else "versions"
        human = f"applied schema {noun} {', '.join(map(str, applied))}"
    else:
        human = f"schema is up to date (version {LATEST_VERSION})"
    emit(args, {"applied": applied, "version": LATEST_VERSION}, human)
    return 0


async def _enqueue(pool: Pool, args: argparse.Namespace) -> int:
    text: str = args.payload
    payload = sys.stdin.buffer.read() if text == "-" else text.encode()
    task = Task(
        args.type,
        payload,
        idempotency_token=args.token,
        delay=args.delay,
        max_retry=args.max_retry,
        queue=args.queue,
        priority=args.priority,
        unique=_unique(args),
    )
    task_id = await Producer(pool).enqueue(task)
    emit(args, {"id": task_id}, f"enqueued task {task_id} ({args.type})")
    return 0


def _unique(args: argparse.Namespace) -> Unique | None:
    """The `Unique` the enqueue options ask for, or None."""
    asked = (args.unique_key, args.unique_period, args.unique_state)
    if not args.unique and all(a is None for a in asked):
        return None
    states = DEFAULT_UNIQUE_STATES if args.unique_state is None else args.unique_state
    return Unique(args.unique_key, period=args.unique_period, states=states)


async def _list(pool: Pool, args: argparse.Namespace) -> int:
    page = await Client(pool).list_tasks(
        statuses=args.status,
        types=args.type,
        queues=args.queue,
        ids=args.id,
        created_after=args.created_after,
        created_before=args.created_before,
        order_by=args.order_by,
        descending=args.desc,
        limit=args.limit,
        offset=args.offset,
        after=args.after,
    )
    emit(args, render.page_json(page), render.page_table(page, args.offset, full=full_output()))
    return 0


async def _show(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).get_task(args.id)
    emit(args, render.task_json(task), render.task_table(task))
    return 0


async def _cancel(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).cancel_task(args.id)
    emit(args, render.task_json(task), render.task_line("cancelled", task))
    return 0


async def _retry(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).retry_task(args.id)
    emit(args, render.task_json(task), render.task_line("re-queued", task))
    return 0


async def _delete(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).delete_task(args.id)
    line = f"deleted task {task.id} ({task.type}); it was {task.status.value}"
    emit(args, render.task_json(task), line)
    return 0


async def _retry_failed(pool: Pool, args: argparse.Namespace) -> int:
    n = await Client(pool).retry_failed(args.type)
    emit(args, {"affected": n}, f"re-queued {render.plural(n, 'failed task')}")
    return 0


async def _delete_failed(pool: Pool, args: argparse.Namespace) -> int:
    n = await Client(pool).delete_failed(args.type)
    emit(args, {"affected": n}, f"deleted {render.plural(n, 'failed task')}")
    return 0


async def _stats(pool: Pool, args: argparse.Namespace) -> int:
    client = Client(pool)
    if args.watch is None:
        stats = await client.stats()
        emit(args, render.stats_json(stats), render.stats_table(stats, full=full_output()))
        return 0
    if args.json:  # JSON Lines: one document per refresh
        while True:
            print(json.dumps(render.stats_json(await client.stats())), flush=True)
            await trio.sleep(args.watch)
    with Live(console=_console(), auto_refresh=False) as live:
        while True:
            stats = await client.stats()
            header = Text(
                f"asynqpg stats at {datetime.now():%H:%M:%S}, every {args.watch:g} s "
                "(Ctrl-C to stop)",
                style="dim",
            )
            live.update(Group(header, render.stats_table(stats)), refresh=True)
            await trio.sleep(args.watch)


def one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _connect_bound(dsn: str, args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    """How long connecting may take in all, and the connection options to pass for it."""
    try:
        options = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as ex:
        raise CommandError(f"invalid DSN: {one_line(ex)}", 2) from None
    own = options.get("connect_timeout")
    if own is None:
        # libpq's fallback for connections the pool opens later: whole seconds, at least 2.
        return args.connect_timeout, {"connect_timeout": max(2, math.ceil(args.connect_timeout))}
    try:
        seconds = float(own)
    except ValueError:
        raise CommandError(f"invalid DSN: connect_timeout {own!r} is not a number", 2) from None
    return (seconds if seconds > 0 else math.inf), {}


@asynccontextmanager
async def checked_pool(
    dsn: str, args: argparse.Namespace, *, check: bool = True, retry: bool = False
) -> AsyncIterator[Pool]:
    """A one-connection pool, its first connection (and the schema, if ``check``) checked.

    Connecting and checking together take at most ``--connect-timeout`` (or the DSN's
    ``connect_timeout``); a failed connect is retried within that time only if ``retry``.

    Raises:
        CommandError: the DSN cannot be parsed (status 2), or the database cannot be reached
            in time (status 1).
        SchemaMissing, SchemaTooNew: ``check`` found the wrong schema.
    """
    bound, extra = _connect_bound(dsn, args)
    reconnect = min(bound, 3600.0) if retry else 0.0
    pooler = pool_options(args)
    async with open_pool(
        dsn, min_size=0, max_size=1, reconnect_timeout=reconnect, **extra, **pooler
    ) as pool:
        with trio.move_on_after(bound) as scope:
            try:
                async with pool.connection() as conn:
                    if check:
                        await check_schema(conn)
            except psycopg.OperationalError as ex:
                raise CommandError(f"cannot connect to the database: {one_line(ex)}") from None
        if scope.cancelled_caught:
            raise CommandError(
                f"cannot connect to the database: no answer within {bound:g} s (--connect-timeout)"
            )
        yield pool


async def _session(handler: Handler, args: argparse.Namespace, dsn: str, check: bool) -> int:
    async with checked_pool(dsn, args, check=check) as pool:
        return await handler(pool, args)


def database(handler: Handler, *, check: bool = True) -> Callable[[argparse.Namespace], int]:
    """Wrap an async command that needs the database into a ``func`` for `run`."""

    def func(args: argparse.Namespace) -> int:
        dsn = resolve_dsn(args.dsn)
        if dsn is None:
            raise CommandError(f"no database given: pass --dsn or set {DSN_ENV}", 2)
        return trio.run(_session, handler, args, dsn, check)

    return func


def add_admin_commands(sub: Any, common: argtypes.Parser) -> None:
    """migrate, enqueue, tasks ..., stats: commands that need a DSN."""
    command = argtypes.command
    p = command(sub, "migrate", common, "create or upgrade the schema")
    p.set_defaults(func=database(_migrate, check=False))

    p = command(sub, "enqueue", common, "add one task")
    p.add_argument("type", help="the task type")
    p.add_argument("payload", help="the payload as text (UTF-8), or - to read bytes from stdin")
    p.add_argument(
        "--delay",
        type=argtypes.seconds,
        default=0.0,
        metavar="SECONDS",
        help="make it ready this many seconds from now (default 0: at once)",
    )
    p.add_argument(
        "--max-retry",
        type=argtypes.non_negative_int,
        default=None,
        metavar="N",
        help="how many times it may run in all (default 3; 0 runs it once, like 1)",
    )
    p.add_argument("--token", default=None, help="idempotency token")
    p.add_argument(
        "--queue",
        type=argtypes.queue_name,
        default=DEFAULT_QUEUE,
        metavar="NAME",
        help=f"the queue to put it on (default {DEFAULT_QUEUE})",
    )
    p.add_argument(
        "--priority",
        type=argtypes.priority,
        default=0,
        metavar="P",
        help=f"from {MIN_PRIORITY} (least urgent) to {MAX_PRIORITY} (most urgent); default 0",
    )
    p.add_argument(
        "--unique",
        action="store_true",
        help="make it unique by the payload: no other task of its type with the same payload"
        " while pending or running (see --unique-key, --unique-period, --unique-state)",
    )
    p.add_argument(
        "--unique-key",
        default=None,
        metavar="KEY",
        help="make it unique by this key instead of the payload (implies --unique)",
    )
    p.add_argument(
        "--unique-period",
        type=argtypes.seconds,
        default=None,
        metavar="SECONDS",
        help="unique only within this period of the database clock (implies --unique)",
    )
    p.add_argument(
        "--unique-state",
        action="append",
        default=None,
        metavar="STATUS",
        help="a status in which it holds its key (repeat; default pending and running;"
        " implies --unique)",
    )
    p.set_defaults(func=database(_enqueue))

    tasks = command(sub, "tasks", common, "list, show and manage tasks")
    tsub = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = command(
        tsub,
        "list",
        common,
        "list tasks, newest first (filters combine)",
        "List tasks, newest first (highest id first, the dashboard's order); "
        "filters combine. --asc lists oldest first.",
    )
    p.add_argument(
        "--status", type=argtypes.statuses, action="extend", help=f"any of: {argtypes.STATUS_NAMES}"
    )
    p.add_argument(
        "--type", type=argtypes.split, action="extend", help="task types (comma-separated)"
    )
    p.add_argument(
        "--queue", type=argtypes.queue_names, action="extend", help="queues (comma-separated)"
    )
    p.add_argument("--id", type=argtypes.ids, action="extend", help="task ids (comma-separated)")
    p.add_argument(
        "--created-after", type=argtypes.timestamp, metavar="TIME", help="ISO 8601, inclusive"
    )
    p.add_argument("--created-before", type=argtypes.timestamp, metavar="TIME", help="inclusive")
    p.add_argument("--order-by", choices=ORDER_FIELDS, default="id", help="sort field (default id)")
    order = p.add_mutually_exclusive_group()
    order.add_argument(
        "--desc", dest="desc", action="store_true", help="high to low, newest first (the default)"
    )
    order.add_argument("--asc", dest="desc", action="store_false", help="low to high, oldest first")
    p.set_defaults(desc=True)
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N tasks, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    p.add_argument(
        "--offset",
        type=argtypes.non_negative_int,
        default=0,
        metavar="N",
        help="skip the first N matching tasks (default 0)",
    )
    p.add_argument("--after", metavar="CURSOR", help="the next page's cursor from a list")
    p.set_defaults(func=database(_list))
    for name, handler, text in (
        ("show", _show, "show every field of a task"),
        ("cancel", _cancel, "cancel a pending, running or failed task"),
        ("retry", _retry, "re-queue a failed or cancelled task"),
        ("delete", _delete, "delete a task that is not running"),
    ):
        p = command(tsub, name, common, text)
        p.add_argument("id", type=argtypes.task_id, help="the task id")
        p.set_defaults(func=database(handler))
    for name, handler, text in (
        ("retry-failed", _retry_failed, "re-queue every failed task"),
        ("delete-failed", _delete_failed, "delete every failed task"),
    ):
        p = command(tsub, name, common, text)
        p.add_argument("--type", default=None, help="only tasks of this type")
        p.set_defaults(func=database(handler))

    p = command(sub, "stats", common, "counts by status and type")
    p.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=argtypes.positive_seconds,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    p.set_defaults(func=database(_stats))
