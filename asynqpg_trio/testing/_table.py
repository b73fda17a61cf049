"""The in-memory tables under `FakeDatabase`: task rows, leader rows, clock, notifications.

Theory of operation
-------------------
`FakeTable` holds what the fake's two repositories share: one record per task (the `TaskRow`
the state table reads and writes, plus the columns it does not model), one `Leader` per
leadership group, the injected clock, the open LISTEN iterators and the failures queued by
`fail_next`.  Every change of a task row goes through `FakeTable._transition`, that is
through the state table's applier (`_core._state.apply`), so the fake refuses what the table
refuses: a non-fenced event with no rule raises `IllegalTransition`, and a fenced event (a
lease holder's write) whose token is stale, or whose row is no longer running, is a no-op, as
its ``UPDATE ... WHERE lease_token = %(token)s`` is in SQL.

The repositories are layered on top: `FakeMaintenance` (``_fake_maintenance.py``: election,
rescue and clean), then `FakeDatabase` (``_fake.py``: the tasks repository and the client's
helpers).  Each of their methods starts with `FakeTable._enter`, a checkpoint (where a queued
failure is raised, before anything changes), and then runs to completion without yielding, so
it is atomic, like the one transaction it stands for.

Time is the injected ``clock`` (seconds); instant ``t`` is the datetime ``epoch + t seconds``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .._core._row import MESSAGES_KEPT, Effect, TransitionParams
from .._core._rows import Notice
from .._core._state import Event, apply, matching_rules
from ._stored import Leader, Record

__all__ = ["EPOCH", "FakeTable"]

#: The default ``epoch``: the datetime of instant 0 on the fake's clock.
EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)

#: The repository methods `FakeTable.fail_next` can make fail.
_METHODS: Final = frozenset(
    {
        # the tasks repository
        "claim",
        "next_ready_in",
        "write_outcomes",
        "extend_leases",
        "write_progress",
        "lost_leases",
        "queue_depth",
        "notifications",
        # the maintenance repository
        "elect",
        "resign",
        "resignations",
        "rescue_batch",
        "clean_batch",
    }
)


class FakeTable:
    """The rows, the clock, the listeners and the queued failures of a `FakeDatabase`.

    Args:
        clock: Returns the database's current time in seconds; by default the event loop's
            clock (`anyio.current_time`), read only inside a running loop.
        epoch: The datetime of instant 0 on ``clock`` (for the datetimes claims return).
    """

    def __init__(
        self, *, clock: Callable[[], float] = anyio.current_time, epoch: datetime = EPOCH
    ) -> None:
        self._clock = clock
        self._epoch = epoch
        self._records: dict[int, Record] = {}
        self._next_id = 1
        self._next_token = 1
        self._leaders: dict[str, Leader] = {}
        self._listeners: list[MemoryObjectSendStream[Notice]] = []
        self._resign_listeners: list[tuple[str, MemoryObjectSendStream[None]]] = []
        self._failures: dict[str, BaseException] = {}

    def now(self) -> float:
        """The database's current time, read from the clock."""
        return self._clock()

    def notify(self, channel: str, payload: str) -> None:
        """Send a notification to every open `notifications` iterator."""
        for send in list(self._listeners):
            send.send_nowait(Notice(channel, payload))

    def fail_next(self, method: str, error: BaseException) -> None:
        """Make the next call of the repository method ``method`` (``"claim"``,
        ``"write_outcomes"``, ``"elect"``, ...) raise ``error`` after its checkpoint, changing
        nothing; for ``"notifications"`` and ``"resignations"``, entering it raises."""
        if method not in _METHODS:
            raise ValueError(f"not a repository method: {method!r} (one of {sorted(_METHODS)})")
        self._failures[method] = error

    async def _enter(self, method: str) -> None:
        await anyio.lowlevel.checkpoint()
        error = self._failures.pop(method, None)
        if error is not None:
            raise error

    def _transition(
        self,
        record: Record | None,
        event: Event,
        params: TransitionParams,
        *,
        message: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Apply ``event`` through the state table; return whether a rule applied (False:
        a fenced event that changed nothing).  Raises `IllegalTransition` as the table says."""
        row = None if record is None else record.row
        new = apply(row, event, params)  # raises for an illegal non-fenced event
        rules = matching_rules(row, event, params)
        if not rules:
            return False
        assert record is not None  # only enqueue creates, and it does not come here
        if new is None:
            del self._records[record.id]
            return True
        effects = rules[0].effects
        if Effect.MESSAGE in effects:
            text = "" if message is None else message
            record.messages = [*record.messages, text][-MESSAGES_KEPT:]
        if Effect.TAKE_LEASE in effects:
            record.lease_owner = owner
            record.attempted_at = params.now
        elif Effect.CLEAR_LEASE in effects:
            record.lease_owner = None
        record.row = new
        return True

    def _datetime(self, at: float) -> datetime:
        return self._epoch + timedelta(seconds=at)
