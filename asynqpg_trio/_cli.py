"""The ``asynqpg-trio`` command line: migrate, enqueue, inspect and manage tasks, stats.

Theory of operation
-------------------
argparse builds a tree of subcommands; every leaf sets ``func`` (Namespace -> exit code).
`main` parses, runs ``func`` and turns every error we expect into ONE line on stderr and an
exit code: 0 ok; 1 not found, wrong state, database unreachable or failing; 2 usage (argparse
errors, bad ids, statuses or timestamps, `InvalidQuery`, `InvalidTask`, no DSN).  Bad input
is refused by the argument parser before any connection is made.  Anything else is a bug and
keeps its traceback.

Database commands resolve the DSN (``--dsn``, else ``$ASYNQPG_DSN``; required), then
``trio.run`` one async function with a one-connection pool.  That pool connects once, with
``--connect-timeout`` and no retries, so a server that does not answer is reported in seconds;
every command but ``migrate`` then checks the schema, so an unmigrated database gets a hint
instead of an SQL error.  ``stats --watch`` refreshes until Ctrl-C, which exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from . import _cli_render as render
from ._client import Client
from ._errors import AsynqpgError, ConfigurationError, InvalidQuery, InvalidTask
from ._listing import DEFAULT_LIMIT, ORDER_FIELDS
from ._migrate import LATEST_VERSION, check_schema, migrate
from ._pool import Pool, open_pool
from ._producer import Producer
from ._row import TaskStatus
from ._server import DSN_ENV, resolve_dsn
from ._task import Task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    Handler = Callable[[Pool, argparse.Namespace], Awaitable[int]]

__all__ = ["build_parser", "main", "run"]

PROG = "asynqpg-trio"
_MAX_ID = 2**63 - 1
_STATUSES = ", ".join(s.value for s in TaskStatus)


class CommandError(Exception):
    """A command failed in a way the user can act on: print ``message``, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- argument converters: bad input is a usage error (exit 2) before any connection ---------


def _task_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_ID:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r}: expected a positive integer")
    return int(text)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _statuses(text: str) -> list[str]:
    for status in _split(text):
        if status not in {s.value for s in TaskStatus}:
            raise argparse.ArgumentTypeError(
                f"unknown status {status!r}: valid statuses are {_STATUSES}"
            )
    return _split(text)


def _ids(text: str) -> list[int]:
    return [_task_id(part) for part in _split(text)]


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid timestamp {text!r}: expected ISO 8601, e.g. 2024-05-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"timestamp {text!r} has no UTC offset: add one, e.g. 2024-05-01T12:00:00Z"
        )
    return moment


def _non_negative_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number of seconds: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds: {text!r}")
    return value


# -- output --------------------------------------------------------------------------------


def _console() -> Console:
    return Console(markup=False, emoji=False, highlight=False)


def _emit(args: argparse.Namespace, data: Any, human: Any) -> None:
    if args.json:
        print(json.dumps(data), flush=True)
    else:
        _console().print(human)


# -- commands ------------------------------------------------------------------------------


async def _migrate(pool: Pool, args: argparse.Namespace) -> int:
    applied = await migrate(pool)
    if applied:
        human = f"applied schema versions {', '.join(map(str, applied))}"
    else:
        human = f"schema is up to date (version {LATEST_VERSION})"
    _emit(args, {"applied": applied, "version": LATEST_VERSION}, human)
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
    )
    task_id = await Producer(pool).enqueue(task)
    _emit(args, {"id": task_id}, f"enqueued task {task_id} ({args.type})")
    return 0


async def _list(pool: Pool, args: argparse.Namespace) -> int:
    page = await Client(pool).list_tasks(
        statuses=args.status,
        types=args.type,
        ids=args.id,
        created_after=args.created_after,
        created_before=args.created_before,
        order_by=args.order_by,
        descending=args.desc,
        limit=args.limit,
        offset=args.offset,
        after=args.after,
    )
    _emit(args, render.page_json(page), render.page_table(page, args.offset))
    return 0


async def _show(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).get_task(args.id)
    _emit(args, render.task_json(task), render.task_table(task))
    return 0


async def _cancel(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).cancel_task(args.id)
    _emit(args, render.task_json(task), render.task_line("cancelled", task))
    return 0


async def _retry(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).retry_task(args.id)
    _emit(args, render.task_json(task), render.task_line("re-queued", task))
    return 0


async def _delete(pool: Pool, args: argparse.Namespace) -> int:
    task = await Client(pool).delete_task(args.id)
    line = f"deleted task {task.id} ({task.type}); it was {task.status.value}"
    _emit(args, render.task_json(task), line)
    return 0


async def _retry_failed(pool: Pool, args: argparse.Namespace) -> int:
    n = await Client(pool).retry_failed(args.type)
    _emit(args, {"affected": n}, f"re-queued {n} failed tasks")
    return 0


async def _delete_failed(pool: Pool, args: argparse.Namespace) -> int:
    n = await Client(pool).delete_failed(args.type)
    _emit(args, {"affected": n}, f"deleted {n} failed tasks")
    return 0


async def _stats(pool: Pool, args: argparse.Namespace) -> int:
    client = Client(pool)
    if args.watch is None:
        stats = await client.stats()
        _emit(args, render.stats_json(stats), render.stats_table(stats))
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


# -- running a database command ------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


async def _session(handler: Handler, args: argparse.Namespace, dsn: str, check: bool) -> int:
    try:
        options = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as ex:
        raise CommandError(f"invalid DSN: {_one_line(ex)}", 2) from None
    extra: dict[str, Any] = {}
    if "connect_timeout" not in options:
        extra["connect_timeout"] = max(2, round(args.connect_timeout))
    async with open_pool(dsn, min_size=0, max_size=1, reconnect_timeout=0, **extra) as pool:
        try:
            async with pool.connection() as conn:
                if check:
                    await check_schema(conn)
        except psycopg.OperationalError as ex:
            raise CommandError(f"cannot connect to the database: {_one_line(ex)}") from None
        return await handler(pool, args)


def _database(handler: Handler, *, check: bool = True) -> Callable[[argparse.Namespace], int]:
    """Wrap an async command that needs the database into a ``func`` for `run`."""

    def func(args: argparse.Namespace) -> int:
        dsn = resolve_dsn(args.dsn)
        if dsn is None:
            raise CommandError(f"no database given: pass --dsn or set {DSN_ENV}", 2)
        return trio.run(_session, handler, args, dsn, check)

    return func


# -- the parser ----------------------------------------------------------------------------


def _common(*, top: bool) -> _Parser:
    """Options every command accepts, before or after its name."""
    suppress = argparse.SUPPRESS
    common = _Parser(add_help=False)
    common.add_argument(
        "--dsn",
        default=None if top else suppress,
        help=f"PostgreSQL connection string or URL (default: ${DSN_ENV})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=False if top else suppress,
        help="print JSON (one document per line) instead of tables",
    )
    common.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        default=5.0 if top else suppress,
        metavar="SECONDS",
        help="give up connecting after this long (default: 5; the DSN's own wins)",
    )
    return common


def _add_admin_commands(sub: Any, common: _Parser) -> None:
    """migrate, enqueue, tasks ..., stats: commands that need a DSN."""
    p = sub.add_parser("migrate", parents=[common], help="create or upgrade the schema")
    p.set_defaults(func=_database(_migrate, check=False))

    p = sub.add_parser("enqueue", parents=[common], help="add one task")
    p.add_argument("type", help="the task type")
    p.add_argument("payload", help="the payload as text (UTF-8), or - to read bytes from stdin")
    p.add_argument("--delay", type=_seconds, default=0.0, metavar="SECONDS")
    p.add_argument("--max-retry", type=_non_negative_int, default=None, metavar="N")
    p.add_argument("--token", default=None, help="idempotency token")
    p.set_defaults(func=_database(_enqueue))

    tasks = sub.add_parser("tasks", parents=[common], help="list, show and manage tasks")
    tsub = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tsub.add_parser("list", parents=[common], help="list tasks (filters combine)")
    p.add_argument("--status", type=_statuses, action="extend", help=f"any of: {_STATUSES}")
    p.add_argument("--type", type=_split, action="extend", help="task types (comma-separated)")
    p.add_argument("--id", type=_ids, action="extend", help="task ids (comma-separated)")
    p.add_argument("--created-after", type=_timestamp, metavar="TIME", help="ISO 8601, inclusive")
    p.add_argument("--created-before", type=_timestamp, metavar="TIME", help="inclusive")
    p.add_argument("--order-by", choices=ORDER_FIELDS, default="id")
    p.add_argument("--desc", action="store_true", help="sort high to low")
    p.add_argument("--limit", type=_non_negative_int, default=DEFAULT_LIMIT, help="1 to 10000")
    p.add_argument("--offset", type=_non_negative_int, default=0)
    p.add_argument("--after", metavar="CURSOR", help="the next page's cursor from a list")
    p.set_defaults(func=_database(_list))
    for name, handler, text in (
        ("show", _show, "show every field of a task"),
        ("cancel", _cancel, "cancel a pending, running or failed task"),
        ("retry", _retry, "re-queue a failed or cancelled task"),
        ("delete", _delete, "delete a task that is not running"),
    ):
        p = tsub.add_parser(name, parents=[common], help=text)
        p.add_argument("id", type=_task_id, help="the task id")
        p.set_defaults(func=_database(handler))
    for name, handler, text in (
        ("retry-failed", _retry_failed, "re-queue every failed task"),
        ("delete-failed", _delete_failed, "delete every failed task"),
    ):
        p = tsub.add_parser(name, parents=[common], help=text)
        p.add_argument("--type", default=None, help="only tasks of this type")
        p.set_defaults(func=_database(handler))

    p = sub.add_parser("stats", parents=[common], help="counts by status and type")
    p.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_positive_seconds,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    p.set_defaults(func=_database(_stats))


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; each leaf command sets ``func(args) -> exit code``."""
    parser = _Parser(
        prog=PROG,
        description="Manage an asynqpg task queue in PostgreSQL.",
        parents=[_common(top=True)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(top=False)
    _add_admin_commands(sub, common)
    # Runtime commands (`worker`, `demo`, `dashboard`) are added here, each by a function
    # like _add_admin_commands taking (sub, common): leaf parsers take parents=[common] and
    # set func=<callable(Namespace) -> int>; the ones that may start an embedded server
    # resolve the DSN themselves (_server.resolve_dsn / embedded_server) instead of _database.
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 0 if getattr(args, "watch", None) is not None else 130
    except CommandError as ex:
        code, message = ex.code, str(ex)
    except (InvalidQuery, InvalidTask, ConfigurationError) as ex:
        code, message = 2, str(ex)
    except AsynqpgError as ex:  # not found, wrong state, duplicate, schema
        code, message = 1, str(ex)
    except psycopg.Error as ex:
        code, message = 1, f"database error: {_one_line(ex)}"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main() -> None:
    """The console script: run the command line and exit with its status."""
    sys.exit(run())


if __name__ == "__main__":
    main()
