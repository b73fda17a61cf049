"""The scheduler: enqueues one task per fire of the consumer's periodic schedules.

Theory of operation
-------------------
Every consumer given ``schedules=`` runs this actor; none is elected.  Exactly one task per
fire is the database's doing: each fire's task carries an idempotency token made of the
schedule's name and the fire time (`_core._schedule.token`), the same in every process, and the
task table's unique (type, token) index drops every copy but the first.  So consumers may
start, die and race freely: a leader change, or no leader at all, loses and doubles nothing.

Each round is plan -> act -> record:

1. read the database clock and the last fire stored for each schedule (`state`);
2. per schedule, plan the fires of (cursor, now] (`_core._schedule.plan_fires`), the cursor
   being the later of the stored last fire and this actor's own previous ``now``;
3. enqueue the planned fires and write the schedule's row (last fire, next fire) in one
   transaction (`fire`);
4. sleep, on the event loop's clock (so Trio's ``autojump_clock`` drives it in tests), until
   the earliest next fire, and go round again.  A wake-up early by the database's clock finds
   nothing due and sleeps the rest.

The first round of a schedule is its start: the fires since the stored last fire were missed
(no consumer of ours ran at their time) and the schedule's ``catch_up`` decides which are
enqueued.  Later rounds pass `LATE_GRACE`: a fire reached late by a busy or briefly stalled
event loop is still on time; one more than that late counts as missed (a suspended machine).
The cursors live in the `Scheduler`, not in `run`, so a restart after a transient database
error (`supervise`) carries on rather than starting over.

Cancellation: `run` sleeps and queries; cancelled mid-write, the transaction rolls back and
the fire is enqueued by another consumer or at the next start (by its catch-up policy).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .._core._schedule import plan_fires
from .._core._schedule_rows import record_for
from .._core._schedule_spec import token
from .._core._task import Task

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from .._core._schedule import Plan
    from .._core._schedule_rows import SchedulesRepository, ScheduleState
    from .._core._schedule_spec import Schedule
    from .._telemetry._telemetry import Telemetry

__all__ = ["LATE_GRACE", "Scheduler"]

logger = logging.getLogger("asynqpg_trio.scheduler")

#: Seconds late a running scheduler may reach a fire and still enqueue it as on time.
LATE_GRACE = 60.0


class Scheduler:
    """One consumer's schedules, the repository it fires them through, and how far each has
    been handled (kept across restarts of `run`).

    Attributes:
        schedules: the schedules, names distinct.
        enqueued: tasks this scheduler inserted (fires other consumers had enqueued first
            are not counted).
    """

    def __init__(
        self, schedules: Sequence[Schedule], repo: SchedulesRepository, telemetry: Telemetry
    ) -> None:
        self.schedules: tuple[Schedule, ...] = tuple(schedules)
        self.enqueued: int = 0
        self._repo = repo
        self._telemetry = telemetry
        self._cursors: dict[str, datetime] = {}

    async def run(self) -> None:
        """Fire the schedules until cancelled (see the module docstring).

        Cancellation: a checkpoint; a fire being written is rolled back.
        """
        names = [s.name for s in self.schedules]
        while True:
            state = await self._repo.state(names)
            wake: datetime | None = None
            for schedule in self.schedules:
                next_fire = await self._round(schedule, state)
                if next_fire is not None and (wake is None or next_fire < wake):
                    wake = next_fire
            if wake is None:  # no expression matches within 50 years
                await anyio.sleep_forever()
            else:
                await anyio.sleep((wake - state.now).total_seconds())

    async def _round(self, schedule: Schedule, state: ScheduleState) -> datetime | None:
        stored = state.last_fires.get(schedule.name)
        cursor = self._cursors.get(schedule.name)
        if cursor is None:  # the start: what came since the stored last fire was missed
            plan = plan_fires(schedule, stored or state.now, state.now)
        else:
            after = cursor if stored is None else max(cursor, stored)
            plan = plan_fires(schedule, after, state.now, grace=LATE_GRACE)
        if plan.dropped:
            logger.info(
                "schedule %r: fires missed since %s not enqueued (catch_up=%r)",
                schedule.name,
                (stored or cursor or state.now).isoformat(),
                schedule.catch_up,
            )
        if plan.fires or cursor is None:  # the start also writes the row (its next fire)
            await self._fire(schedule, plan)
        self._cursors[schedule.name] = state.now
        return plan.next_fire

    async def _fire(self, schedule: Schedule, plan: Plan) -> None:
        record = record_for(schedule, plan.fires[-1] if plan.fires else None, plan.next_fire)
        if not plan.fires:
            await self._repo.fire(record, (), trace=None)
            return
        tasks = [
            Task(
                schedule.type,
                schedule.payload,
                idempotency_token=token(schedule, fire),
                max_retry=schedule.max_retry,
                queue=schedule.queue,
                priority=schedule.priority,
            )
            for fire in plan.fires
        ]
        types = [schedule.type] * len(tasks)
        with self._telemetry.enqueue(types, single=False, has_delay=False) as op:
            ids = await self._repo.fire(record, tasks, trace=op.trace)
            fired = len(ids) - ids.count(None)
            op.inserted({schedule.type: fired}, None)
        self.enqueued += fired
        logger.debug(
            "schedule %r: %d of %d fires enqueued, up to %s",
            schedule.name,
            fired,
            len(tasks),
            plan.fires[-1].isoformat(),
        )
