"""Periodic tasks against real PostgreSQL: consumers, the ``worker --schedules`` and
``schedules`` commands, and three consumer processes sharing one schedule across a leader's
death.

These run in real time (one-second schedules), but assert on fire times read back from the
tasks' idempotency tokens, never on how long anything took.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from asynqpg_trio import ConfigurationError, Schedule, TaskInfo, open_consumer

from .helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
EVERY_SECOND = Schedule("tick", every=timedelta(seconds=1))
SECOND = timedelta(seconds=1)


def fire_times(conn: psycopg.Connection[Any], task_type: str = "tick") -> list[datetime]:
    """The fire time of every task of ``task_type``, from its token, in order."""
    rows = conn.execute(
        "SELECT idempotency_token FROM asynqpg_tasks WHERE type = %s", (task_type,)
    ).fetchall()
    times = []
    for (text,) in rows:
        info = TaskInfo(0, task_type, b"", text, 1, 0, datetime.now(), None, ())
        fired = Schedule.fire_time(info)
        assert fired is not None, text
        times.append(fired)
    return sorted(times)


def consecutive(times: list[datetime], step: timedelta = SECOND) -> bool:
    return all(b - a == step for a, b in itertools.pairwise(times))


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asynqpg_trio._cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


async def test_a_consumer_runs_its_schedules(dsn: str, sync_conn: Any) -> None:
    handled: list[datetime] = []

    async def tick(task: TaskInfo) -> None:
        fired = Schedule.fire_time(task)
        assert fired is not None
        handled.append(fired)

    async with open_consumer(
        dsn, handlers={"tick": tick}, schedules=[EVERY_SECOND], poll_interval=0.2
    ):
        await wait_until(lambda: len(handled) >= 3, what="three ticks handled")
    assert consecutive(sorted(handled))
    assert consecutive(fire_times(sync_conn))
    (row,) = sync_conn.execute(
        "SELECT name, type, spec, timezone, catch_up, last_fire, next_fire FROM asynqpg_schedules"
    ).fetchall()
    assert row[:5] == ("tick every 1s", "tick", "every 1s", "UTC", "latest")
    assert row[5] == fire_times(sync_conn)[-1]
    assert row[6] >= row[5] + SECOND

    # asynqpg-trio schedules lists it (JSON, then a table).
    proc = cli("schedules", "--json", "--dsn", dsn)
    assert proc.returncode == 0, proc.stderr
    (listed,) = json.loads(proc.stdout)["schedules"]
    assert (listed["name"], listed["spec"], listed["timezone"]) == (
        "tick every 1s",
        "every 1s",
        "UTC",
    )
    assert datetime.fromisoformat(listed["last_fire"]) == row[5]
    proc = cli("schedules", "--dsn", dsn)
    assert proc.returncode == 0, proc.stderr
    header, *_ = [line for line in proc.stdout.splitlines() if line.strip()]
    assert header.split() == [
        "Name",
        "Type",
        "Spec",
        "Zone",
        "Last",
        "fire",
        "(UTC)",
        "Next",
        "fire",
        "(UTC)",
    ]
    assert "tick every 1s" in proc.stdout
    assert row[5].strftime("%Y-%m-%d %H:%M:%S") in proc.stdout


async def test_a_schedule_enqueues_on_its_queue_at_its_priority(dsn: str) -> None:
    seen: list[tuple[str, int]] = []

    async def tick(task: TaskInfo) -> None:
        seen.append((task.queue, task.priority))

    urgent = Schedule("tick", every=SECOND, queue="cron", priority=5)
    async with open_consumer(
        dsn, handlers={"tick": tick}, schedules=[urgent], queues=["cron"], poll_interval=0.2
    ):
        await wait_until(lambda: seen, what="a tick on the cron queue")
    assert seen[0] == ("cron", 5)


def test_no_schedules_yet(dsn: str) -> None:
    proc = cli("schedules", "--dsn", dsn)
    assert (proc.returncode, proc.stdout.strip()) == (
        0,
        "no schedules: none has run in a consumer yet",
    )
    proc = cli("schedules", "--json", "--dsn", dsn)
    assert json.loads(proc.stdout) == {"schedules": []}


async def test_bad_schedules_are_refused_before_anything_starts(dsn: str) -> None:
    async def tick(task: TaskInfo) -> None:
        pass

    with pytest.raises(ConfigurationError, match="two schedules are named 'tick every 1s'"):
        async with open_consumer(
            dsn, handlers={"tick": tick}, schedules=[EVERY_SECOND, EVERY_SECOND]
        ):
            pass


def test_the_worker_command_runs_schedules(dsn: str, sync_conn: Any) -> None:
    env = {**os.environ, "ASYNQPG_DSN": dsn}
    target = ["examples.periodic:handlers", "--schedules", "examples.periodic:schedules"]
    with subprocess.Popen(
        [sys.executable, "-m", "asynqpg_trio._cli", "worker", *target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            line = proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            watchdog.cancel()
    assert proc.returncode == 0, err
    assert line.startswith("heartbeat of "), (line, out, err)
    names = [r[0] for r in sync_conn.execute("SELECT name FROM asynqpg_schedules ORDER BY 1")]
    assert names == ["heartbeat every 2s", "report.daily cron 0 6 * * * Europe/Berlin"]


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ("examples.periodic:handlers", "schedules must be a list of Schedule"),
        ("examples.periodic:nope", "has no attribute 'nope'"),
        ("examples.periodic:main", "is an async function"),
    ],
)
def test_the_worker_command_refuses_bad_schedules(dsn: str, schedules: str, message: str) -> None:
    proc = cli("worker", "examples.periodic:handlers", "--schedules", schedules, "--dsn", dsn)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


# --- three consumer processes, one schedule, the leader killed -------------------------------


class Consumers:
    """Consumer processes (`tests.helpers.scheduler_proc`), each started and checked ready."""

    def __init__(self, dsn: str, ids: list[str]) -> None:
        self.procs = {
            consumer_id: subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.scheduler_proc", dsn, consumer_id],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for consumer_id in ids
        }
        watchdog = threading.Timer(60, self.kill_all)
        watchdog.start()
        try:
            for consumer_id, proc in self.procs.items():
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line == "ready\n", (consumer_id, line, proc.stderr and proc.stderr.read())
        finally:
            watchdog.cancel()

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def stop(self) -> dict[str, tuple[int, str]]:
        """SIGTERM each live one; their exit statuses and stderr."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        ended = {}
        for consumer_id, proc in self.procs.items():
            _, err = proc.communicate(timeout=60)
            ended[consumer_id] = (proc.returncode, err)
        return ended


def leader(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT leader_id FROM asynqpg_leader WHERE expires_at > asynqpg_now()"
    ).fetchone()
    return None if row is None else str(row[0])


def poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_three_processes_one_task_per_second_across_the_leaders_death(
    dsn: str, sync_conn: Any
) -> None:
    consumers = Consumers(dsn, ["sched-a", "sched-b", "sched-c"])
    try:
        time.sleep(7.0)
        first_leader = poll(lambda: leader(sync_conn), 20, "a leader")
        consumers.procs[first_leader].kill()  # SIGKILL: no shutdown, no resignation
        consumers.procs[first_leader].wait(timeout=30)
        (killed_at,) = sync_conn.execute("SELECT asynqpg_now()").fetchone()
        new_leader = poll(
            lambda: (found := leader(sync_conn)) not in (None, first_leader) and found,
            30,
            "another leader",
        )
        time.sleep(6.0)
    finally:
        ended = consumers.stop()
    for consumer_id, (status, err) in ended.items():
        if consumer_id != first_leader:
            assert status == 0, err
    fires = fire_times(sync_conn)
    assert len(fires) == len(set(fires)), "a fire was enqueued twice"
    assert consecutive(fires), f"a fire is missing: {fires}"
    # Fires came before the leader died and went on after, under the new leader.
    assert fires[0] < killed_at - 3 * SECOND
    assert fires[-1] > killed_at + 3 * SECOND
    assert new_leader != first_leader
    (stored,) = sync_conn.execute("SELECT last_fire FROM asynqpg_schedules").fetchone()
    assert stored == fires[-1]
