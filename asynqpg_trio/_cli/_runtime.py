"""The runtime commands: ``worker MODULE:ATTR`` and ``demo``.

``worker`` imports ATTR from MODULE: a mapping of task type -> `Handler` (or function),
or a function taking no arguments that returns either such a mapping or a dict of
`open_consumer` keyword arguments (with ``handlers``).  ``--schedules MODULE:ATTR`` names a
list of `Schedule` (or a function returning one) for the consumer to run (``schedules`` in
such a dict does the same; giving both is an error).  ``--queue NAME[=CAP]`` (repeatable)
chooses the queues it serves, replacing any ``queues`` the target's options name; without it
the target's choice stands (default: the queue ``default``).  Anything else (a handler
function, an unknown `open_consumer` option) is a usage error, exit status 2.  Before the
consumer starts, one connection checks the database and its schema within
``--connect-timeout`` (a refused connect is retried in that time, for a worker started with
its database), so the usual failures are one line like every other command's.  The first
SIGINT/SIGTERM starts the graceful shutdown; a second one stops at once (leases left behind
expire and their tasks are rescued).

``demo`` runs on ``--dsn``/``ASYNQPG_DSN`` when given, else on a throwaway embedded server
(see `_demo` for what it leaves behind).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.text import Text

from .._consumer._open import open_consumer
from .._core._schedule import check_schedules
from .._core._task import DEFAULT_QUEUE
from .._pg._pool import open_pool
from .._pg._server import DSN_ENV, embedded_server, resolve_dsn
from . import _args as argtypes
from ._args import CommandError, command, pool_options
from ._commands import checked_pool, one_line
from ._thread import LEFT_TO_JANITOR, run_in_thread, stop_signals

if TYPE_CHECKING:
    import argparse

__all__ = ["add_runtime_commands"]

_EXPECTED = (
    "a mapping of task type to handler, or a function that takes no arguments and returns one"
)


def _resolve(spec: str) -> Any:
    """The object MODULE:ATTR names (imported from the working directory too)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CommandError(f"expected MODULE:ATTR, got {spec!r}", 2)
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as ex:
        raise CommandError(f"cannot import {module_name!r}: {ex}", 2) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise CommandError(f"{module_name!r} has no attribute {attr!r}", 2)
        target = getattr(target, part)
    return target


def _load_target(spec: str) -> dict[str, Any]:
    target = _resolve(spec)
    if callable(target) and not isinstance(target, Mapping):
        target = _call_factory(spec, target)
    if not isinstance(target, Mapping):
        raise CommandError(f"{spec} is a {type(target).__name__}: expected {_EXPECTED}", 2)
    options = dict(target)
    if "handlers" not in options:
        return {"handlers": options}
    unknown = sorted(set(options) - set(inspect.signature(open_consumer).parameters))
    if unknown:
        raise CommandError(f"{spec} returned unknown open_consumer options: {unknown}", 2)
    return options


def _load_schedules(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the schedules ``--schedules MODULE:ATTR`` names."""
    if "schedules" in options:
        raise CommandError("schedules given twice: by --schedules and by the target's options", 2)
    found = _resolve(spec)
    expected = "a list of Schedule, or a function that takes no arguments and returns one"
    if inspect.iscoroutinefunction(found):
        raise CommandError(f"{spec} is an async function: expected {expected}", 2)
    if callable(found):
        found = _call_factory(spec, found, expected)
    return {**options, "schedules": list(check_schedules(found))}  # checked before connecting


def _call_factory(spec: str, factory: Any, expected: str = _EXPECTED) -> Any:
    if inspect.iscoroutinefunction(factory):
        raise CommandError(
            f"{spec} is an async function (a handler?): expected {expected}, "
            f"like {{'task.type': {spec.partition(':')[2]}}}",
            2,
        )
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise CommandError(f"{spec} needs arguments: expected {expected}", 2) from None
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    return factory()


async def _worker(dsn: str, options: dict[str, Any], pooler: dict[str, Any]) -> int:
    # The signal watcher lives outside the consumer's block, so that it still hears the
    # second signal while the graceful shutdown (the block's exit) runs.
    async with (
        stop_signals() as signals,
        trio.open_nursery() as nursery,
        open_pool(dsn, min_size=0, max_size=6, **pooler) as pool,
    ):
        async with open_consumer(pool, **options) as consumer:
            served = ", ".join(options.get("queues") or [DEFAULT_QUEUE])
            print(
                f"worker {consumer.consumer_id} running (queues: {served}); Ctrl-C to stop",
                file=sys.stderr,
            )

            async def watch() -> None:
                count = 0
                async for _ in signals:
                    count += 1
                    if count == 1:
                        print("stopping gracefully (again to stop now)", file=sys.stderr)
                        consumer.stop()
                    else:
                        consumer.stop_now()

            nursery.start_soon(watch)
            await consumer.wait_stopped()
        nursery.cancel_scope.cancel()
    stats = consumer.statistics()  # after the shutdown, so it counts what the shutdown did
    print(
        f"worker stopped: completed {stats.completed}, failed {stats.failed}, "
        f"retried {stats.retried}, released {stats.released}, abandoned {stats.abandoned}",
        file=sys.stderr,
    )
    if stats.abandoned:  # the stop was cut short: see _shutdown
        tasks = f"{stats.abandoned} task{'s' if stats.abandoned != 1 else ''}"
        print(f"{tasks} left to the janitor: rescued once their leases expire", file=sys.stderr)
        return LEFT_TO_JANITOR
    return 0


def _run_worker(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise CommandError(f"no database given: pass --dsn or set {DSN_ENV}", 2)
    options = _load_target(args.target)
    if args.schedules is not None:
        options = _load_schedules(args.schedules, options)
    if args.queues:
        options["queues"] = _served_queues(args.queues)
    return run_in_thread(_checked_worker, dsn, options, args)  # ends at the shutdown's bound


def _served_queues(specs: list[tuple[str, int | None]]) -> dict[str, int | None]:
    """``--queue`` options as ``open_consumer``'s ``queues``: name -> cap (None: no cap)."""
    queues: dict[str, int | None] = {}
    for name, cap in specs:
        if name in queues:
            raise CommandError(f"--queue {name!r} is given twice", 2)
        queues[name] = cap
    return queues


async def _checked_worker(dsn: str, options: dict[str, Any], args: argparse.Namespace) -> int:
    async with checked_pool(dsn, args, retry=True):
        pass
    return await _worker(dsn, options, pool_options(args))


def _describe(dsn: str) -> str:
    """Where a DSN points, without its password: ``database NAME at HOST:PORT``."""
    try:
        options = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as ex:
        raise CommandError(f"invalid DSN: {one_line(ex)}", 2) from None
    host = options.get("host") or options.get("hostaddr") or "localhost"
    port = options.get("port") or "5432"
    return f"database {options.get('dbname') or options.get('user') or '?'} at {host}:{port}"


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import print_summary, run_demo, summary_json

    if args.tasks < 1:
        raise CommandError("--tasks must be at least 1", 2)
    # With --json, stdout carries only the summary document; the progress goes to stderr.
    console = Console(stderr=args.json, soft_wrap=True)
    dsn = resolve_dsn(args.dsn)
    if dsn is not None:
        where = _describe(dsn)
        source = "--dsn" if args.dsn else f"${DSN_ENV}"
        left = "are left there (--keep)" if args.keep else "are deleted at the end"
        console.print(
            Text(
                f"demo on your {where} (from {source}): the schema is migrated if needed "
                f"(and stays); the demo's tasks {left}"
            )
        )
        summary = trio.run(
            partial(run_demo, dsn, args.tasks, console, database=where, keep=args.keep)
        )
    else:
        console.print("no DSN given: starting a throwaway embedded PostgreSQL for the demo")
        with embedded_server() as embedded:
            summary = trio.run(
                partial(
                    run_demo,
                    embedded,
                    args.tasks,
                    console,
                    database="the embedded PostgreSQL",
                    keep=True,
                )
            )
    if args.json:
        print(summary_json(summary), flush=True)
    else:
        print_summary(summary, console, embedded=dsn is None)
    return 0 if summary.ok else 1


def add_runtime_commands(sub: Any, common: Any) -> None:
    """Register ``worker`` and ``demo``."""
    p = command(sub, "worker", common, "run a consumer defined in your code")
    p.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a mapping of task type to handler, or a function returning one (or a dict of "
        "open_consumer options with 'handlers'), e.g. examples.worker_app:handlers",
    )
    p.add_argument(
        "--schedules",
        metavar="MODULE:ATTR",
        default=None,
        help="periodic tasks to run: a list of asynqpg_trio.Schedule, or a function "
        "returning one, e.g. examples.periodic:schedules",
    )
    p.add_argument(
        "--queue",
        dest="queues",
        type=argtypes.queue_spec,
        action="append",
        metavar="NAME[=CAP]",
        help="serve this queue, holding at most CAP of its tasks at once if CAP is given; "
        "repeat for more queues; replaces the queues ATTR's options name (default: those, "
        f"else {DEFAULT_QUEUE})",
    )
    p.set_defaults(func=_run_worker)
    p = command(
        sub,
        "demo",
        common,
        "run a demo workload with live progress",
        "Run a demo workload with live progress: on --dsn/$ASYNQPG_DSN if given (schema "
        "migrated if needed; its tasks deleted at the end unless --keep), else on a throwaway "
        "embedded PostgreSQL.",
    )
    p.add_argument("--tasks", type=int, default=2000, help="how many tasks (default 2000)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="with a DSN: leave the demo's tasks in the database (default: delete them)",
    )
    p.set_defaults(func=_run_demo)
