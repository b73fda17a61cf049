"""Leader election, the janitor and the cleaner, against real PostgreSQL.

Task rows are inserted with plain SQL; times are set relative to the database clock.  The
election scenarios use short TTLs (2 s) and poll the instances' counters (a few ms apart)
with a deadline, so they wait no longer than the behaviour under test takes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
from anyio.abc import SocketAttribute
from psycopg import conninfo

import asynqpg_trio
from asynqpg_trio import ConfigurationError, connect, open_pool
from asynqpg_trio._core._rescue import ExpiredLease, plan_rescue
from asynqpg_trio._maintenance._config import MaintenanceConfig, MaintenanceStats
from asynqpg_trio._maintenance._elector import validate_client_id
from asynqpg_trio._maintenance._janitor import clean_finalized, rescue_expired
from asynqpg_trio._maintenance._run import run_maintenance
from asynqpg_trio._pg._maintenance_repo import QUERIES, PgMaintenance

from .helpers.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import ByteStream, TaskGroup, TaskStatus

    from asynqpg_trio import Connection, Pool

SyncConn = psycopg.Connection[tuple[Any, ...]]

FAST = MaintenanceConfig(ttl=2, renew_interval=0.5, janitor_interval=60, cleaner_interval=60)
# Renewals so rare that only a NOTIFY can explain a prompt reaction.
SLOW = MaintenanceConfig(ttl=30, renew_interval=10, janitor_interval=60, cleaner_interval=60)


class FixedPolicy:
    """Always the same delay; records the attempt numbers it was asked about."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.asked: list[int] = []

    def next_retry(self, attempt: int) -> float:
        self.asked.append(attempt)
        return self.delay


def insert_task(
    conn: SyncConn,
    *,
    status: str = "running",
    blocked_in: float = -10.0,
    attempts_left: int = 1,
    attempts_elapsed: int = 1,
    lease_token: int | None = None,
    lease_owner: str | None = None,
    finalized_ago: float | None = None,
) -> int:
    """Insert a task row; ``blocked_in`` and ``finalized_ago`` are seconds from now."""
    cur = conn.execute(
        """INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
               attempts_elapsed, lease_token, lease_owner, finalized_at, messages)
           VALUES ('t', '\\x00', %s, now() + make_interval(secs => %s), %s, %s, %s, %s,
               now() - make_interval(secs => %s::float8), '{earlier}')
           RETURNING id""",
        (
            status,
            blocked_in,
            attempts_left,
            attempts_elapsed,
            lease_token,
            lease_owner,
            finalized_ago,
        ),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def task(conn: SyncConn, task_id: int) -> dict[str, Any]:
    cur = conn.execute(
        """SELECT status, attempts_left, attempts_elapsed, lease_token, lease_owner, messages,
                  finalized_at IS NOT NULL AS finalized,
                  extract(epoch FROM blocked_till - now())::float8 AS blocked_in
           FROM asynqpg_tasks WHERE id = %s""",
        (task_id,),
    )
    row = cur.fetchone()
    assert row is not None, f"task {task_id} is gone"
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def raw(conn: SyncConn, task_id: int) -> tuple[Any, ...] | None:
    """The whole row, to check that nothing about it changed."""
    return conn.execute("SELECT * FROM asynqpg_tasks WHERE id = %s", (task_id,)).fetchone()


def make_leader(conn: SyncConn, me: str, *, expires_in: float = 3600.0) -> None:
    conn.execute(
        """INSERT INTO asynqpg_leader (name, leader_id, elected_at, expires_at)
           VALUES ('default', %s, now(), now() + make_interval(secs => %s))""",
        (me, expires_in),
    )


def leader_id(conn: SyncConn) -> str | None:
    row = conn.execute("SELECT leader_id FROM asynqpg_leader WHERE name = 'default'").fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[Connection[Any]]:
    """An async connection for writes that may wait for a lock an instance holds: a blocking
    call there would stall the event loop the instance needs to release the lock."""
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


def leading(stats: MaintenanceStats) -> bool:
    """Read the flag through a call, so the type checker does not pin it after an assert."""
    return stats.is_leader


@asynccontextmanager
async def instance(
    tg: TaskGroup,
    dsn: str,
    client_id: str,
    config: MaintenanceConfig,
    **connect_kwargs: Any,
) -> AsyncIterator[tuple[MaintenanceStats, anyio.CancelScope]]:
    """Run one run_maintenance on its own pool; yield its counters and a scope to stop it."""
    stats = MaintenanceStats()
    scope = anyio.CancelScope()
    connect_kwargs.setdefault("application_name", client_id)
    async with open_pool(dsn, min_size=0, max_size=4, **connect_kwargs) as pool:
        done = anyio.Event()

        async def runner(*, task_status: TaskStatus[None]) -> None:
            try:
                with scope:
                    await run_maintenance(
                        PgMaintenance(pool),
                        client_id=client_id,
                        config=config,
                        stats=stats,
                        task_status=task_status,
                    )
            finally:
                done.set()

        await tg.start(runner)
        try:
            yield stats, scope
        finally:
            scope.cancel()
            await done.wait()


# --- configuration ------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = MaintenanceConfig()
    assert (c.group, c.ttl, c.renew_interval) == ("default", 15.0, 5.0)
    assert (c.janitor_interval, c.janitor_batch) == (5.0, 1000)
    assert (c.cleaner_interval, c.cleaner_batch) == (30.0, 1000)
    assert (c.completed_retention, c.failed_retention, c.cancelled_retention) == (
        86400.0,
        7 * 86400.0,
        86400.0,
    )


def test_config_accepts_timedelta_and_stores_seconds() -> None:
    c = MaintenanceConfig(ttl=timedelta(seconds=20), failed_retention=timedelta(days=1))
    assert c.ttl == 20.0
    assert isinstance(c.ttl, float)
    assert c.failed_retention == 86400.0
    assert MaintenanceConfig(completed_retention=0).completed_retention == 0.0
    assert dataclasses.replace(c, ttl=4.0, renew_interval=1).ttl == 4.0  # revalidated
    with pytest.raises(ConfigurationError):
        dataclasses.replace(c, ttl=4.0)  # renew_interval 5 s is now too long


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"renew_interval": 7.5}, "less than half the ttl"),
        ({"ttl": 0}, "ttl must be a finite, positive duration"),
        ({"ttl": float("inf")}, "ttl must be a finite, positive duration"),
        ({"janitor_interval": -1}, "janitor_interval"),
        ({"janitor_batch": 0}, "janitor_batch"),
        ({"cleaner_batch": True}, "cleaner_batch"),
        ({"failed_retention": -1}, "failed_retention must be a finite, non-negative duration"),
        ({"group": ""}, "group"),
        ({"resign_grace": "5"}, "resign_grace must be seconds or a timedelta"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MaintenanceConfig(**kwargs)


def test_client_id_validation() -> None:
    assert validate_client_id("x" * 127) == "x" * 127
    with pytest.raises(ConfigurationError, match="non-empty"):
        validate_client_id("")
    with pytest.raises(ConfigurationError, match="at most 127 characters"):
        validate_client_id("x" * 128)


async def test_run_maintenance_rejects_bad_client_id(pool: Pool) -> None:
    with pytest.raises(ConfigurationError, match="at most 127"):
        await run_maintenance(PgMaintenance(pool), client_id="x" * 128, config=FAST)
    assert pool.statistics().checkouts == 0


# --- rescue -------------------------------------------------------------------------------


def test_plan_rescue_is_pure_and_uses_the_failed_attempt_number() -> None:
    policy = FixedPolicy(30.0)
    rows = [
        ExpiredLease(1, 11, "c1", attempts_left=2, attempts_elapsed=3),
        ExpiredLease(2, None, None, attempts_left=0, attempts_elapsed=5),
        ExpiredLease(3, 13, "c3", attempts_left=1, attempts_elapsed=0),
    ]
    plan = plan_rescue(rows, janitor="j", policy=policy)
    assert plan.ids == (1, 2, 3)
    assert plan.tokens == (11, None, 13)
    assert plan.statuses == ("pending", "failed", "pending")
    assert plan.delays == (30.0, 0.0, 30.0)
    assert policy.asked == [3, 1]
    assert plan.messages[0].startswith("lease expired (consumer c1 stopped renewing); rescued")
    assert "janitor j" in plan.messages[0]
    assert "no attempt is left; failed by janitor j" in plan.messages[1]
    for bad, expected in [(-5.0, 0.0), (float("nan"), 0.0), (float("inf"), 366 * 86400.0)]:
        plan = plan_rescue(rows[:1], janitor="j", policy=FixedPolicy(bad))
        assert plan.delays == (expected,)


async def test_janitor_rescues_expired_leases_only(pool: Pool, sync_conn: SyncConn) -> None:
    make_leader(sync_conn, "jan")
    retry = insert_task(
        sync_conn, attempts_left=2, attempts_elapsed=1, lease_token=7, lease_owner="c1"
    )
    doomed = insert_task(
        sync_conn, attempts_left=0, attempts_elapsed=3, lease_token=8, lease_owner="c2"
    )
    go_row = insert_task(sync_conn, attempts_left=2, attempts_elapsed=1)  # a Go claim: no token
    live = insert_task(sync_conn, blocked_in=60, lease_token=9, lease_owner="c3")
    pending = insert_task(sync_conn, status="pending", blocked_in=-60)
    before = {i: raw(sync_conn, i) for i in (live, pending)}
    policy = FixedPolicy(100.0)

    result = await rescue_expired(
        PgMaintenance(pool),
        group="default",
        me="jan",
        policy=policy,
        batch_size=100,
        max_batches=10,
    )

    assert (result.rescued, result.failed) == (2, 1)
    assert sorted(policy.asked) == [1, 2]  # the Go claim's dead attempt was its second
    t = task(sync_conn, retry)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("pending", 2, 1)
    assert (t["lease_token"], t["lease_owner"], t["finalized"]) == (None, None, False)
    assert 99 < t["blocked_in"] <= 100
    assert t["messages"][0] == "earlier"
    assert t["messages"][1].startswith("lease expired (consumer c1 stopped renewing)")
    assert "rescued by janitor jan" in t["messages"][1]
    t = task(sync_conn, doomed)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("failed", 0, 3)
    assert (t["lease_token"], t["lease_owner"], t["finalized"]) == (None, None, True)
    assert "consumer c2" in t["messages"][1]
    assert "failed by janitor jan" in t["messages"][1]
    t = task(sync_conn, go_row)  # its dead attempt is charged (see the test below)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("pending", 1, 2)
    assert "consumer (unknown)" in task(sync_conn, go_row)["messages"][1]
    assert {i: raw(sync_conn, i) for i in (live, pending)} == before


async def test_rescue_charges_the_attempt_a_go_consumer_left_running(
    pool: Pool, sync_conn: SyncConn
) -> None:
    """A Go consumer's claim consumes no attempt and sets no lease token: its dead attempt is
    charged at the rescue, as our claims charge theirs up front."""
    make_leader(sync_conn, "jan")
    again = insert_task(sync_conn, attempts_left=3, attempts_elapsed=1)
    last = insert_task(sync_conn, attempts_left=1, attempts_elapsed=2)
    zero = insert_task(sync_conn, attempts_left=0, attempts_elapsed=0)  # Go's max_retry 0
    policy = FixedPolicy(100.0)
    result = await rescue_expired(
        PgMaintenance(pool), group="default", me="jan", policy=policy, batch_size=100, max_batches=1
    )
    assert (result.rescued, result.failed) == (1, 2)
    assert policy.asked == [2]  # the dead attempt was the second
    t = task(sync_conn, again)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("pending", 2, 2)
    assert t["messages"][1].startswith("lease expired (consumer (unknown) stopped renewing)")
    t = task(sync_conn, last)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("failed", 0, 3)
    assert "no attempt is left" in t["messages"][1]
    t = task(sync_conn, zero)
    assert (t["status"], t["attempts_left"], t["attempts_elapsed"]) == ("failed", 0, 1)


@pytest.mark.parametrize("leader", [None, "someone-else", "expired"])
async def test_janitor_writes_nothing_without_the_lease(
    pool: Pool, sync_conn: SyncConn, leader: str | None
) -> None:
    if leader == "expired":
        make_leader(sync_conn, "jan", expires_in=-1)
    elif leader is not None:
        make_leader(sync_conn, leader)
    expired = insert_task(sync_conn, lease_token=1, lease_owner="c")
    before = raw(sync_conn, expired)
    result = await rescue_expired(
        PgMaintenance(pool),
        group="default",
        me="jan",
        policy=FixedPolicy(1),
        batch_size=10,
        max_batches=1,
    )
    assert (result.rescued, result.failed) == (0, 0)
    assert raw(sync_conn, expired) == before


async def test_rescue_update_is_fenced_by_token_and_plan(pool: Pool, sync_conn: SyncConn) -> None:
    make_leader(sync_conn, "jan")
    a = insert_task(sync_conn, lease_token=5, attempts_left=1)
    b = insert_task(sync_conn, lease_token=6, attempts_left=0)
    async with pool.connection() as conn:
        cur = await conn.execute(
            QUERIES.update_rescued,
            {
                "group": "default",
                "me": "jan",
                "ids": [a, b],
                "tokens": [4, 6],  # a: stale token (the task was re-claimed meanwhile)
                "statuses": ["pending", "pending"],  # b: the plan disagrees with attempts_left
                "delays": [0.0, 0.0],
                "messages": ["x", "x"],
            },
        )
        assert await cur.fetchall() == []
    assert task(sync_conn, a)["status"] == task(sync_conn, b)["status"] == "running"


async def test_rescue_is_batched_and_bounded_per_run(pool: Pool, sync_conn: SyncConn) -> None:
    make_leader(sync_conn, "jan")
    for i in range(25):
        insert_task(sync_conn, lease_token=100 + i)
    kwargs: dict[str, Any] = {"group": "default", "me": "jan", "policy": FixedPolicy(5)}
    first = await rescue_expired(PgMaintenance(pool), batch_size=10, max_batches=2, **kwargs)
    assert first.rescued == 20
    second = await rescue_expired(PgMaintenance(pool), batch_size=10, max_batches=2, **kwargs)
    assert second.rescued == 5
    left = sync_conn.execute("SELECT count(*) FROM asynqpg_tasks WHERE status = 'running'")
    assert left.fetchone() == (0,)


# --- clean --------------------------------------------------------------------------------


async def test_cleaner_deletes_exactly_what_retention_says(pool: Pool, sync_conn: SyncConn) -> None:
    make_leader(sync_conn, "jan")
    hour, day = 3600.0, 86400.0
    gone = [
        insert_task(sync_conn, status="completed", finalized_ago=day + hour),
        insert_task(sync_conn, status="failed", finalized_ago=8 * day),
        insert_task(sync_conn, status="cancelled", finalized_ago=day + 60),
    ]
    kept = [
        insert_task(sync_conn, status="completed", finalized_ago=day - 60),
        insert_task(sync_conn, status="failed", finalized_ago=6 * day),
        insert_task(sync_conn, status="cancelled", finalized_ago=hour),
        insert_task(sync_conn, status="completed", finalized_ago=None),
        insert_task(sync_conn, status="pending", finalized_ago=30 * day),
        insert_task(sync_conn, status="running", finalized_ago=30 * day),
    ]
    c = MaintenanceConfig()
    retentions = {
        "completed": c.completed_retention,
        "failed": c.failed_retention,
        "cancelled": c.cancelled_retention,
    }
    kwargs: dict[str, Any] = {"group": "default", "retentions": retentions, "max_batches": 10}
    repo = PgMaintenance(pool)
    assert await clean_finalized(repo, me="other", batch_size=2, **kwargs) == 0  # fenced
    assert await clean_finalized(repo, me="jan", batch_size=2, **kwargs) == 3
    ids = {r[0] for r in sync_conn.execute("SELECT id FROM asynqpg_tasks").fetchall()}
    assert ids == set(kept)
    assert not ids & set(gone)
    # A shorter retention for one status only touches that status.
    deleted = await clean_finalized(
        PgMaintenance(pool),
        group="default",
        me="jan",
        retentions={"cancelled": 60},
        batch_size=5,
        max_batches=1,
    )
    assert deleted == 1


async def test_cleaner_is_bounded_per_run(pool: Pool, sync_conn: SyncConn) -> None:
    make_leader(sync_conn, "jan")
    for _ in range(7):
        insert_task(sync_conn, status="completed", finalized_ago=10)
    kwargs: dict[str, Any] = {"group": "default", "me": "jan", "retentions": {"completed": 0}}
    assert await clean_finalized(PgMaintenance(pool), batch_size=3, max_batches=2, **kwargs) == 6
    assert await clean_finalized(PgMaintenance(pool), batch_size=3, max_batches=2, **kwargs) == 1
    with pytest.raises(ValueError, match="not final statuses"):
        await clean_finalized(
            PgMaintenance(pool),
            group="default",
            me="jan",
            retentions={"pending": 0},
            batch_size=1,
            max_batches=1,
        )


# --- election -----------------------------------------------------------------------------


async def test_one_leader_among_three(dsn: str, sync_conn: SyncConn) -> None:
    everyone = {name: MaintenanceStats() for name in ("a", "b", "c")}
    async with (
        open_pool(dsn, min_size=0, max_size=4) as pa,
        open_pool(dsn, min_size=0, max_size=4) as pb,
        open_pool(dsn, min_size=0, max_size=4) as pc,
        anyio.create_task_group() as tg,
    ):
        for name, pool in zip(everyone, (pa, pb, pc), strict=True):  # all campaign at once
            tg.start_soon(
                partial(
                    run_maintenance,
                    PgMaintenance(pool),
                    client_id=name,
                    config=FAST,
                    stats=everyone[name],
                )
            )
        await wait_until(
            lambda: sum(s.is_leader for s in everyone.values()) == 1, timeout=2, what="a leader"
        )
        (leader,) = [name for name, s in everyone.items() if s.is_leader]
        end = anyio.current_time() + 1.2  # a few renewals
        while anyio.current_time() < end:
            assert [s.is_leader for s in everyone.values()].count(True) == 1
            assert everyone[leader].is_leader
            await anyio.sleep(0.02)
        assert leader_id(sync_conn) == leader
        assert sum(s.elections_won for s in everyone.values()) == 1
        assert everyone[leader].janitor_runs == everyone[leader].cleaner_runs == 1
        tg.cancel_scope.cancel()
    assert leader_id(sync_conn) is None  # the leader resigned on the way out


async def test_graceful_shutdown_hands_over_at_once(dsn: str, sync_conn: SyncConn) -> None:
    async with (
        anyio.create_task_group() as tg,
        instance(tg, dsn, "first", SLOW) as (first, first_scope),
    ):
        assert leading(first)
        async with instance(tg, dsn, "second", SLOW) as (second, _):
            assert not leading(second)
            first_scope.cancel()
            took = await wait_until(
                lambda: second.is_leader, timeout=2, what="takeover", interval=0.005
            )
            assert took < 1.0
            assert not leading(first)
            assert first.leadership_lost == 0
            assert leader_id(sync_conn) == "second"


_VICTIM = """
import sys
import trio
from asynqpg_trio import open_pool
from asynqpg_trio import MaintenanceConfig
from asynqpg_trio._maintenance._run import run_maintenance
from asynqpg_trio._pg._maintenance_repo import PgMaintenance

async def main():
    config = MaintenanceConfig(ttl=2, renew_interval=0.5, janitor_interval=60, cleaner_interval=60)
    async with open_pool(sys.argv[1], min_size=0, max_size=4) as pool:
        await run_maintenance(PgMaintenance(pool), client_id="victim", config=config)

trio.run(main)
"""


async def test_killed_leader_is_replaced_within_ttl_plus_interval(
    dsn: str, sync_conn: SyncConn, tmp_path: Path
) -> None:
    root = str(Path(asynqpg_trio.__file__).resolve().parent.parent)
    path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with (tmp_path / "victim.log").open("w") as log:
        victim = subprocess.Popen(
            [sys.executable, "-c", _VICTIM, dsn], env=env, stdout=log, stderr=log
        )
    try:
        with anyio.move_on_after(15):
            while leader_id(sync_conn) != "victim":
                assert victim.poll() is None, (tmp_path / "victim.log").read_text()
                await anyio.sleep(0.02)
        assert leader_id(sync_conn) == "victim", (tmp_path / "victim.log").read_text()
        async with anyio.create_task_group() as tg, instance(tg, dsn, "heir", FAST) as (heir, _):
            assert not leading(heir)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            took = await wait_until(
                lambda: heir.is_leader, timeout=5, what="takeover", interval=0.005
            )
            assert 2.0 - 0.5 - 0.2 < took < 2.0 + 0.5 + 0.3  # after the lease, within ttl+interval
            assert leader_id(sync_conn) == "heir"
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


class FreezableProxy:
    """A TCP relay to PostgreSQL that can stop forwarding without closing anything.

    Frozen, it looks to the client like a database that stopped answering (a network
    partition or a stalled server): queries hang, nothing fails.
    """

    def __init__(self, dsn: str) -> None:
        params = conninfo.conninfo_to_dict(dsn)
        self.host = str(params.get("host") or "/var/run/postgresql")
        self.port = int(params.get("port") or 5432)
        self.thawed = anyio.Event()
        self.thawed.set()

    def freeze(self) -> None:
        self.thawed = anyio.Event()

    def thaw(self) -> None:
        self.thawed.set()

    async def serve(self, *, task_status: TaskStatus[int]) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            task_status.started(listener.extra(SocketAttribute.local_port))
            await listener.serve(self._relay)

    async def _upstream(self) -> ByteStream:
        if self.host.startswith("/"):
            return await anyio.connect_unix(f"{self.host}/.s.PGSQL.{self.port}")
        return await anyio.connect_tcp(self.host, self.port)

    async def _relay(self, client: ByteStream) -> None:
        async with client, await self._upstream() as server, anyio.create_task_group() as tg:

            async def pump(src: ByteStream, dst: ByteStream) -> None:
                try:
                    async for data in src:
                        await self.thawed.wait()
                        await dst.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(pump, client, server)
            tg.start_soon(pump, server, client)


async def test_stalled_leader_stops_before_a_successor_is_elected(
    dsn: str, sync_conn: SyncConn
) -> None:
    """Split-brain by construction: a leader whose renewals hang (no error, no answer)
    stops its maintenance on its local deadline, before its lease can expire."""
    proxy = FreezableProxy(dsn)
    config = MaintenanceConfig(
        ttl=2, renew_interval=0.5, janitor_interval=60, cleaner_interval=60, resign_grace=1
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.serve)
        via_proxy = conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
        async with instance(tg, via_proxy, "stalled", config) as (stalled, _):
            assert leading(stalled)
            async with instance(tg, dsn, "successor", config) as (successor, _):
                await anyio.sleep(0.6)  # a renewal or two
                proxy.freeze()
                frozen_at = anyio.current_time()
                stopped = await wait_until(
                    lambda: not stalled.is_leader, timeout=3, what="stop", interval=0.005
                )
                elected = await wait_until(
                    lambda: successor.is_leader, timeout=3, what="successor", interval=0.005
                )
                assert stopped <= 0.8 * config.ttl + 0.1  # the local deadline, not a renewal
                assert elected > 0.2  # the successor waited for the lease: no overlap
                assert stalled.leadership_lost == 1
                assert leader_id(sync_conn) == "successor"
                proxy.thaw()
                await anyio.sleep(1.0)  # the stalled renewal lands, and finds the lease taken
                assert leading(successor)
                assert not leading(stalled)
                assert anyio.current_time() - frozen_at < 6
        tg.cancel_scope.cancel()


async def test_usurped_leader_writes_nothing_then_steps_down(
    dsn: str, sync_conn: SyncConn, admin: Connection[Any]
) -> None:
    config = MaintenanceConfig(ttl=30, renew_interval=10, janitor_interval=0.02)
    async with (
        anyio.create_task_group() as tg,
        instance(tg, dsn, "old", config) as (old, _),
    ):
        assert leading(old)
        await admin.execute("UPDATE asynqpg_leader SET leader_id = 'usurper'")
        expired = insert_task(sync_conn, lease_token=3, lease_owner="c")
        before = raw(sync_conn, expired)
        runs = old.janitor_runs
        await wait_until(lambda: old.janitor_runs >= runs + 5, timeout=2, what="janitor runs")
        assert leading(old)  # it has not noticed yet (next renewal in 10 s) ...
        assert raw(sync_conn, expired) == before  # ... but the fence stopped every write
        await admin.execute("NOTIFY asynqpg_leader, 'default'")  # wake it: it campaigns at once
        await wait_until(lambda: not old.is_leader, timeout=2, what="step down")
        assert old.leadership_lost == 1
        await admin.execute("DELETE FROM asynqpg_leader")
        await admin.execute("NOTIFY asynqpg_leader, 'other-group'")  # not its group: ignored
        await anyio.sleep(0.2)
        assert not leading(old)
        await admin.execute("NOTIFY asynqpg_leader, 'default'")
        await wait_until(lambda: old.rescued == 1, timeout=2, what="rescue")
        assert old.elections_won == 2
        assert task(sync_conn, expired)["status"] == "pending"


async def test_transient_errors_step_down_and_recover(
    dsn: str, sync_conn: SyncConn, admin: Connection[Any]
) -> None:
    async with (
        anyio.create_task_group() as tg,
        instance(tg, dsn, "shaky", FAST, options="-c lock_timeout=100") as (shaky, _),
    ):
        assert leading(shaky)
        async with admin.transaction():  # renewals now fail with LockNotAvailable
            await admin.execute("SELECT * FROM asynqpg_leader FOR UPDATE")
            await wait_until(lambda: not shaky.is_leader, timeout=2, what="step down")
            assert shaky.errors >= 1
            assert shaky.leadership_lost == 1
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'shaky'"
            )
        await wait_until(lambda: shaky.is_leader, timeout=3, what="recovery")
        assert shaky.elections_won == 2
        assert leader_id(sync_conn) == "shaky"


async def test_leader_rescues_and_cleans_on_its_own(dsn: str, sync_conn: SyncConn) -> None:
    expired = insert_task(sync_conn, attempts_left=0, lease_token=1, lease_owner="dead")
    old = insert_task(sync_conn, status="completed", finalized_ago=2 * 86400)
    async with anyio.create_task_group() as tg, instance(tg, dsn, "solo", FAST) as (solo, _):
        await wait_until(
            lambda: solo.janitor_runs >= 1 and solo.cleaner_runs >= 1, timeout=2, what="runs"
        )
        assert (solo.rescued, solo.rescue_failed, solo.cleaned) == (0, 1, 1)
    assert task(sync_conn, expired)["status"] == "failed"
    assert sync_conn.execute("SELECT 1 FROM asynqpg_tasks WHERE id = %s", (old,)).fetchone() is None


def test_works_on_asyncio(dsn: str, sync_conn: SyncConn) -> None:
    expired = insert_task(sync_conn, attempts_left=1, lease_token=1, lease_owner="dead")

    async def scenario() -> MaintenanceStats:
        async with (
            anyio.create_task_group() as tg,
            instance(tg, dsn, "x", SLOW) as (x, x_scope),
        ):
            await wait_until(lambda: x.rescued == 1, timeout=2, what="rescue")
            async with instance(tg, dsn, "y", SLOW) as (y, _):
                assert not leading(y)
                x_scope.cancel()
                await wait_until(lambda: y.is_leader, timeout=1, what="takeover")
        return y

    y = anyio.run(scenario, backend="asyncio")
    assert y.elections_won == 1
    assert task(sync_conn, expired)["status"] == "pending"
    assert leader_id(sync_conn) is None
