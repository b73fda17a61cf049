"""Leader election: one consumer process per group runs maintenance, a dead one is replaced fast.

Theory of operation
-------------------
Leadership is a row in the UNLOGGED table ``asynqpg_leader`` holding a lease whose expiry is
set and compared by the database clock (``asynqpg_now()``), so client clock skew plays no
part.  `Elector.run` campaigns at once and then every ``renew_interval``: one ``elect``
statement inserts the row, takes it over once expired, or renews it when it is ours.  A
follower also campaigns at once when a NOTIFY on ``asynqpg_leader`` says a leader resigned; one
dedicated LISTEN connection (reconnected with back-off) feeds a one-slot wake-up channel.

While leader, the caller's ``while_leader`` coroutine (the janitor and the cleaner) runs in a
*term*: a task inside a cancel scope whose deadline is

    (clock reading taken just before the renewal that succeeded) + ttl * (1 - SAFETY_FRACTION)

and each successful renewal pushes the deadline forward.  The database lease runs from the
moment the statement executed, which is after that reading, so the term always ends before the
lease can expire and before anybody else can be elected, even if renewals hang or the database
is unreachable (only a process frozen as a whole, by the OS or a debugger, cannot stop itself
in time; the SQL fence below covers it).  A renewal that comes back not-ours, or fails, ends
the term at once: the campaign cancels the term and waits for it to finish before doing
anything else.  Every maintenance write is also fenced in SQL on the leader row (see
``_pg/sql/maintenance.sql``), so a write still in flight when the term ended cannot land once a
successor exists.

Invariants: at most one term runs at a time; ``counters.is_leader`` is True exactly while a
term runs; a transient database error (`psycopg.OperationalError`) never escapes: the
campaign logs it, steps down, backs off and tries again.

Cancellation: cancelling `Elector.run` ends the term and the listener first; then, if this
instance may hold the lease, it resigns (deletes its row and NOTIFYs) under
``move_on_after(resign_grace, shield=True)``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Protocol, final

import anyio
import psycopg

from .._core._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._core._rows import MaintenanceRepository

__all__ = ["MAX_CLIENT_ID_LENGTH", "SAFETY_FRACTION", "Elector", "LeaderCounters"]

logger = logging.getLogger("asynqpg_trio.leader")

#: The longest client id the ``asynqpg_leader`` table accepts (its check is length < 128).
MAX_CLIENT_ID_LENGTH = 127
#: The share of the TTL a term gives up to stay clear of the database lease's expiry.
SAFETY_FRACTION = 0.2
#: First retry delay after a failed election or LISTEN connection (doubles, capped).
_BACKOFF_START = 0.25


def validate_client_id(client_id: object) -> str:
    """Return ``client_id`` if it can be stored as a leader id, else raise.

    Raises:
        ConfigurationError: it is not a non-empty string shorter than 128 characters.
    """
    if not isinstance(client_id, str) or not client_id:
        raise ConfigurationError(f"client_id must be a non-empty string, got {client_id!r}")
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise ConfigurationError(
            f"client_id must be at most {MAX_CLIENT_ID_LENGTH} characters long "
            f"(got {len(client_id)}): the asynqpg_leader table cannot store it"
        )
    return client_id


class LeaderCounters(Protocol):
    """Where the elector records what happened (`MaintenanceStats` fits)."""

    is_leader: bool
    elections_won: int
    leadership_lost: int
    errors: int


class _Term:
    """One stretch of leadership: ``while_leader`` running under the lease deadline."""

    def __init__(self, deadline: float) -> None:
        self.scope = anyio.CancelScope(deadline=deadline)
        self.done = anyio.Event()


@final
class Elector:
    """Campaigns for the leadership of one group and runs a coroutine while it holds it.

    Args:
        repo: where the election statements run (`PgMaintenance`: LISTEN takes one extra
            connection of its own).
        group: the leadership group (the ``asynqpg_leader.name`` key).
        me: this instance's client id (validated with `validate_client_id`); it must be unique
            among the instances of the group.
        ttl: seconds a won or renewed lease lasts on the database clock.
        renew_interval: seconds between campaigns (less than ``ttl / 2``).
        resign_grace: the most seconds resigning may take on the way out.
        counters: updated as leadership is won and lost.
    """

    def __init__(
        self,
        repo: MaintenanceRepository,
        *,
        group: str,
        me: str,
        ttl: float,
        renew_interval: float,
        resign_grace: float,
        counters: LeaderCounters,
    ) -> None:
        self._repo = repo
        self._group = group
        self._me = validate_client_id(me)
        self._ttl = ttl
        self._renew_interval = renew_interval
        self._resign_grace = resign_grace
        self._counters = counters
        self._term: _Term | None = None
        # True while the database row may be ours (won, and not since seen to be lost).
        self._held = False

    async def run(
        self,
        while_leader: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Campaign forever, running ``while_leader()`` during each term of leadership.

        ``task_status.started()`` is called once LISTEN is set up (or failed once) and the
        first election has been tried.  An exception ``while_leader`` raises (other than the
        cancellation that ends a term) propagates.

        Cancellation: runs until cancelled.  The term is stopped first; then the lease is
        resigned (row deleted, NOTIFY sent) within ``resign_grace`` seconds, shielded; if
        that fails the row simply expires after the TTL.
        """
        wake_tx, wake_rx = anyio.create_memory_object_stream[None](1)
        try:
            async with wake_rx, anyio.create_task_group() as tg:
                await tg.start(self._listen, wake_tx)
                await self._campaign(tg, wake_rx, while_leader, task_status)
        finally:
            if self._held:
                await self._resign_on_exit()

    async def elect(self) -> float | None:
        """Try once to win or renew the lease.

        Returns:
            The local deadline of the term this lease allows (on the `anyio.current_time`
            clock), or None when another instance holds the lease.

        Raises:
            psycopg.OperationalError: the database could not be reached.

        Cancellation: a checkpoint; if cancelled the lease may or may not have been renewed.
        """
        sent = await self._repo.elect(self._group, self._me, self._ttl)
        self._held = sent is not None
        if sent is None:
            return None
        return sent + self._ttl * (1.0 - SAFETY_FRACTION)

    async def resign(self) -> bool:
        """Give the lease up (if held) and NOTIFY the followers; return whether it was held.

        Cancellation: a checkpoint; if cancelled the lease may or may not be released.
        """
        resigned = await self._repo.resign(self._group, self._me)
        self._held = False
        return resigned

    async def _campaign(
        self,
        tg: TaskGroup,
        wake: MemoryObjectReceiveStream[None],
        while_leader: Callable[[], Awaitable[None]],
        task_status: TaskStatus[None],
    ) -> None:
        failures = 0
        started = False
        while True:
            delay = self._renew_interval
            try:
                deadline = await self._attempt()
            except (psycopg.OperationalError, TimeoutError) as ex:
                failures += 1
                self._counters.errors += 1
                delay = min(delay, _BACKOFF_START * 2 ** (failures - 1))
                logger.warning(
                    "election in group %r failed (%s); %s, retrying in %.2f s",
                    self._group,
                    ex,
                    "stepping down" if self._live_term() else "not leader",
                    delay,
                )
                await self._step_down()
            else:
                failures = 0
                term = self._live_term()
                if deadline is None:
                    await self._step_down()
                elif term is not None:
                    term.scope.deadline = deadline
                elif deadline > anyio.current_time():
                    self._begin_term(tg, deadline, while_leader)
            if not started:
                started = True
                task_status.started()
            with anyio.move_on_after(delay):
                await wake.receive()

    async def _attempt(self) -> float | None:
        """`elect`, bounded by the TTL: a hung renewal counts as a failed one."""
        with anyio.move_on_after(self._ttl):
            return await self.elect()
        raise TimeoutError(f"no answer within {self._ttl:g} s")

    def _live_term(self) -> _Term | None:
        if self._term is not None and self._term.done.is_set():
            self._term = None  # the term outlived its deadline and ended by itself
        return self._term

    def _begin_term(
        self, tg: TaskGroup, deadline: float, while_leader: Callable[[], Awaitable[None]]
    ) -> None:
        term = _Term(deadline)
        self._term = term
        self._counters.is_leader = True
        self._counters.elections_won += 1
        logger.info("%s is now the leader of group %r", self._me, self._group)
        tg.start_soon(self._serve, term, while_leader)

    async def _serve(self, term: _Term, while_leader: Callable[[], Awaitable[None]]) -> None:
        try:
            with term.scope:
                await while_leader()
        finally:
            self._counters.is_leader = False
            if term.scope.cancel_called:
                self._counters.leadership_lost += 1
                logger.warning("%s lost the leadership of group %r", self._me, self._group)
            term.done.set()

    async def _step_down(self) -> None:
        """End the current term (if any) and wait until its work has stopped."""
        term, self._term = self._term, None
        if term is not None:
            term.scope.cancel()
            await term.done.wait()

    async def _resign_on_exit(self) -> None:
        if self._repo.closed:  # the owner closed the pool before stopping us
            logger.warning("pool closed: not resigning; the lease expires within %g s", self._ttl)
            return
        with anyio.move_on_after(self._resign_grace, shield=True):
            try:
                if await self.resign():
                    logger.info("%s resigned the leadership of group %r", self._me, self._group)
            except psycopg.Error as ex:
                logger.warning("could not resign (%s); the lease will expire by itself", ex)

    async def _listen(
        self,
        wake: MemoryObjectSendStream[None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Turn resignation NOTIFYs for this group into wake-ups of the campaign."""
        started = False
        failures = 0
        async with wake:
            while True:
                try:
                    async with self._repo.resignations(self._group) as resignations:
                        if failures:
                            _nudge(wake)  # a resignation may have gone unheard meanwhile
                        failures = 0
                        if not started:
                            started = True
                            task_status.started()
                        async for _ in resignations:
                            _nudge(wake)
                except psycopg.OperationalError as ex:
                    failures += 1
                    self._counters.errors += 1
                    delay = min(self._renew_interval, _BACKOFF_START * 2 ** (failures - 1))
                    logger.warning("LISTEN connection failed (%s); retrying in %.2f s", ex, delay)
                    if not started:
                        started = True
                        task_status.started()
                    await anyio.sleep(delay)


def _nudge(wake: MemoryObjectSendStream[None]) -> None:
    """Queue one wake-up; one already queued is enough."""
    with contextlib.suppress(anyio.WouldBlock):
        wake.send_nowait(None)
