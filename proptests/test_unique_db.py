"""Uniqueness holds in every reachable state: the queue's state machine, with unique tasks.

`UniqueMachine` is the stateful test of ``test_stateful_db.py`` (producers, consumers, operators
and the janitor against real PostgreSQL, every row checked against the state table after every
step) with unique tasks added: single and batched enqueues (sync and async producers) of a few
keys, with and without a period, each with its own unique states (pending and running, plus
any of completed, failed, cancelled).  The model predicts each enqueue from the model rows
alone: a task is a duplicate exactly when a task of its slot (key, and window of the model's
clock) is in one of *its own* unique states, or an earlier task of the same batch took the
slot; a duplicate's reported id is that holder's.  An operator's retry or cancel that would
move a task into its states while another task holds its slot is refused with
`DuplicateTask`, and ``retry_failed`` leaves such tasks failed (the older of failed twins goes
first); everything else is the state table's.

After every step, besides the base machine's invariants: no slot has two holders in the
database, and each row's slot is the model's.  Every consumer and janitor step still runs
unchanged: the table guarantees they never move a task into a held slot (a move that did would
fail its statement, and the step with it).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Final

import psycopg
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from hypothesis.stateful import invariant, multiple, precondition, rule, run_state_machine_as_test

from asynqpg_trio import Client, DuplicateTask, Producer, Task, Unique, connect
from asynqpg_trio._core._batching import OutcomeKind
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._state import Event, TaskStatus, apply
from asynqpg_trio._core._unique import is_live, period_micros, states_mask, window_start
from asynqpg_trio.sync import enqueue as sync_enqueue
from asynqpg_trio.sync import enqueue_many as sync_enqueue_many
from proptests.test_stateful_db import DELAYS, MAX_RETRIES, NO_FSYNC, Env, QueueMachine
from tests.helpers import state_db as db
from tests.helpers.claim_model import Placement

S, E = TaskStatus, Event
Slot = tuple[str, Any]  # (key, window)

# (max_examples, stateful_step_count) per Hypothesis profile (proptests/conftest.py).
_BUDGETS: Final = {"dev": (60, 40), "ci": (300, 50), "nightly": (3000, 80)}
_EXAMPLES, _STEPS = _BUDGETS.get(os.environ.get("HYPOTHESIS_PROFILE", "dev"), _BUDGETS["dev"])
SETTINGS: Final = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=_STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

EXTRA_STATES = st.sets(st.sampled_from(["completed", "failed", "cancelled"]))
UNIQUES = st.builds(
    lambda key, period, extra: Unique(key, period=period, states=("pending", "running", *extra)),
    st.sampled_from(["a", "b"]),
    st.sampled_from([None, None, 10.0]),
    EXTRA_STATES,
)
SLOT_OF_TASK: Final = """
    SELECT id, unique_key, unique_window, unique_states FROM asynqpg_tasks
    WHERE unique_key IS NOT NULL ORDER BY id
"""
DOUBLE_HOLDERS: Final = """
    SELECT type, unique_key, unique_window, count(*) FROM asynqpg_tasks
    WHERE unique_key IS NOT NULL AND asynqpg_unique_live(status, unique_states)
    GROUP BY 1, 2, 3 HAVING count(*) > 1
"""


class UniqueMachine(QueueMachine):
    """The base machine, with unique tasks and the operator's moves they can refuse."""

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.slots: dict[int, tuple[Slot, int]] = {}  # task -> (slot, states bitmask)
        self.producer = Producer("host=unused")  # every call passes conn=

    def slot(self, unique: Unique) -> Slot:
        assert unique.key is not None
        if unique.period is None:
            return (unique.key, None)
        return (unique.key, window_start(db.instant(self.now), period_micros(unique.period)))

    def holder(self, slot: Slot, *, but: int | None = None) -> int | None:
        """The model task holding ``slot`` (other than ``but``), if any."""
        for task, (its_slot, mask) in self.slots.items():
            row = self.model.get(task)
            if task != but and its_slot == slot and row and is_live(row.status, mask):
                return task
        return None

    def add(self, task_id: int, unique: Unique, delay: float, max_retry: int | None) -> None:
        total = 3 if max_retry is None else max_retry
        assert self.transition(task_id, E.ENQUEUE, self.params(delay=delay, max_retry=total))
        self.idempotency[task_id] = None
        self.budget[task_id] = max(total, 1)
        self.slots[task_id] = (self.slot(unique), states_mask(unique.states))
        self.where[task_id] = Placement(queue="default", type=db.TYPE, priority=0)

    # --- producers of unique tasks -------------------------------------------------------

    @rule(
        target=QueueMachine.tasks,
        unique=UNIQUES,
        delay=DELAYS,
        max_retry=MAX_RETRIES,
        use_async=st.booleans(),
    )
    def enqueue_unique(
        self, unique: Unique, delay: float, max_retry: int | None, use_async: bool
    ) -> Any:
        holder = self.holder(self.slot(unique))
        task = Task(db.TYPE, b"x", delay=delay, max_retry=max_retry, unique=unique)
        reported: int | None = None
        try:
            if use_async:
                task_id = self.run(partial(self._async_enqueue, task))
            else:
                sync = self.env.sync
                with sync.transaction():
                    sync.execute(db.PIN_CLOCK, {"at": db.instant(self.now)})
                    task_id = sync_enqueue(sync, task)
        except DuplicateTask as ex:
            reported = ex.existing_id
        assert reported == holder, f"{unique}: held by {holder}, reported {reported}"
        if holder is not None:
            event_note("enqueue: a duplicate")
            return multiple()
        self.add(task_id, unique, delay, max_retry)
        return task_id

    async def _async_enqueue(self, task: Task, conn: psycopg.AsyncConnection[Any]) -> int:
        return await self.producer.enqueue(task, conn=conn)

    @rule(
        target=QueueMachine.tasks,
        batch=st.lists(st.one_of(st.none(), UNIQUES), min_size=1, max_size=5),
    )
    def enqueue_unique_batch(self, batch: list[Unique | None]) -> Any:
        """A batch in one statement: plain and unique tasks, duplicates inside it too."""
        tasks = [Task(db.TYPE, b"x", unique=u) for u in batch]
        sync = self.env.sync
        with sync.transaction():
            sync.execute(db.PIN_CLOCK, {"at": db.instant(self.now)})
            ids = sync_enqueue_many(sync, tasks)
        new: list[int] = []
        for task_id, unique in zip(ids, batch, strict=True):
            if unique is not None and self.holder(self.slot(unique)) is not None:
                assert task_id is None, f"{unique} is held: it should have been skipped"
                event_note("batch: a duplicate skipped")
                continue
            assert task_id is not None
            assert not new or task_id > new[-1], "ids follow the input order"
            new.append(task_id)
            if unique is None:
                assert self.transition(task_id, E.ENQUEUE, self.params(max_retry=3))
                self.idempotency[task_id] = None
                self.budget[task_id] = 3
                self.where[task_id] = Placement(queue="default", type=db.TYPE, priority=0)
            else:
                self.add(task_id, unique, 0.0, None)
        return multiple(*new)

    # --- a consumer ending unique tasks --------------------------------------------------------

    def _due_unique(self) -> bool:
        return any(
            i in self.slots and row.status is S.PENDING and row.blocked_till <= self.now
            for i, row in self.model.items()
        )

    @precondition(_due_unique)
    @rule(kind=st.sampled_from([OutcomeKind.COMPLETE, OutcomeKind.FAIL]))
    def finish(self, kind: OutcomeKind) -> None:
        """Claim the due tasks and end the unique ones at once: the shortcut to tasks that
        left their states (the base machine's claim and report, in one step)."""
        handed = self.claim(ClaimPlan.of({db.TYPE: 10}), 30.0, "consumer-a")
        leases = [lease for lease in handed.values if lease.task in self.slots]
        self.report([(lease, kind, 0.0) for lease in leases])

    # --- the operator's moves into a unique task's states ----------------------------------

    def blocked(self, task: int, event: Event) -> int | None:
        """The holder that refuses ``event`` on ``task``: the move would put the task into
        its unique states while another task holds its slot; None if nothing refuses."""
        row = self.model.get(task)
        if task not in self.slots or row is None or event is E.DELETE:
            return None
        try:
            after = apply(row, event, self.params())
        except Exception:
            return None  # the state table refuses it first
        slot, mask = self.slots[task]
        if after is None or is_live(row.status, mask) or not is_live(after.status, mask):
            return None
        return self.holder(slot, but=task)

    @rule(task=QueueMachine.tasks, event=st.sampled_from([E.CANCEL, E.MANUAL_RETRY, E.DELETE]))
    def manage(self, task: int, event: Event) -> None:
        holder = self.blocked(task, event)
        if holder is None:
            super().manage(task, event)
            return
        method = {E.CANCEL: self.env.client.cancel_task, E.MANUAL_RETRY: self.env.client.retry_task}
        before = db.read_rows_sync(self.env.sync)[task]
        with pytest.raises(DuplicateTask) as refused:
            self.run(lambda c: method[event](task, conn=c))
        assert refused.value.existing_id == holder
        event_note(f"{event.value} refused: the key is held")
        assert db.read_rows_sync(self.env.sync)[task] == before

    def _ended_unique(self) -> list[int]:
        return sorted(
            i
            for i, row in self.model.items()
            if i in self.slots and row.status in (S.FAILED, S.CANCELLED)
        )

    @precondition(lambda self: bool(self._ended_unique()))
    @rule(data=st.data(), event=st.sampled_from([E.MANUAL_RETRY, E.CANCEL]))
    def manage_ended_unique(self, data: st.DataObject, event: Event) -> None:
        """`manage` aimed at the tasks whose moves a held slot can refuse."""
        self.manage(data.draw(st.sampled_from(self._ended_unique())), event)

    @precondition(lambda self: self._with(S.FAILED))
    @rule(event=st.sampled_from([E.MANUAL_RETRY, E.DELETE]))
    def manage_failed(self, event: Event) -> None:
        if event is E.DELETE:
            super().manage_failed(event)
            return
        failed = sorted(i for i, row in self.model.items() if row.status is S.FAILED)
        eligible = [i for i in failed if self.retryable(i, failed)]
        count = self.run(lambda c: self.env.client.retry_failed(conn=c))
        assert count == len(eligible)
        if len(eligible) < len(failed):
            event_note("retry_failed: a unique task left failed")
        for i in eligible:
            before = self.model[i]
            assert self.transition(i, E.MANUAL_RETRY, self.params())
            self.budget[i] += self.model[i].attempts_left - before.attempts_left

    def retryable(self, task: int, failed: list[int]) -> bool:
        """Whether a bulk retry re-queues failed ``task``: not unique, or it holds its slot
        as failed, or no one holds it and no older failed task has the same slot."""
        if task not in self.slots:
            return True
        slot, mask = self.slots[task]
        if is_live(S.FAILED, mask):
            return True
        twins = [i for i in failed if i < task and i in self.slots and self.slots[i][0] == slot]
        return self.holder(slot, but=task) is None and not twins

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def one_holder_per_slot(self) -> None:
        sync = self.env.sync
        assert sync.execute(DOUBLE_HOLDERS).fetchall() == []
        stored = {r[0]: ((r[1], r[2]), r[3]) for r in sync.execute(SLOT_OF_TASK).fetchall()}
        assert stored == {i: s for i, s in self.slots.items() if i in self.model}


def test_uniqueness_holds_in_every_reachable_state(dsn: str) -> None:
    with (
        start_blocking_portal("trio") as portal,
        psycopg.connect(dsn, autocommit=True, options=NO_FSYNC) as sync,
    ):
        conn = portal.call(partial(connect, dsn, options=NO_FSYNC))
        client = Client(dsn)  # every call passes conn=; its lazy pool never connects
        try:
            portal.call(db.make_leader, conn)
            env = Env(portal, conn, sync, client)

            class OnThisDatabase(UniqueMachine):
                def __init__(self) -> None:
                    super().__init__(env)

            run_state_machine_as_test(OnThisDatabase, settings=SETTINGS)
        finally:
            portal.call(client.aclose)
            portal.call(conn.close)
