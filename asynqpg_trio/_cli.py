"""The ``asynqpg-trio`` command line: migrate, enqueue, inspect and manage tasks, stats.

Theory of operation
-------------------
argparse builds a tree of subcommands; every leaf sets ``func`` (Namespace -> exit status).
`run` parses, calls ``func`` and turns every error we expect into ONE line on stderr and an
exit status: 0 ok; 1 not found, wrong state, duplicate, schema missing, database unreachable
or failing; 2 usage (argparse errors, bad ids, statuses or timestamps, `InvalidQuery`,
`InvalidTask`, no DSN).  Anything else is a bug and keeps its traceback.  Ctrl-C ends
``stats --watch`` with status 0, anything else with 130.  The argument converters live in
`_cli_args`, the database commands in `_cli_commands`, the output formats in `_cli_render`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import psycopg

from ._cli_args import CommandError, Parser, common_options
from ._cli_commands import add_admin_commands, one_line
from ._cli_runtime import add_runtime_commands
from ._cli_web import add_web_commands
from ._errors import AsynqpgError, ConfigurationError, InvalidQuery, InvalidTask

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

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
    add_runtime_commands(sub, common)
    add_web_commands(sub, common)
    # Runtime commands (`worker`, `demo`, `dashboard`) are added here, each by a function like
    # add_admin_commands taking (sub, common): leaf parsers take parents=[common] and set
    # func=<callable(Namespace) -> int>.  Commands that need a DSN wrap an async
    # (pool, args) -> int with _cli_commands.database; those that may start an embedded
    # server resolve the DSN themselves (_server.resolve_dsn / embedded_server).
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
        code, message = 1, f"database error: {one_line(ex)}"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main() -> None:
    """The console script: run the command line and exit with its status."""
    sys.exit(run())


if __name__ == "__main__":
    main()
