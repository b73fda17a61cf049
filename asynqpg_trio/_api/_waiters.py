"""Waiting for tasks to finish: one LISTEN connection per pool serves every waiter.

Theory of operation
-------------------
`Waiters` (one per `Pool`, shared by the `Client` and `Producer` built on it: `waiters_for`)
keeps a slot per task id someone waits for.  A waiter never polls: the statements that finish
a task someone waits for (its row's ``notify_done`` is set) NOTIFY ``asynqpg_done`` with its
id at commit, and one connection LISTENs for all of them.

There is no background task (the client has no nursery): the first waiter to find nobody
listening *leads*.  It opens the dedicated connection, LISTENs, then reads every waited
task's state once (the fallback re-check: a task that finished before LISTEN was in effect
sent its NOTIFY to nobody), and then reads notifications, resolving the slots they name
(one query for the ids of a notification), until its own slot is resolved.  Then, or if it
is cancelled, it closes the connection and wakes one remaining waiter, which leads next (and
re-checks, closing the gap).  Every other waiter waits on its slot's event only.

The connection outlives a leader while others wait (psycopg keeps the notifications that
arrive between two leaders); it is closed when the last waiter leaves, or when its leader
failed (it may be broken).  So a process opens one LISTEN connection per pool at a time.

A waiter that arrives while a leader listens marks its task waited for (``watch_task``), then
reads its state once: a finish committed before the mark is seen by the read; one committed
after it sends a NOTIFY, which the leader (already listening) receives.

Every `SWEEP` seconds without a notification the leader re-reads all waited tasks, one
query: a safety net for finishes that send no NOTIFY (a Go consumer's, a lease the janitor
failed for good), not a per-waiter poll.

Cancellation: `Waiters.wait` is a checkpoint; cancelling it removes the waiter (a leader hands
over first).  Nothing in the database changes but the ``notify_done`` mark.
"""

from __future__ import annotations

import weakref
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._core._state import Event
from .._pg import _client_repo as repo
from .._pg._migrate import schema_required

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._core._results import StoredOutcome
    from .._pg._conn import Connection
    from .._pg._pool import Pool

__all__ = ["CANCEL_GRACE", "SWEEP", "Waiters", "wait_for_result", "waiters_for"]

#: Seconds without a notification after which the leader re-reads every waited task once.
SWEEP: Final = 10.0

_REGISTRIES: weakref.WeakKeyDictionary[Pool, Waiters] = weakref.WeakKeyDictionary()


def waiters_for(pool: Pool) -> Waiters:
    """The waiter registry of ``pool`` (made on first use)."""
    found = _REGISTRIES.get(pool)
    if found is None:
        found = _REGISTRIES[pool] = Waiters(pool)
    return found


class _Slot:
    __slots__ = ("event", "outcome", "refs")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: StoredOutcome | None = None
        self.refs = 0


class Waiters:
    """The waiters of one pool (see the module docstring)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._slots: dict[int, _Slot] = {}
        self._leading = False
        self._listening = anyio.Event()
        self._conn: Connection[Any] | None = None  # the LISTEN connection, while anyone waits
        #: LISTEN connections opened so far, and notifications received (statistics).
        self.connections_opened = 0
        self.notifications = 0

    @property
    def waiting(self) -> int:
        """Task ids waited for now."""
        return len(self._slots)

    async def wait(self, task_id: int) -> StoredOutcome:
        """Wait until the task is finished (or gone); return what the database holds of it.

        Cancellation: a checkpoint; the waiter is removed.
        """
        slot = self._slots.get(task_id)
        if slot is None:
            slot = self._slots[task_id] = _Slot()
        slot.refs += 1
        checked = False
        try:
            while slot.outcome is None:
                if not self._leading:
                    await self._lead(slot)
                elif not self._listening.is_set():
                    await self._listening.wait()
                elif not checked:
                    checked = True
                    await self._check([task_id], watch=True)
                else:
                    event = slot.event
                    await event.wait()
                    if slot.outcome is None and event is slot.event:
                        slot.event = anyio.Event()  # a hand-over: see who leads now
            return slot.outcome
        finally:
            slot.refs -= 1
            if slot.refs == 0 and self._slots.get(task_id) is slot:
                del self._slots[task_id]

    async def _lead(self, slot: _Slot) -> None:
        """Listen for everyone until ``slot`` is resolved (or this is cancelled)."""
        self._leading = True
        failed = True
        try:
            with schema_required():
                if self._conn is None or self._conn.closed:
                    conn = await self._pool.connect()
                    try:
                        await repo.listen_done(conn)
                    except BaseException:
                        await conn.close()
                        raise
                    self._conn = conn
                    self.connections_opened += 1
                    watch = True  # LISTEN is new: mark and re-check every waited task
                else:
                    watch = False  # still listening: re-check what a hand-over may have missed
                self._listening.set()
                await self._check(list(self._slots), watch=watch)
                while slot.outcome is None:
                    heard = await self._listen(self._conn, slot)
                    if not heard and slot.outcome is None:
                        await self._check(list(self._slots), watch=False)  # the sweep
            failed = False
        finally:
            self._leading = False
            # Wake whoever waits for LISTEN to be in effect (it may never be, if this failed):
            # they look again, and one of them leads.
            self._listening.set()
            self._listening = anyio.Event()
            waiting = [s for s in self._slots.values() if s.outcome is None and s is not slot]
            if (failed or not waiting) and self._conn is not None:
                # Nobody left to listen for (or the connection may be broken): close it.
                conn, self._conn = self._conn, None
                await conn.close()
            if waiting:  # hand over to a waiter still waiting
                waiting[0].event.set()

    async def _listen(self, conn: Connection[Any], slot: _Slot) -> bool:
        """Resolve the slots the notifications of the next `SWEEP` seconds name, until
        ``slot`` is resolved; return whether any came.  (Notifications psycopg received with
        the one that resolved ``slot`` may be dropped: the next leader re-checks all.)"""
        heard = False
        async with aclosing(conn.notifies(timeout=SWEEP)) as notes:
            async for note in notes:
                heard = True
                self.notifications += 1
                ids = [int(i) for i in note.payload.split(",") if i.strip().isdigit()]
                wanted = [i for i in ids if i in self._slots]
                if wanted:
                    await self._check(wanted, watch=False)
                if slot.outcome is not None:
                    break
        return heard

    async def _check(self, ids: Iterable[int], *, watch: bool) -> None:
        """Read the state of these tasks (marking them waited for first, with ``watch``);
        resolve the slots of those finished or gone."""
        ids = list(ids)
        if not ids:
            return
        with schema_required():
            async with self._pool.connection() as conn:
                if watch:
                    await repo.watch_tasks(conn, ids)
                found = await repo.task_outcomes(conn, ids)
        for outcome in found:
            slot = self._slots.get(outcome.task_id)
            if slot is not None and slot.outcome is None:
                slot.outcome = outcome
                slot.event.set()


#: Seconds the remote cancel of a cancelled waiter's task may take (shielded).
CANCEL_GRACE: Final = 5.0


async def wait_for_result(pool: Pool, task_id: int, *, cancel_on_cancel: bool) -> Any:
    """Wait for the task on ``pool``'s registry; its result, or its error (see
    `Client.wait`).  With ``cancel_on_cancel``, a cancelled wait cancels the task (shielded,
    bounded by `CANCEL_GRACE`) before the cancellation goes on."""
    try:
        outcome = await waiters_for(pool).wait(task_id)
    except anyio.get_cancelled_exc_class():
        if cancel_on_cancel:
            with anyio.move_on_after(CANCEL_GRACE, shield=True), schema_required():
                async with pool.connection() as conn:
                    # A finished or missing task is left as it is (the write refuses it).
                    await repo.write_task(conn, Event.CANCEL, task_id)
        raise
    return outcome.value()
