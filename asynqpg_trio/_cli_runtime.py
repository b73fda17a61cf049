"""The runtime commands: ``worker MODULE:ATTR`` and ``demo``.

``worker`` imports ATTR from MODULE: a mapping of task type -> `Handler` (or async function),
or a callable returning either such a mapping or a dict of `open_consumer` keyword arguments
(with ``handlers``).  The first SIGINT/SIGTERM starts the graceful shutdown; a second one
stops at once (leases left behind expire and their tasks are rescued).  A stop that left
tasks to the janitor exits with status `LEFT_TO_JANITOR` (3) and says how many.

The worker's Trio loop runs in a daemon thread while the main thread takes the signals and
hands them to it: a handler that ignores cancellation is abandoned by the consumer at its
shutdown bound but still holds ``trio.run`` (Trio waits for the detached pipeline), and a
handler that blocks holds the loop itself; either way the main thread ends the process once
the worker has reported its stop (or `STOP_NOW_GRACE` after the second signal), leaving that
thread behind.

``demo`` runs on ``--dsn``/``ASYNQPG_DSN`` when given, else on a throwaway embedded server.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
from rich.console import Console

from ._cli_args import CommandError
from ._consumer import open_consumer
from ._server import DSN_ENV, embedded_server, resolve_dsn

if TYPE_CHECKING:
    import argparse
    from types import FrameType

__all__ = ["LEFT_TO_JANITOR", "add_runtime_commands"]

#: The ``worker`` exit status when its stop left tasks to the janitor: their rows stay
#: running until the leases expire, then they are rescued.
LEFT_TO_JANITOR = 3
#: Seconds the main thread waits after the second signal for the worker to report its stop
#: before it ends the process anyway (a handler may be blocking the event loop).
STOP_NOW_GRACE = 2.0
#: Seconds the main thread waits for the loop's thread once the worker reported (it ends at
#: once unless an abandoned handler still holds ``trio.run``).
JOIN_GRACE = 0.5


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


class _Bridge:
    """Between the main thread (signals, the exit) and the worker's Trio loop (its thread).

    ``reports`` wakes the main thread: ("signal", n), ("done", status) or ("error", exc).
    Signals go to the loop through ``token.run_sync_soon``, which a signal handler may call;
    those that come before the loop is ready wait in ``pending``.
    """

    def __init__(self) -> None:
        self.reports: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.pending: list[int] = []
        self.count = 0
        self.token: trio.lowlevel.TrioToken | None = None
        self.send: trio.MemorySendChannel[int] | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The main thread's SIGINT/SIGTERM handler."""
        self.count += 1
        self.reports.put(("signal", self.count))  # SimpleQueue.put is reentrant
        self.pending.append(signum)
        token = self.token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._drain)

    def attach(self, send: trio.MemorySendChannel[int]) -> None:
        """Called in the loop: from now on signals reach ``send``."""
        self.send = send
        self.token = trio.lowlevel.current_trio_token()
        self._drain()

    def _drain(self) -> None:
        gone = (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError)
        while self.pending and self.send is not None:
            with contextlib.suppress(*gone):
                self.send.send_nowait(self.pending.pop(0))


async def _worker(dsn: str, options: dict[str, Any], bridge: _Bridge) -> int:
    try:
        status = await _serve(dsn, options, bridge)
    except BaseException as exc:
        bridge.reports.put(("error", exc))
        raise
    bridge.reports.put(("done", status))
    return status


async def _serve(dsn: str, options: dict[str, Any], bridge: _Bridge) -> int:
    send, signals = trio.open_memory_channel[int](8)
    bridge.attach(send)
    # The signal watcher lives outside the consumer's block, so that it still hears the
    # second signal while the graceful shutdown (the block's exit) runs.
    async with send, signals, trio.open_nursery() as nursery:
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
    if stats.abandoned:
        print(
            f"{stats.abandoned} task{'s' if stats.abandoned != 1 else ''} left to the janitor:"
            " rescued once their leases expire",
            file=sys.stderr,
        )
        return LEFT_TO_JANITOR
    return 0


def _run_in_thread(dsn: str, options: dict[str, Any]) -> int:
    """Run the worker's loop in a daemon thread; take the signals here; return its status."""
    bridge = _Bridge()
    stopped = (signal.SIGINT, signal.SIGTERM)

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, stopped)  # signals go to the main thread
        try:
            status = trio.run(_worker, dsn, options, bridge)
        except BaseException as exc:
            bridge.reports.put(("error", exc))
        else:
            bridge.reports.put(("done", status))

    previous = {sig: signal.signal(sig, bridge.on_signal) for sig in stopped}
    thread = threading.Thread(target=run, name="asynqpg-trio worker", daemon=True)
    try:
        thread.start()
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = bridge.reports.get(timeout=timeout)
            except queue.Empty:
                print(
                    f"the worker did not stop within {STOP_NOW_GRACE:g} s of the second signal"
                    " (a handler blocking its event loop?): exiting; its tasks are left to the"
                    " janitor",
                    file=sys.stderr,
                )
                return LEFT_TO_JANITOR
            if kind == "signal":
                if value >= 2 and deadline is None:
                    deadline = time.monotonic() + STOP_NOW_GRACE
                continue
            if kind == "error":
                raise value
            thread.join(JOIN_GRACE)  # at once, unless an abandoned handler holds the loop
            return int(value)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_worker(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise CommandError(f"no database given: pass --dsn or set {DSN_ENV}", 2)
    options = _load_target(args.target)
    return _run_in_thread(dsn, options)


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
