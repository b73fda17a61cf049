"""The fetcher: claims ready tasks for every registered type in one round trip per cycle.

Theory of operation
-------------------
Each cycle asks, per type, for as many tasks as it has free capacity (its workers plus its
prefetch buffer, minus what it already holds; with the default ``prefetch=None`` the buffer
adapts to the type's backlog and its handlers' speed, see `_core._adaptive`), but only when at
least half that capacity is free or the type holds nothing, from each queue the consumer
serves, within the queue's own cap if it has one (the pure `_core._pacing.plan_claim` decides):
claims come in batches rather than one per finished task.  One ``claim`` statement serves all
(queue, type) pairs (``FOR NO KEY UPDATE SKIP LOCKED``, larger priority first, then oldest
``blocked_till``, id as tie-breaker), leaves paused queues out and stays within the
cluster-wide limits.  Claimed tasks go into the type's bounded lease buffer (`_buffer`), whose
size is the largest that capacity can be plus `URGENT_ROOM`, so sending never blocks.

When a type got all it asked for, more may be waiting: it is marked backlogged, and a handler
finishing a task of that type wakes the fetcher.  When nothing was left, the fetcher sleeps
until a NOTIFY (from producers, through the listener), the poll interval, or the moment the
earliest delayed task becomes ready, whichever comes first.  When tasks are due but the claim
could not take them (a cluster-wide limit is reached, or other consumers hold them), it looks
again after `BLOCKED_RETRY` seconds (or the poll interval, if shorter).  It asks when that
moment is only when a cycle claimed nothing or the previous deadline has passed: after a claim
that took tasks the query would delay the handlers' start (the server competes for the CPU), and
the previous deadline still covers what was due.

The listener claims too: on a NOTIFY it runs the same plan-claim-dispatch (`Claimer`) on its
own LISTEN connection, at once, which saves the hop to the fetcher and a pool checkout on the
path from an enqueue to the handler's start.  One claim runs at a time (the claimer's lock; a
NOTIFY during the fetcher's claim just wakes the fetcher, as before); a listener claim that got
all it asked for marks its types backlogged and wakes the fetcher, which goes on.  While any
type is backlogged the listener leaves regular claims to the fetcher (which claims again as
soon as there is room anyway): a claim of hundreds of rows on its connection would keep the
notices behind it, an urgent task's or a cancel, waiting.  Claims are
dispatched only while the work runs: `Claimer.close` (at the work's end, after the fetcher is
cancelled) waits for a claim in flight, then closes the lease channels, and the listener claims
no more.  A lost LISTEN connection fails only the listener's claim (the supervisor restarts
the listener; a claim the server committed but whose reply was lost leaves its tasks running
until their leases expire, as for the fetcher).

Priorities inside the consumer: the lease buffers hand out the most urgent task first
(`_buffer`), and our producers' NOTIFYs say the most urgent priority they made ready.  When
that is above what the consumer's last claim brought, the next claim is eager (it takes
whatever room there is, not half the capacity) and a small urgent claim goes at once on the
listener's connection, beside the fetcher's claim if one is in flight (`URGENT_ROOM` per type
beyond the capacity, nothing below the announced priority; the lease buffers are that much
larger).  So an urgent task waits for one small claim, not for a large one and the buffer.

Cancellation: the fetcher stops between statements.  A claim is not cancelled once sent (it
is shielded for up to `CLAIM_GRACE` seconds): a claim the server has committed leases its
tasks to this consumer, so its reply must reach the handler actors, which release the tasks
at once when the consumer is stopping.  Closing its send channels on exit tells the handler
actors no more work comes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import anyio

from .._core._book import Lease
from .._core._pacing import plan_claim
from .._core._task import TaskInfo

if TYPE_CHECKING:
    from .._core._pacing import ClaimPlan
    from .._core._rows import ClaimedTask, TasksRepository

__all__ = ["BLOCKED_RETRY", "CLAIM_GRACE", "Claimer", "plan_claim", "run_fetcher"]

logger = logging.getLogger("asynqpg_trio.fetcher")


class FetchSettings(Protocol):
    """The fetcher's settings (`ConsumerConfig` is one)."""

    @property
    def consumer_id(self) -> str: ...
    @property
    def lease_duration(self) -> float: ...
    @property
    def poll_interval(self) -> float: ...
    @property
    def queues(self) -> Mapping[str, int | None]: ...
    def capacity(self, task_type: str, mean: float | None, *, backlogged: bool) -> int: ...
    def limit(self, task_type: str) -> int: ...


class LeaseSink(Protocol):
    """Where a type's claimed leases go (`_buffer.LeaseSender`, or a memory channel)."""

    def send_nowait(self, lease: Lease, /) -> None: ...
    def close(self) -> None: ...


class FetchBook(Protocol):
    """What the fetcher uses of the lease book."""

    @property
    def busy(self) -> Mapping[str, int]: ...
    @property
    def busy_queues(self) -> Mapping[str, int]: ...
    @property
    def durations(self) -> Mapping[str, float]: ...
    def add(self, lease: Lease) -> None: ...


class FetchWakeup(Protocol):
    """The fetcher's wake-up, and where it marks the types it should ask more of."""

    backlogged: set[str]

    def kick(self) -> None: ...
    async def wait(self, deadline: float) -> None: ...


class FetchCounters(Protocol):
    """What the fetcher counts."""

    claimed: int
    lease_takeovers: int
    takeover_failures: int


class TakeoverTelemetry(Protocol):
    """The metric of lease takeovers."""

    def lease_takeover(self, task_type: str) -> None: ...


#: The longest a claim may delay a stop (it is shielded from cancellation; see run_fetcher).
CLAIM_GRACE = 5.0
#: Seconds before looking again when due tasks could not be claimed (limits, other consumers).
BLOCKED_RETRY = 0.05
#: The most tasks per type an urgent claim (`Claimer.on_notify`) takes beyond the type's
#: capacity; each type's lease buffer has this much room besides its `limit`.
URGENT_ROOM = 4
TAKEOVER_MESSAGE = "lease expired: the consumer running this attempt stopped renewing its lease"
EXHAUSTED_MESSAGE = TAKEOVER_MESSAGE + "; no attempt left"


class ClaimFn(Protocol):
    """A claim statement on some connection (`TasksRepository.claim`, `Listening.claim`)."""

    async def __call__(
        self,
        plan: ClaimPlan,
        *,
        owner: str,
        lease: float,
        takeover_message: str,
        exhausted_message: str,
        grace: float,
    ) -> list[ClaimedTask]: ...


class Claimer:
    """Plans a claim, sends it, dispatches its rows: shared by the fetcher and the listener,
    one claim at a time (``lock``), and only while the work runs (`open` .. `close`).

    The listener claims on its own connection at once when a NOTIFY arrives (`on_notify`), the
    wake-up's hop to the fetcher and a pool checkout saved; when the fetcher is claiming
    already, or the consumer is draining a backlog, it kicks the fetcher instead.
    """

    settings: FetchSettings
    book: FetchBook
    wakeup: FetchWakeup
    counters: FetchCounters
    telemetry: TakeoverTelemetry
    lock: anyio.Lock
    sends: Mapping[str, LeaseSink]
    is_open: bool
    #: Each type's capacity as of the last claim.
    limits: dict[str, int]
    #: An urgent task was announced: the next claim takes whatever room there is.
    eager: bool
    #: The least urgent priority the last regular claim that got rows brought (None: none
    #: yet); urgent claims leave it alone.
    least_urgent: int | None
    #: What the claim in flight may bring, per type and per capped queue.
    inflight: dict[str, int]
    inflight_queues: dict[str, int]
    #: One urgent claim at a time, beside the fetcher's.
    urgent_lock: anyio.Lock

    def __init__(
        self,
        settings: FetchSettings,
        book: FetchBook,
        wakeup: FetchWakeup,
        counters: FetchCounters,
        telemetry: TakeoverTelemetry,
    ) -> None:
        self.settings, self.book, self.wakeup = settings, book, wakeup
        self.counters, self.telemetry = counters, telemetry
        # Uncontended, taking either lock is no checkpoint: on the way from a NOTIFY to a
        # claim every trip through the scheduler waits behind every runnable handler.
        self.lock = anyio.Lock(fast_acquire=True)
        self.sends = {}
        self.is_open = False
        self.limits = {}
        self.eager = False
        self.least_urgent = None
        self.inflight, self.inflight_queues = {}, {}
        self.urgent_lock = anyio.Lock(fast_acquire=True)

    def open(self, sends: Mapping[str, LeaseSink]) -> None:
        """The work runs: claims may be dispatched to ``sends``."""
        self.sends, self.is_open = sends, True

    async def close(self) -> None:
        """No claim from now on (waits for one in flight, shielded: bounded by its grace),
        then close the lease channels: the handler actors drain and exit."""
        with anyio.CancelScope(shield=True):
            async with self.lock, self.urgent_lock:
                self.is_open = False
                for send in self.sends.values():
                    send.close()

    def running(self) -> bool:
        """Whether claims may be dispatched (between `open` and `close`)."""
        return self.is_open

    def _holds_less_urgent(self, priority: int) -> bool:
        """Whether this consumer works on tasks less urgent than ``priority``: its last claim
        that got rows brought some (cheap, and what working through a backlog looks like,
        whether they still wait in its buffers or it is claiming the next ones)."""
        return self.least_urgent is not None and priority > self.least_urgent

    def _fetcher_at_work(self) -> bool:
        """Whether the fetcher is claiming, or draining a backlog (it claims again as soon as
        there is room): then a NOTIFY needs no regular claim of the listener's."""
        return self.lock.locked() or bool(self.wakeup.backlogged)

    def _got(self, rows: list[ClaimedTask]) -> None:
        if rows:
            self.least_urgent = min(row.priority for row in rows)

    async def claim(self, claim: ClaimFn) -> tuple[ClaimPlan, dict[str, int]]:
        """Plan, claim and dispatch once; the caller holds ``lock`` and checked `is_open`.
        Returns the plan and how many rows each type got."""
        settings, busy, durations = self.settings, self.book.busy, self.book.durations
        backlog = self.wakeup.backlogged
        # Each type's capacity now: adaptive unless prefetch is fixed (`_core._adaptive`).
        limits = self.limits = {
            t: settings.capacity(t, durations.get(t), backlogged=t in backlog) for t in self.sends
        }
        free = {t: n - busy.get(t, 0) for t, n in limits.items()}
        plan = plan_claim(
            free, busy, limits, settings.queues, self.book.busy_queues, eager=self.eager
        )
        got: dict[str, int] = {}
        if plan.pairs:
            self.eager = False  # this claim takes the most urgent first
            self.inflight = {t: plan.wanted_of(t) for t in plan.type_room}
            self.inflight_queues = dict(plan.queue_room)
            try:
                rows = await self._send(claim, plan)
            finally:
                self.inflight, self.inflight_queues = {}, {}
            for row in rows:
                got[row.type] = got.get(row.type, 0) + 1
            self._got(rows)
            _dispatch(self.book, self.counters, self.telemetry, self.sends, rows)
        return plan, got

    async def _send(self, claim: ClaimFn, plan: ClaimPlan) -> list[ClaimedTask]:
        settings = self.settings
        return await claim(
            plan,
            owner=settings.consumer_id,
            lease=settings.lease_duration,
            takeover_message=TAKEOVER_MESSAGE,
            exhausted_message=EXHAUSTED_MESSAGE,
            grace=CLAIM_GRACE,
        )

    async def _claim_urgent(self, claim: ClaimFn, priority: int) -> None:
        """Claim up to `URGENT_ROOM` tasks per type of ``priority`` or more, beside the claim
        in flight, within room that claim cannot fill (at most each type's `limit` plus
        `URGENT_ROOM` held, and no capped queue over its cap)."""
        if self.urgent_lock.locked():
            return  # one at a time: a later urgent task waits for the next claim
        async with self.urgent_lock:
            if not self.running():
                return
            settings, book = self.settings, self.book
            busy = {t: book.busy.get(t, 0) + self.inflight.get(t, 0) for t in self.sends}
            busy_queues = dict(book.busy_queues)
            for queue, n in self.inflight_queues.items():
                busy_queues[queue] = busy_queues.get(queue, 0) + n
            limits = {t: settings.limit(t) + URGENT_ROOM for t in self.sends}
            free = {t: min(URGENT_ROOM, limits[t] - busy[t]) for t in self.sends}
            plan = plan_claim(free, busy, limits, settings.queues, busy_queues, eager=True)
            if not plan.pairs:
                return
            rows = await self._send(claim, replace(plan, min_priority=priority))
            # Not `_got`: these rows are urgent by construction and say nothing of the less
            # urgent work this consumer holds; counted, they made it deaf to the next urgent
            # task until a regular claim came back.
            _dispatch(book, self.counters, self.telemetry, self.sends, rows)

    async def on_notify(self, claim: ClaimFn, priority: int | None = None) -> None:
        """A NOTIFY said tasks are ready: claim them on the listener's connection, unless a
        claim is under way, the consumer is draining a backlog or the work is not running
        (then wake the fetcher, as before).

        ``priority``: the most urgent priority the NOTIFY announced, if it said.  When this
        consumer is busy with less urgent tasks, the next claim (this one, or the fetcher's)
        is eager (it asks for whatever room there is, instead of waiting for half the buffer
        to drain), and first a small urgent claim goes at once (`_claim_urgent`), beside the
        fetcher's if one is in flight: the urgent task overtakes what the lease buffers hold
        (`_buffer`) rather than waiting for a large claim or two.

        Cancellation: a checkpoint; a claim once sent is shielded (see `run_fetcher`).
        """
        if not self.running():
            self.wakeup.kick()
            return
        if priority is not None and self._holds_less_urgent(priority):
            self.eager = True
            if self._fetcher_at_work() or any(self.book.busy.values()):
                # Busy, or holding tasks (idle, the claim below is as quick).
                await self._claim_urgent(claim, priority)
        if self._fetcher_at_work():
            # The fetcher takes it, and the listener goes back to its notices (a large claim
            # here would hold up the next urgent task's or cancel's).
            self.wakeup.kick()
            return
        async with self.lock:
            if not self.running():  # closed while this waited for the lock
                return
            plan, got = await self.claim(claim)
        # A type that got all it asked for may have more waiting: the fetcher goes on.
        full = {t for t in plan.type_room if got.get(t, 0) >= plan.wanted_of(t) > 0}
        if full or not plan.pairs:
            self.wakeup.backlogged |= full
            self.wakeup.kick()


async def run_fetcher(settings: FetchSettings, tasks: TasksRepository, claimer: Claimer) -> None:
    """Claim and dispatch until cancelled.

    Cancellation: a checkpoint between statements; a claim once sent is not cancelled (see the
    module docstring).
    """
    wakeup, busy = claimer.wakeup, claimer.book.busy
    pairs = [(q, t) for q in settings.queues for t in claimer.sends]
    wake_at = -math.inf  # when to look again without a wake-up
    while True:
        await anyio.lowlevel.checkpoint()  # where a stop reaches the fetcher (see below)
        async with claimer.lock:
            plan, got = await claimer.claim(tasks.claim)
        limits = claimer.limits
        # Types that got all they asked for may have more waiting; those that had more
        # waiting but no room to ask now wait for a handler to finish (it wakes the fetcher).
        full = {t for t in plan.type_room if got.get(t, 0) >= plan.wanted_of(t) > 0}
        waiting = {t for t in wakeup.backlogged if plan.wanted_of(t) == 0}
        backlogged = wakeup.backlogged = full | waiting
        if full and any(limits[t] - busy.get(t, 0) > 0 for t in full):
            continue
        now = anyio.current_time()
        if backlogged:
            wake_at = now + settings.poll_interval
        elif not got or wake_at <= now:
            # Idle, or the last deadline passed: ask when the next delayed task is due.  After
            # a claim that took tasks the previous deadline still holds (what was due before
            # it is known; anything newer is found by that poll), which keeps this query off
            # the path from a wake-up to the handlers starting.
            timeout = settings.poll_interval
            ready_in = await tasks.next_ready_in(pairs)
            if ready_in is not None:
                # Due already, yet not claimed: held by a limit or by another consumer.
                wait = ready_in if ready_in > 0 else BLOCKED_RETRY
                timeout = min(timeout, max(wait, 0.001))
            wake_at = anyio.current_time() + timeout
        await wakeup.wait(wake_at)


def _dispatch(
    book: FetchBook,
    counters: FetchCounters,
    telemetry: TakeoverTelemetry,
    sends: Mapping[str, LeaseSink],
    rows: list[ClaimedTask],
) -> None:
    """Put claimed rows in the lease book and on their types' channels (never blocks)."""
    add = book.add
    claimed = 0
    for row in rows:
        task_type = row.type
        if row.taken_over:
            counters.lease_takeovers += 1
            telemetry.lease_takeover(task_type)
        if row.status != "running":
            counters.takeover_failures += 1
            continue
        claimed += 1
        left, elapsed = row.attempts_left, row.attempts_elapsed
        # The stored counters already count this attempt; handlers see the Go library's view.
        info = TaskInfo(
            row.id,
            task_type,
            row.payload,
            row.idempotency_token,
            left + 1,
            elapsed - 1 if elapsed > 0 else 0,
            row.created_at,
            row.attempted_at,
            tuple(row.messages) if row.messages else (),
            row.queue,
            row.priority,
        )
        token = row.lease_token
        assert token is not None  # a running row holds a lease
        lease = Lease(
            row.id, token, task_type, info, left, elapsed, row.trace_context, queue=row.queue
        )
        add(lease)
        sends[task_type].send_nowait(lease)
    counters.claimed += claimed
