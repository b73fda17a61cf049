"""`FakeMaintenance`: the maintenance repository in memory (election, rescue, clean).

Theory of operation
-------------------
The statements in ``_pg/sql/maintenance.sql`` are the reference; the contract suite
(``tests/contract/test_maintenance_repository.py``) runs the same tests against this and
`PgMaintenance`, and where they differ this is wrong.

*Election*: one `Leader` per group, its lease timed on the fake's clock.  ``elect`` wins when
the group has no leader, when the leader's lease has expired (``expires_at <= now``), or when
the caller is the leader (a renewal, which keeps ``elected_at``); the lease then runs ``ttl``
seconds from now.  ``resign`` deletes the caller's row, expired or not, and only then
announces the resignation to the group's open `resignations` iterators.

*The leader fence*: ``rescue_batch`` and ``clean_batch`` change nothing unless the caller holds
an unexpired lease on the group, as the ``EXISTS (... FOR SHARE)`` clause does in SQL.  The
methods are atomic (see ``_table.py``), so what SQL's row lock guarantees, that no successor is
elected while a fenced write runs, holds here trivially.

*Rescue* (event ``rescue``): lock up to ``batch_size`` running tasks whose lease has expired,
oldest expiry first (id breaks ties), hand them to ``decide``, and write each entry of the plan
through the state table, fenced as ``update_rescued`` is: the row is running with an expired
lease, its token is the one read (both absent for a Go consumer's row), and the planned status
is the one the state table's rule reaches (pending while an attempt is left after charging a
Go consumer's dead one, else failed).  An entry that fails a fence is skipped.

*Clean* (event ``clean``): delete up to ``batch_size`` tasks of one final status finalized
longer than ``retention`` seconds ago, oldest ``finalized_at`` first (id breaks ties).

Cancellation: every method is a checkpoint first and changes nothing if cancelled there.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio

from .._core._rescue import ExpiredLease, RescueBatch, RescuePlan
from .._core._row import TaskStatus, TransitionParams
from .._core._state import Event, matching_rules
from ._stored import Leader, Record
from ._table import FakeTable

__all__ = ["FakeMaintenance"]


class FakeMaintenance(FakeTable):
    """The maintenance repository (`MaintenanceRepository`) on the fake's tables."""

    def leader(self, group: str) -> str | None:
        """The instance holding an unexpired lease on ``group`` now (None: nobody)."""
        held = self._leaders.get(group)
        return held.leader_id if held is not None and held.expires_at > self.now() else None

    @property
    def closed(self) -> bool:
        """Always False: the fake has no connections to lose."""
        return False

    async def elect(self, group: str, me: str, ttl: float) -> float | None:
        """Win, take over (once expired) or renew the lease of ``group`` for ``ttl`` seconds.

        Returns:
            The `anyio.current_time` reading when ``me`` leads afterwards (the statement
            takes no time), else None.

        Cancellation: a checkpoint before anything changes.
        """
        await self._enter("elect")
        sent = anyio.current_time()
        now = self.now()
        held = self._leaders.get(group)
        if held is None or held.expires_at <= now:
            self._leaders[group] = Leader(me, now, now + ttl)
        elif held.leader_id == me:
            self._leaders[group] = replace(held, expires_at=now + ttl)
        else:
            return None
        return sent

    async def resign(self, group: str, me: str) -> bool:
        """Delete ``me``'s lease on ``group`` (expired or not) and announce it to the group's
        `resignations` iterators; return whether there was one.

        Cancellation: a checkpoint before anything changes.
        """
        await self._enter("resign")
        held = self._leaders.get(group)
        if held is None or held.leader_id != me:
            return False
        del self._leaders[group]
        for listening, send in list(self._resign_listeners):
            if listening == group:
                send.send_nowait(None)
        return True

    @asynccontextmanager
    async def resignations(self, group: str) -> AsyncIterator[AsyncIterator[None]]:
        """Listen for resignations in ``group``: entered at once (after a checkpoint); the
        value yields once per resignation from then on until the block ends.

        Cancellation: a checkpoint on entry and while waiting for a resignation.
        """
        await self._enter("resignations")
        send, receive = anyio.create_memory_object_stream[None](math.inf)
        entry = (group, send)
        self._resign_listeners.append(entry)
        try:
            with receive:
                yield receive
        finally:
            self._resign_listeners.remove(entry)
            send.close()

    async def rescue_batch(
        self,
        group: str,
        me: str,
        batch_size: int,
        decide: Callable[[Sequence[ExpiredLease]], RescuePlan],
        idle_timeout: float | None,
    ) -> RescueBatch:
        """Rescue up to ``batch_size`` expired leases as ``decide`` plans (see the module
        docstring); nothing unless ``me`` holds an unexpired lease on ``group``.
        ``idle_timeout`` is accepted and ignored (nothing here can stall).

        Cancellation: a checkpoint before anything changes.
        """
        await self._enter("rescue_batch")
        now = self.now()
        if not self._leads(group, me, now):
            return RescueBatch(locked=0, rescued=0, failed=0)
        expired = sorted(
            (
                r
                for r in self._records.values()
                if r.row.status is TaskStatus.RUNNING and r.row.blocked_till <= now
            ),
            key=lambda r: (r.row.blocked_till, r.id),
        )[: max(batch_size, 0)]
        if not expired:
            return RescueBatch(locked=0, rescued=0, failed=0)
        plan = decide([_expired_lease(r) for r in expired])
        rescued = failed = 0
        for task_id, token, status, delay, message in zip(
            plan.ids, plan.tokens, plan.statuses, plan.delays, plan.messages, strict=True
        ):
            record = self._records.get(task_id)
            params = TransitionParams(now=now, delay=delay, token=token)
            rules = [] if record is None else matching_rules(record.row, Event.RESCUE, params)
            target = rules[0].target if rules else None
            if target is None or target.value != status:  # stale, or a plan the row refutes
                continue
            self._transition(record, Event.RESCUE, params, message=message)
            if target is TaskStatus.FAILED:
                failed += 1
            else:
                rescued += 1
        return RescueBatch(locked=len(expired), rescued=rescued, failed=failed)

    async def clean_batch(
        self, group: str, me: str, status: str, retention: float, batch_size: int
    ) -> int:
        """Delete up to ``batch_size`` tasks of the final ``status`` finalized longer than
        ``retention`` seconds ago, oldest first; return how many.  Nothing unless ``me`` holds
        an unexpired lease on ``group``; a status that is not final matches nothing.

        Cancellation: a checkpoint before anything changes.
        """
        await self._enter("clean_batch")
        now = self.now()
        if not self._leads(group, me, now):
            return 0
        params = TransitionParams(now=now, retention=float(retention))
        doomed = sorted(
            (
                r
                for r in self._records.values()
                if r.row.status.value == status and matching_rules(r.row, Event.CLEAN, params)
            ),
            key=lambda r: (r.row.finalized_at or 0.0, r.id),
        )[: max(batch_size, 0)]
        for record in doomed:
            self._transition(record, Event.CLEAN, params)
        return len(doomed)

    def _leads(self, group: str, me: str, now: float) -> bool:
        """The leader fence: ``me`` holds an unexpired lease on ``group``."""
        held = self._leaders.get(group)
        return held is not None and held.leader_id == me and held.expires_at > now


def _expired_lease(record: Record) -> ExpiredLease:
    """A locked row as ``select_expired`` returns it."""
    row = record.row
    return ExpiredLease(
        record.id, row.lease_token, record.lease_owner, row.attempts_left, row.attempts_elapsed
    )
