"""The fault scenarios' workload: task kinds, the handler that plays them, and its run log.

Every task carries its script in a JSON payload (``spec``): what the handler does on each
attempt (sleep, fail the first n attempts, hang, block the event loop, ...) and what the books
must find at the end (``expect``: final status, ``attempts``: total attempts allowed).  Task
types name the kind, so the consumer's per-type capacity and timeouts apply per kind.

The handler records every execution that reaches its end in the table ``runs`` of the same
database, *before* it returns or raises, so a run recorded as ``ok`` is a handler that ran to
completion.  The insert is shielded from cancellation and retried across connection loss, and
idempotent on a per-execution nonce, so a recorded run is never lost nor counted twice even
while the server restarts; whether the queue then writes the outcome is what the books check.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import psycopg

from asynqpg_trio import Handler, Pool, SkipRetry, Task, TaskInfo

#: The run log.  ``outcome``: ok (the handler is about to return) or error (about to raise).
RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    nonce    uuid PRIMARY KEY,
    task_id  bigint NOT NULL,
    attempt  int NOT NULL,
    outcome  text NOT NULL CHECK (outcome IN ('ok', 'error')),
    pid      int NOT NULL,
    consumer text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

_RECORD = """
INSERT INTO runs (nonce, task_id, attempt, outcome, pid, consumer)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (nonce) DO NOTHING
"""

#: Failing "always".
ALWAYS = 1_000_000


@dataclass(frozen=True, slots=True)
class Spec:
    """What a task's handler does, and what the books expect of it.

    Attributes:
        expect: the final status (completed or failed).
        attempts: total attempts allowed (the task's max_retry).
        sleep: seconds the handler sleeps (cancellably) on every attempt.
        fail: attempts 1..fail raise ``error``; ``ALWAYS`` for every attempt.
        error: what to raise: runtime, group, skip, huge, nul, surrogate, badstr.
        hang: the handler sleeps forever (until its timeout cancels it), every attempt.
        stubborn: seconds the handler ignores cancellation (shielded sleep), every attempt.
        block: seconds the handler blocks the event loop (time.sleep), on attempt 1 only.
        swallow: seconds the handler sleeps, every attempt; cancelled (by its timeout), it
            swallows the cancellation, records a failed run (its work did not finish) and
            returns as if it had.
        shielded: seconds the handler ignores cancellation (a shielded sleep), on attempt 1
            only: longer than the shutdown grace, it outlives its worker's stop.
    """

    expect: str = "completed"
    attempts: int = 10
    sleep: float = 0.0
    fail: int = 0
    error: str = "runtime"
    hang: bool = False
    stubborn: float = 0.0
    block: float = 0.0
    swallow: float = 0.0
    shielded: float = 0.0

    def payload(self) -> bytes:
        """The JSON payload, without defaulted fields."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        defaults = Spec()
        kept = {k: v for k, v in fields.items() if v != getattr(defaults, k)}
        kept["expect"], kept["attempts"] = self.expect, self.attempts
        return json.dumps(kept, separators=(",", ":")).encode()

    @staticmethod
    def parse(payload: bytes) -> Spec:
        """Read a payload written by `payload`."""
        return Spec(**json.loads(payload))


def task(kind: str, spec: Spec) -> Task:
    """A task of type ``kind`` that plays ``spec``."""
    return Task(kind, spec.payload(), max_retry=spec.attempts)


@dataclass(frozen=True, slots=True)
class Mix:
    """How many tasks of each standard kind a workload holds.

    fast: returns at once.  slow: sleeps 0.1-0.6 s.  flaky: fails its first one or two
    attempts, then completes.  doomed: fails every attempt (2 allowed).
    """

    fast: int = 0
    slow: int = 0
    flaky: int = 0
    doomed: int = 0
    slow_range: tuple[float, float] = (0.1, 0.6)

    @property
    def total(self) -> int:
        """Tasks in all."""
        return self.fast + self.slow + self.flaky + self.doomed


#: Task types of the standard kinds.
KINDS = ("fast", "slow", "flaky", "doomed")


def standard_tasks(mix: Mix, *, seed: int = 0) -> list[Task]:
    """The tasks of ``mix``, interleaved in a fixed pseudo-random order."""
    rng = random.Random(seed)
    lo, hi = mix.slow_range
    tasks = [task("fast", Spec()) for _ in range(mix.fast)]
    tasks += [task("slow", Spec(sleep=round(rng.uniform(lo, hi), 3))) for _ in range(mix.slow)]
    tasks += [task("flaky", Spec(fail=rng.choice((1, 2)))) for _ in range(mix.flaky)]
    tasks += [
        task("doomed", Spec(expect="failed", attempts=2, fail=ALWAYS)) for _ in range(mix.doomed)
    ]
    rng.shuffle(tasks)
    return tasks


class BadStr(Exception):
    """An exception that cannot be printed."""

    def __str__(self) -> str:
        raise RuntimeError("this exception refuses to be printed")


def make_error(kind: str, attempt: int) -> Exception:
    """The exception a failing attempt raises."""
    if kind == "skip":
        return SkipRetry(f"planned permanent failure on attempt {attempt}")
    if kind == "group":
        return ExceptionGroup(
            f"planned group on attempt {attempt}", [ValueError("one"), KeyError("two")]
        )
    if kind == "huge":
        return RuntimeError("huge " + "x" * 1_000_000)
    if kind == "nul":
        return RuntimeError(f"a NUL \x00 byte on attempt {attempt}")
    if kind == "surrogate":
        return RuntimeError(f"a lone surrogate \ud800 on attempt {attempt}")
    if kind == "badstr":
        return BadStr()
    return RuntimeError(f"planned failure on attempt {attempt}")


@dataclass(eq=False)
class Recorder:
    """Writes the run log through a pool (shielded, retried, idempotent)."""

    pool: Pool
    consumer: str
    pid: int = field(default_factory=os.getpid)
    retry_for: float = 60.0

    async def record(self, task_id: int, attempt: int, outcome: str) -> None:
        """Record one execution; survives connection loss for ``retry_for`` seconds.

        Cancellation: shielded; returns only once the row is written.
        """
        nonce = uuid.uuid4()
        args = (nonce, task_id, attempt, outcome, self.pid, self.consumer)
        with anyio.CancelScope(shield=True), anyio.fail_after(self.retry_for):
            delay = 0.02
            while True:
                try:
                    async with self.pool.connection() as conn:
                        await conn.execute(_RECORD, args)
                    return
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.5)


def make_handlers(
    recorder: Recorder,
    *,
    workers: Mapping[str, int] | None = None,
    timeouts: Mapping[str, float] | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Handler]:
    """One `Handler` per kind, all playing the task's `Spec` and recording its runs."""

    async def play(info: TaskInfo) -> None:
        spec = Spec.parse(info.payload)
        attempt = info.attempts_elapsed + 1
        if spec.block and attempt == 1:
            time.sleep(spec.block)  # blocking the event loop is the fault
        if spec.shielded and attempt == 1:
            with anyio.CancelScope(shield=True):  # ignoring cancellation is the fault
                await anyio.sleep(spec.shielded)
        if spec.swallow:
            try:
                await anyio.sleep(spec.swallow)
            except BaseException:  # swallowing the cancellation is the fault
                await recorder.record(info.id, attempt, "error")
                return
        if spec.sleep:
            await anyio.sleep(spec.sleep)
        if spec.stubborn:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(spec.stubborn)
            await anyio.lowlevel.checkpoint()
        if spec.hang:
            await anyio.sleep_forever()
        failing = attempt <= spec.fail
        await recorder.record(info.id, attempt, "error" if failing else "ok")
        if failing:
            raise make_error(spec.error, attempt)

    workers = workers or {}
    timeouts = timeouts or {}
    return {
        kind: Handler(play, workers=workers.get(kind, 10), timeout=timeouts.get(kind, 30.0))
        for kind in kinds
    }


def settled_counts(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(tasks not yet final, tasks in all)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), count(*)"
        " FROM asynqpg_tasks"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_settled(conn: psycopg.Connection[Any], timeout: float) -> None:
    """Block until no task is pending or running (AssertionError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        open_, total = settled_counts(conn)
        if open_ == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{open_} of {total} tasks still pending or running")
        time.sleep(0.1)


async def wait_settled_async(dsn: str, timeout: float) -> None:
    """`wait_settled` for async tests; reconnects when the server drops the connection."""
    from asynqpg_trio import connect

    with anyio.fail_after(timeout):
        while True:
            try:
                conn = await connect(dsn)
                try:
                    while True:
                        cur = await conn.execute(
                            "SELECT count(*) FROM asynqpg_tasks"
                            " WHERE status IN ('pending', 'running')"
                        )
                        row = await cur.fetchone()
                        if row is not None and row[0] == 0:
                            return
                        await anyio.sleep(0.1)
                finally:
                    await conn.close()
            except psycopg.OperationalError:
                await anyio.sleep(0.1)


def count(conn: psycopg.Connection[Any], query: str, *args: Any) -> int:
    """The first column of a one-row query, as an int."""
    row = conn.execute(query, args or None).fetchone()
    assert row is not None
    return int(row[0])


def deadlocks(records: list[logging.LogRecord]) -> list[str]:
    """Log messages that report a deadlock (the consumer's locking must never produce one)."""
    return [r.getMessage() for r in records if "deadlock detected" in r.getMessage()]
