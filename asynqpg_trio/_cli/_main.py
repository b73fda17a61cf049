"""The ``asynqpg-trio`` command line: migrate, enqueue, inspect and manage tasks and queues.

Theory of operation
-------------------
argparse builds a tree of subcommands; every leaf sets ``func`` (Namespace -> exit status).
`run` parses, calls ``func`` and turns every error we expect into ONE line on stderr and an
exit status: 0 ok; 1 not found, wrong state, duplicate, schema missing, database unreachable or
failing; 2 usage (argparse errors, bad ids, statuses or timestamps, `InvalidQuery`,
`InvalidTask`, no DSN); 3 ``worker`` stopped but left a task to the janitor (a handler that
ignored cancellation past the shutdown bound).  With ``--json`` the same error is also printed
on stdout as one JSON document, ``{"error": MESSAGE, "exit_status": N}``.  The commands that run
a consumer or a server do so inside nurseries, so their errors may arrive in an exception group:
``except*`` sorts each error in it by class, exactly as if it came alone.  Anything else is a
bug and keeps its traceback.  Ctrl-C ends ``stats --watch`` with status 0, anything else with
130.  The argument converters live in `_args`, the database commands in `_commands` (tasks) and
`_queues` (queues and limits), the output formats in `_render`.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import psycopg

from .._core._errors import (
    AsynqpgError,
    ConfigurationError,
    ConnectionFailed,
    InvalidQuery,
    InvalidTask,
)
from ._args import CommandError, Parser, UsageExit, common_options
from ._commands import add_admin_commands, one_line
from ._consumers import add_consumer_commands
from ._queues import add_queue_commands
from ._runtime import add_runtime_commands
from ._schedules import add_schedule_commands
from ._web import add_web_commands

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence

__all__ = ["PROG", "build_parser", "main", "run"]

PROG = "asynqpg-trio"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; each leaf command sets ``func(args) -> exit code``."""
    parser = Parser(
        prog=PROG,
        description="Manage an asynqpg task queue in PostgreSQL.",
        parents=[common_options(top=True)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options(top=False)
    add_admin_commands(sub, common)
    add_schedule_commands(sub, common)
    add_consumer_commands(sub, common)
    add_queue_commands(sub, common)
    add_runtime_commands(sub, common)
    add_web_commands(sub, common)
    # Runtime commands (`worker`, `demo`, `dashboard`) are added here, each by a function like
    # add_admin_commands taking (sub, common): leaf parsers take parents=[common] and set
    # func=<callable(Namespace) -> int>.  Commands that need a DSN wrap an async
    # (pool, args) -> int with _cli_commands.database; those that may start an embedded
    # server resolve the DSN themselves (_server.resolve_dsn / embedded_server).
    return parser


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """The errors in a group matched by ``except*``, for their messages."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


def _report(code: int, message: str, *, as_json: bool) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_status": code}), flush=True)
    return code


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was typed (looked for before parsing, so usage errors honour it)."""
    options = list(argv)
    return "--json" in (options[: options.index("--")] if "--" in options else options)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageExit as ex:  # already printed on stderr
        if _wants_json(argv):
            print(json.dumps({"error": ex.message, "exit_status": 2}), flush=True)
        return 2
    interrupted = False
    failures: list[tuple[int, str]] = []
    try:
        return int(args.func(args))
    except* KeyboardInterrupt:
        interrupted = True
    except* CommandError as group:
        failures += [(e.code, str(e)) for e in _leaves(group) if isinstance(e, CommandError)]
    except* (InvalidQuery, InvalidTask, ConfigurationError) as group:
        failures += [(2, one_line(e)) for e in _leaves(group)]
    except* ConnectionFailed as group:
        failures += [(1, f"cannot connect to the database: {one_line(e)}") for e in _leaves(group)]
    except* AsynqpgError as group:  # not found, wrong state, duplicate, schema
        failures += [(1, one_line(e)) for e in _leaves(group)]
    except* psycopg.Error as group:
        failures += [(1, f"database error: {one_line(e)}") for e in _leaves(group)]
    if interrupted:
        return 0 if getattr(args, "watch", None) is not None else 130
    message = "; ".join(dict.fromkeys(text for _, text in failures))
    return _report(failures[0][0], message, as_json=args.json)


def main() -> None:
    """The console script: run the command line and exit with its status."""
    sys.exit(run())


if __name__ == "__main__":
    main()
