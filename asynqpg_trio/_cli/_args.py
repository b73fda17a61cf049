"""The command line's argument parser pieces: one-line usage errors and value converters.

Theory of operation
-------------------
Every value a command takes is converted here, inside argparse, so bad input (a non-numeric
id, an unknown status, a timestamp without an offset) is a usage error, exit status 2, before
any connection is made.  `Parser` prints each usage error as one line.  `common_options` are
the options every command accepts before or after its name: the top-level parser gives them
defaults, and subcommands use ``SUPPRESS`` so they only override what was actually typed.
`command` adds a subcommand whose one-line help is also the description its ``--help``
shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import Any, NoReturn

from .._core._listing import MAX_LIMIT, MAX_TASK_ID, STATUS_NAMES
from .._core._row import TaskStatus
from .._core._task import MAX_PRIORITY, MAX_QUEUE_LENGTH, MAX_TYPE_LENGTH, MIN_PRIORITY
from .._core._views import split_csv
from .._pg._server import DSN_ENV

#: The environment variable that names the direct DSN (``--direct-dsn``).
DIRECT_DSN_ENV = "ASYNQPG_DIRECT_DSN"

__all__ = [
    "STATUS_NAMES",
    "CommandError",
    "Parser",
    "UsageExit",
    "command",
    "common_options",
    "ids",
    "limit",
    "non_negative_int",
    "period",
    "positive_int",
    "positive_seconds",
    "priority",
    "queue_name",
    "queue_names",
    "queue_spec",
    "seconds",
    "split",
    "statuses",
    "task_id",
    "task_type",
    "timestamp",
]

#: The units a period may carry (``--per 1m``), in seconds.
_PERIOD_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class CommandError(Exception):
    """A command failed in a way the user can act on: print ``message``, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageExit(SystemExit):
    """`Parser` found a usage error and printed it: exit status 2; ``message`` says what."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2).

    The error is raised as `UsageExit`, a `SystemExit`, so a caller that wants to report it
    again (as JSON) can catch it, and one that does not still exits with status 2.
    """

    def error(self, message: str) -> NoReturn:
        self._print_message(f"{self.prog}: error: {message} (see --help)\n", sys.stderr)
        raise UsageExit(f"{message} (see --help)")


def command(
    sub: Any, name: str, common: Parser, text: str, description: str | None = None
) -> Parser:
    """Add subcommand ``name``: ``text`` is its line in the parent's help and, unless
    ``description`` is given, the first line of its own ``--help``."""
    parser: Parser = sub.add_parser(
        name,
        parents=[common],
        help=text,
        description=description or text[0].upper() + text[1:] + ".",
    )
    return parser


def task_id(text: str) -> int:
    """A task id: a positive integer that fits a bigint."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TASK_ID:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r}: expected a positive integer")
    return int(text)


def split(text: str) -> list[str]:
    """A comma-separated list, items trimmed, empty items dropped."""
    return split_csv(text)


def statuses(text: str) -> list[str]:
    """A comma-separated list of task statuses."""
    for status in split(text):
        if status not in {s.value for s in TaskStatus}:
            raise argparse.ArgumentTypeError(
                f"unknown status {status!r}: valid statuses are {STATUS_NAMES}"
            )
    return split(text)


def ids(text: str) -> list[int]:
    """A comma-separated list of task ids."""
    return [task_id(part) for part in split(text)]


def timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (``Z`` allowed)."""
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


def non_negative_int(text: str) -> int:
    """A whole number, 0 or more."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def priority(text: str) -> int:
    """A task priority: a whole number from `MIN_PRIORITY` to `MAX_PRIORITY`."""
    try:
        value = int(text)
    except ValueError:
        value = MAX_PRIORITY + 1
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(
            f"expected a priority from {MIN_PRIORITY} (least urgent) to {MAX_PRIORITY}"
            f" (most urgent), got {text!r}"
        )
    return value


def queue_name(text: str) -> str:
    """A queue name: 1 to `MAX_QUEUE_LENGTH` characters."""
    if not 0 < len(text) <= MAX_QUEUE_LENGTH:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise argparse.ArgumentTypeError(
            f"invalid queue name {shown!r}: queue names are 1 to {MAX_QUEUE_LENGTH} characters long"
        )
    return text


def queue_names(text: str) -> list[str]:
    """A comma-separated list of queue names."""
    return [queue_name(part) for part in split(text)]


def task_type(text: str) -> str:
    """A task type: 1 to `MAX_TYPE_LENGTH` characters."""
    if not 0 < len(text) <= MAX_TYPE_LENGTH:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise argparse.ArgumentTypeError(
            f"invalid task type {shown!r}: task types are 1 to {MAX_TYPE_LENGTH} characters long"
        )
    return text


def queue_spec(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME=CAP``: a queue a worker serves, and the most of its tasks it holds
    at once (a positive integer; none: no cap of its own)."""
    name, sep, cap = text.rpartition("=")
    if not sep:
        return queue_name(text), None
    if not (cap.isascii() and cap.isdigit()) or int(cap) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid queue {text!r}: expected NAME or NAME=CAP, CAP a positive integer"
        )
    return queue_name(name), int(cap)


def period(text: str) -> float:
    """A rate's period in seconds: a positive number, optionally with a unit s, m, h or d
    (``2.5``, ``30s``, ``1m``, ``1h``, ``1d``)."""
    number, unit = text, 1.0
    if text[-1:] in _PERIOD_UNITS:
        number, unit = text[:-1], _PERIOD_UNITS[text[-1]]
    try:
        value = float(number) * unit
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"invalid period {text!r}: expected seconds or a number with a unit s, m, h or d"
            " (1s, 1m, 1h)"
        )
    return value


def limit(text: str) -> int:
    """A page size: a whole number from 1 to `MAX_LIMIT`."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """A finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number of seconds: {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A finite, positive number of seconds."""
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds: {text!r}")
    return value


def common_options(*, top: bool) -> Parser:
    """Options every command accepts, before or after its name."""
    suppress = argparse.SUPPRESS
    common = Parser(add_help=False)
    common.add_argument(
        "--dsn",
        default=None if top else suppress,
        help=f"PostgreSQL connection string or URL (default: ${DSN_ENV})",
    )
    common.add_argument(
        "--direct-dsn",
        default=None if top else suppress,
        metavar="DSN",
        help="with --transaction-pooling: a DSN straight to PostgreSQL for LISTEN and "
        f"migrate's lock (default: ${DIRECT_DSN_ENV}; none: consumers poll)",
    )
    common.add_argument(
        "--transaction-pooling",
        action="store_true",
        default=False if top else suppress,
        help="--dsn goes through a transaction-mode pooler such as PgBouncer "
        "(see docs/how-to/deployment.md)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=False if top else suppress,
        help="print JSON (one document per line) instead of tables",
    )
    common.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=5.0 if top else suppress,
        metavar="SECONDS",
        help="give up connecting after this long (default: 5; the DSN's own wins)",
    )
    return common


def pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """`open_pool`'s pooler settings from ``--transaction-pooling`` and ``--direct-dsn`` (or
    ``$ASYNQPG_DIRECT_DSN``, read only with ``--transaction-pooling``).

    Raises:
        CommandError: ``--direct-dsn`` is given without ``--transaction-pooling`` (status 2).
    """
    pooling = bool(getattr(args, "transaction_pooling", False))
    given = getattr(args, "direct_dsn", None)
    if given and not pooling:
        raise CommandError(
            "--direct-dsn is only used with --transaction-pooling: add it when --dsn goes "
            "through PgBouncer, or drop --direct-dsn",
            2,
        )
    direct = (given or os.environ.get(DIRECT_DSN_ENV) or None) if pooling else None
    return {"transaction_pooling": pooling, "direct_dsn": direct}
