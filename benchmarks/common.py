"""What every benchmark shares: the server, fresh databases, consumer processes, statistics.

Theory of operation
-------------------
A run resolves one PostgreSQL server (``$ASYNQPG_DSN`` or an embedded one) and refuses any
address that is not on this machine.  Each system under test gets a database of its own,
created with a unique name and dropped (``WITH (FORCE)``) afterwards, so no system sees
another's tables, dead tuples or statistics.

Multi-process consumers are started with the ``spawn`` method and follow one protocol
(`ConsumerGroup`): each child sets itself up (imports, connections), reports ``ready`` on a
queue, then waits for the ``go`` event; the clock starts when ``go`` is set, so interpreter
start-up and imports are not measured.  Handlers bump a shared counter; the parent waits for
the counter to reach N and then for the database to show no unfinished task (which includes
each system's completion write), then sets ``stop``.  Every wait has a deadline; a child that
does not exit in time is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import multiprocessing
import os
import queue
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import conninfo, sql

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator, Sequence
    from multiprocessing.context import SpawnProcess
    from multiprocessing.sharedctypes import Synchronized

__all__ = [
    "IDLE_GAP",
    "BenchError",
    "analyze",
    "asyncpg_kwargs",
    "run_asyncio",
    "ConsumerGroup",
    "Signals",
    "check_loopback",
    "fresh_database",
    "percentile",
    "read_rss_kib",
    "resolve_server",
    "server_settings",
    "wait_until",
]

SPAWN = multiprocessing.get_context("spawn")
T = TypeVar("T")
#: Seconds between idle-latency samples, so the consumer is back in its idle wait.
IDLE_GAP = 0.010


class BenchError(RuntimeError):
    """A measurement could not be taken (a child failed, a deadline passed)."""


# --- the server -----------------------------------------------------------------------------


def check_loopback(dsn: str) -> None:
    """Refuse a DSN whose host is not this machine (a Unix socket or a loopback address)."""
    params = conninfo.conninfo_to_dict(dsn)
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    for raw in hosts:
        host = raw.strip()
        if not host or host.startswith("/") or host == "localhost":
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        raise BenchError(f"benchmarks only run against this machine; refusing host {host!r}")


@contextlib.contextmanager
def resolve_server() -> Iterator[str]:
    """Yield a DSN to a maintenance database: ``$ASYNQPG_DSN``, else an embedded server."""
    dsn = os.environ.get("ASYNQPG_DSN")
    if dsn:
        check_loopback(dsn)
        yield dsn
        return
    from asynqpg_trio._pg._server import embedded_server

    with embedded_server() as embedded:
        check_loopback(embedded)
        yield embedded


@contextlib.contextmanager
def fresh_database(server_dsn: str, label: str) -> Iterator[str]:
    """Create a database with a unique name, yield its DSN, drop it on exit."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for a libpq DSN (host, port, user, ...)."""
    params = conninfo.conninfo_to_dict(dsn)
    out: dict[str, Any] = {}
    for ours, theirs in (("host", "host"), ("user", "user"), ("password", "password")):
        if params.get(ours):
            out[theirs] = params[ours]
    if params.get("dbname"):
        out["database"] = params["dbname"]
    if params.get("port"):
        out["port"] = int(str(params["port"]))
    return out


def run_asyncio(main: Coroutine[Any, Any, T], *, use_uvloop: bool) -> T:
    """Run ``main`` on a fresh asyncio loop, uvloop's if asked and installed."""
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def analyze(dsn: str) -> None:
    """ANALYZE the whole database (what autovacuum would soon do after a bulk enqueue)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"ANALYZE")


def vacuum(dsn: str) -> None:
    """VACUUM ANALYZE the whole database: the state autovacuum leaves within a minute of a
    burn-down (the dead rows and index entries it left gone), before idle latency is taken."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"VACUUM ANALYZE")


def server_settings(dsn: str) -> dict[str, str]:
    """The server settings that move the figures."""
    names = (
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_level",
        "shared_buffers",
        "max_connections",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        out: dict[str, str] = {}
        for name in names:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            out[name] = str(row[0]) if row else "?"
        return out


# --- statistics and probes ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc/<pid>/status; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float) -> bool:
    """Poll ``predicate`` every ``interval`` seconds; True once it holds, False at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- consumer processes ---------------------------------------------------------------------


@dataclass
class Signals:
    """What a consumer child and the parent share (picklable under ``spawn``)."""

    status: Any = field(default_factory=SPAWN.Queue)
    go: Any = field(default_factory=SPAWN.Event)
    stop: Any = field(default_factory=SPAWN.Event)
    counter: Synchronized[int] = field(default_factory=lambda: SPAWN.Value("q", 0))

    def ready(self) -> None:
        """Child: set-up done; now wait for ``go``."""
        self.status.put(("ready", os.getpid(), ""))

    def failed(self) -> None:
        """Child: report the exception being handled."""
        self.status.put(("error", os.getpid(), traceback.format_exc()))

    def bump(self, by: int = 1) -> None:
        """Child: count handled tasks."""
        with self.counter.get_lock():
            self.counter.value += by


class ConsumerGroup:
    """Start one child per entry of ``args``, running ``target(signals, *args[i])``.

    ``target`` must be a module-level function.  Use as a context manager: leaving it sets
    ``stop`` and reaps the children (terminating any that overstay).
    """

    def __init__(self, target: Callable[..., None], args: Sequence[tuple[Any, ...]]) -> None:
        self.signals = Signals()
        self._procs: list[SpawnProcess] = [
            SPAWN.Process(target=target, args=(self.signals, *a), daemon=True) for a in args
        ]

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [p.pid for p in self._procs if p.pid is not None]

    def __enter__(self) -> ConsumerGroup:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.signals.stop.set()
        self.signals.go.set()  # release children still waiting, so they see stop
        deadline = time.monotonic() + 15.0
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every child reported ready; raise on a child's error or the timeout."""
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < len(self._procs):
            try:
                kind, pid, text = self.signals.status.get(
                    timeout=max(0.01, deadline - time.monotonic())
                )
            except queue.Empty:
                raise BenchError(f"consumers not ready within {timeout:.0f}s") from None
            if kind == "error":
                raise BenchError(f"consumer process {pid} failed:\n{text}")
            ready += 1

    def check_errors(self) -> None:
        """Raise if a child reported an error."""
        with contextlib.suppress(queue.Empty):
            kind, pid, text = self.signals.status.get_nowait()
            if kind == "error":
                raise BenchError(f"consumer process {pid} failed:\n{text}")

    def run_to_empty(self, n: int, remaining: Callable[[], int], timeout: float) -> float:
        """Set ``go``; return seconds until N handled and ``remaining()`` is 0.

        Raises:
            BenchError: a child failed, or the deadline passed.
        """
        self.wait_ready()
        started = time.perf_counter()
        self.signals.go.set()
        deadline = time.monotonic() + timeout

        def handled_all() -> bool:
            self.check_errors()
            return self.signals.counter.value >= n or time.monotonic() >= deadline

        wait_until(handled_all, timeout=timeout + 1, interval=0.005)
        if not wait_until(
            lambda: remaining() == 0,
            timeout=max(0.0, deadline - time.monotonic()),
            interval=0.01,
        ):
            raise BenchError(
                f"burn-down not done within {timeout:.0f}s: "
                f"{self.signals.counter.value}/{n} handled, {remaining()} unfinished"
            )
        return time.perf_counter() - started


def counting_remaining(dsn: str, query: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """A ``remaining()`` probe running ``query`` (one count) on its own connection, and close."""
    conn = psycopg.connect(dsn, autocommit=True)

    def remaining() -> int:
        row = conn.execute(query.encode()).fetchone()
        return int(row[0]) if row else 0

    return remaining, conn.close
