"""The runtime commands: ``worker MODULE:ATTR`` and ``demo``.

``worker`` imports ATTR from MODULE: a mapping of task type -> `Handler` (or async function),
or a callable returning either such a mapping or a dict of `open_consumer` keyword arguments
(with ``handlers``).  The first SIGINT/SIGTERM starts the graceful shutdown; a second one
stops at once (leases left behind expire and their tasks are rescued).

``demo`` runs on ``--dsn``/``ASYNQPG_DSN`` when given, else on a throwaway embedded server.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
from rich.console import Console

from ._cli_args import CommandError
from ._cli_thread import LEFT_TO_JANITOR, run_in_thread, stop_signals
from ._consumer import open_consumer
from ._server import DSN_ENV, embedded_server, resolve_dsn

if TYPE_CHECKING:
    import argparse

__all__ = ["add_runtime_commands"]


def _load_target(spec: str) -> dict[str, Any]:
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
    if callable(target) and not isinstance(target, Mapping):
        target = target()
    if not isinstance(target, Mapping):
        raise CommandError(f"{spec} must be a mapping of task type to handler", 2)
    options = dict(target)
    return options if "handlers" in options else {"handlers": options}


async def _worker(dsn: str, options: dict[str, Any]) -> int:
    # The signal watcher lives outside the consumer's block, so that it still hears the
    # second signal while the graceful shutdown (the block's exit) runs.
    async with stop_signals() as signals, trio.open_nursery() as nursery:
        async with open_consumer(dsn, **options) as consumer:
            print(f"worker {consumer.consumer_id} running; Ctrl-C to stop", file=sys.stderr)

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
    return run_in_thread(_worker, dsn, options)  # the process ends at the shutdown's bound


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.tasks < 1:
        raise CommandError("--tasks must be at least 1", 2)
    console = Console(stderr=False)
    dsn = resolve_dsn(args.dsn)
    if dsn is not None:
        return trio.run(run_demo, dsn, args.tasks, console)
    console.print("no DSN given: starting an embedded PostgreSQL for the demo")
    with embedded_server() as embedded:
        return trio.run(run_demo, embedded, args.tasks, console)


def add_runtime_commands(sub: Any, common: Any) -> None:
    """Register ``worker`` and ``demo``."""
    p = sub.add_parser("worker", parents=[common], help="run a consumer defined in your code")
    p.add_argument("target", metavar="MODULE:ATTR", help="handlers mapping (or factory)")
    p.set_defaults(func=_run_worker)
    p = sub.add_parser("demo", parents=[common], help="run a demo workload with live progress")
    p.add_argument("--tasks", type=int, default=2000, help="how many tasks (default 2000)")
    p.set_defaults(func=_run_demo)
