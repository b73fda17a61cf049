"""The command line's queue commands: ``queues`` (list, pause, resume) and ``limits`` (list,
set, clear).

Theory of operation
-------------------
Like the task commands (`_commands`), each is an async function (pool, args) -> exit status
that makes one `Client` call through `_commands.database` and prints JSON with ``--json``, else
a table or one line.  ``queues`` and ``limits`` alone list; their actions are subcommands.
Every value is checked in argparse (`_args`), and a limit's combination of options by
`check_limit`, before any connection is made, so bad input exits 2 without touching the
database.  Pausing a paused queue, resuming a running one and clearing a limit that is not
there change nothing and are not errors: the exit status is 0 and the output says so.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from .._api._client import Client
from .._core._queues import LimitParams, check_limit
from .._core._views import describe_limit
from . import _args as argtypes
from . import _render as render
from ._args import CommandError
from ._commands import database, emit, full_output

if TYPE_CHECKING:
    import argparse

    from .._pg._pool import Pool

__all__ = ["add_queue_commands"]


async def _list_queues(pool: Pool, args: argparse.Namespace) -> int:
    queues = await Client(pool).queues()
    emit(args, render.queues_json(queues), render.queues_table(queues, full=full_output()))
    return 0


async def _pause(pool: Pool, args: argparse.Namespace) -> int:
    changed = await Client(pool).pause_queue(args.name)
    human = f"paused queue {args.name}" if changed else f"queue {args.name} was already paused"
    emit(args, {"queue": args.name, "paused": True, "changed": changed}, human)
    return 0


async def _resume(pool: Pool, args: argparse.Namespace) -> int:
    changed = await Client(pool).resume_queue(args.name)
    human = f"resumed queue {args.name}" if changed else f"queue {args.name} was not paused"
    emit(args, {"queue": args.name, "paused": False, "changed": changed}, human)
    return 0


async def _list_limits(pool: Pool, args: argparse.Namespace) -> int:
    limits = await Client(pool).limits()
    emit(args, render.limits_json(limits), render.limits_table(limits, full=full_output()))
    return 0


def _checked_limit(args: argparse.Namespace) -> LimitParams:
    """``limits set``'s options as a limit, or a usage error (exit 2) saying what is wrong."""
    if args.max_running is None and args.rate is None:
        raise CommandError("a limit needs --max-running, --rate, or both", 2)
    if args.rate is None:
        for option, value in (("--per", args.per), ("--burst", args.burst)):
            if value is not None:
                raise CommandError(f"{option} needs --rate", 2)
    return check_limit(
        args.queue,
        args.type,
        max_running=args.max_running,
        rate=args.rate,
        per=1.0 if args.per is None else args.per,
        burst=args.burst,
    )


async def _set_limit(limit: LimitParams, pool: Pool, args: argparse.Namespace) -> int:
    await Client(pool).set_limit(
        queue=args.queue,
        type=args.type,
        max_running=limit.max_running,
        rate=limit.rate,
        per=1.0 if limit.period is None else limit.period,
        burst=limit.burst,
    )
    words = describe_limit(limit.max_running, limit.rate, limit.period, limit.burst)
    data = {
        "scope": limit.scope,
        "name": limit.name,
        "max_running": limit.max_running,
        "rate": limit.rate,
        "per": limit.period,
        "burst": limit.burst,
    }
    emit(args, data, f"limit on {limit.scope} {limit.name}: {words}")
    return 0


def _run_set_limit(args: argparse.Namespace) -> int:
    limit = _checked_limit(args)  # before connecting: bad options are usage errors
    return database(partial(_set_limit, limit))(args)


async def _clear_limit(pool: Pool, args: argparse.Namespace) -> int:
    cleared = await Client(pool).clear_limit(queue=args.queue, type=args.type)
    scope, name = ("queue", args.queue) if args.queue is not None else ("type", args.type)
    human = (
        f"cleared the limit on {scope} {name}"
        if cleared
        else f"{scope} {name} had no limit: nothing to clear"
    )
    emit(args, {"scope": scope, "name": name, "cleared": cleared}, human)
    return 0


def _limit_target(parser: argtypes.Parser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--queue", type=argtypes.queue_name, metavar="NAME", help="the queue to limit"
    )
    target.add_argument(
        "--type", type=argtypes.task_type, metavar="TYPE", help="the task type to limit"
    )


def add_queue_commands(sub: Any, common: argtypes.Parser) -> None:
    """queues [pause|resume NAME], limits [set|clear]: commands that need a DSN."""
    command = argtypes.command
    queues = command(
        sub,
        "queues",
        common,
        "list, pause and resume queues",
        "List the queues (those with tasks, and those ever paused): paused or not, their "
        "tasks per status, and how long their longest-waiting ready task has waited. "
        "Pause or resume one with an action.",
    )
    queues.set_defaults(func=database(_list_queues))
    actions = queues.add_subparsers(dest="action", metavar="ACTION")
    for name, handler, text in (
        ("pause", _pause, "pause a queue: no consumer claims its tasks until it is resumed"),
        ("resume", _resume, "resume a paused queue: idle consumers are woken at once"),
    ):
        p = command(actions, name, common, text)
        p.add_argument("name", type=argtypes.queue_name, metavar="NAME", help="the queue")
        p.set_defaults(func=database(handler))

    limits = command(
        sub,
        "limits",
        common,
        "list, set and clear cluster-wide limits",
        "List the cluster-wide limits on queues and task types, with their tasks running "
        "now. Set or clear one with an action.",
    )
    limits.set_defaults(func=database(_list_limits))
    actions = limits.add_subparsers(dest="action", metavar="ACTION")
    p = command(
        actions,
        "set",
        common,
        "limit a queue or a task type across every consumer",
        "Limit a queue or a task type across every consumer (replacing its limit, if any): "
        "at most N of its tasks running at once, and at most R starts per PERIOD on average "
        "in bursts of up to B. In any window of T seconds at most B + R * T / PERIOD start.",
    )
    _limit_target(p)
    p.add_argument(
        "--max-running",
        type=argtypes.non_negative_int,
        metavar="N",
        help="at most N of its tasks running at once, cluster-wide (0 holds them all back)",
    )
    p.add_argument(
        "--rate", type=argtypes.positive_int, metavar="R", help="at most R task starts per PERIOD"
    )
    p.add_argument(
        "--per",
        type=argtypes.period,
        metavar="PERIOD",
        help="the rate's period: seconds, or with a unit: 1s, 1m, 1h, 1d (default 1s)",
    )
    p.add_argument(
        "--burst",
        type=argtypes.positive_int,
        metavar="B",
        help="up to B starts at once after a quiet spell (default R)",
    )
    p.set_defaults(func=_run_set_limit)
    p = command(actions, "clear", common, "remove the limit on a queue or a task type")
    _limit_target(p)
    p.set_defaults(func=database(_clear_limit))
