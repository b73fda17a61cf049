"""The lease keeper: renews the leases this consumer holds and notices lost ones.

Theory of operation
-------------------
Every ``cancel_check_interval`` it asks which held leases are no longer ours (the task was
cancelled by a client, deleted, or taken over) and cancels their handlers: this is the
periodic check behind the listener's ``asynqpg_cancel`` notifications, which may be lost.
Every third of the lease duration it renews all held leases in one batched, fenced UPDATE;
the leases the UPDATE did not find are lost too (one more query then asks what became of
them).  A live consumer therefore never has a task taken over, however long its handler runs.

A lease lost while its handler ran, other than by a client's cancel, means this consumer
failed to renew it in time: its event loop was blocked for longer than the lease (see the
watchdog) or it was cut off from the database.  Each is logged as a warning with the task and
counted (``leases_lost``, and the ``asynqpg.tasks.leases_lost`` counter).

The consumer registry rides on the same loop (no actor of its own): given a registry, the
keeper registers the consumer when it starts, sends a heartbeat (with the number of tasks
held) every renewal period whether or not it holds leases, registers again when its row was
aged out, and deletes the row when it is cancelled: at the end of a graceful shutdown (the
keeper is among the last services to stop), shielded and bounded by `DEREGISTER_GRACE`.  A
failed heartbeat is a transient database error like any other (the keeper is restarted);
a consumer killed outright leaves its row to age out.

Cancellation: stops between statements; leases it did not renew expire on their own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from .._core._book import Lease
    from .._core._consumers import Registration, RegistryRepository
    from .._core._rows import LostLease, TasksRepository

__all__ = ["DEREGISTER_GRACE", "report_lost", "run_lease_keeper"]

logger = logging.getLogger("asynqpg_trio.leases")

#: Seconds the keeper may spend deleting its registry row once cancelled.
DEREGISTER_GRACE = 2.0


class KeeperSettings(Protocol):
    """The lease keeper's settings (`ConsumerConfig` is one)."""

    @property
    def lease_duration(self) -> float: ...
    @property
    def cancel_check_interval(self) -> float: ...


class KeeperBook(Protocol):
    """What the lease keeper uses of the lease book."""

    def snapshot(self) -> tuple[list[int], list[int]]: ...
    def mark_lost(self, task_ids: list[int]) -> list[Lease]: ...


class KeeperCounters(Protocol):
    """What the lease keeper counts."""

    leases_lost: int


class LostTelemetry(Protocol):
    """The metric of leases lost."""

    def lease_lost(self, task_type: str) -> None: ...


async def run_lease_keeper(
    settings: KeeperSettings,
    tasks: TasksRepository,
    book: KeeperBook,
    counters: KeeperCounters,
    telemetry: LostTelemetry,
    registry: RegistryRepository | None = None,
    registration: Registration | None = None,
) -> None:
    """Renew and check leases until cancelled; keep the consumer's registry row when given
    ``registry`` and ``registration`` (whose ``heartbeat_every`` is the renewal period).

    Cancellation: a checkpoint; stops between statements, then deletes the registry row
    (shielded, at most `DEREGISTER_GRACE` seconds).
    """
    if registry is None or registration is None:
        await _keep_leases(settings, tasks, book, counters, telemetry, None)
        return
    await registry.register(registration, len(book.snapshot()[0]))
    try:
        await _keep_leases(settings, tasks, book, counters, telemetry, (registry, registration))
    except anyio.get_cancelled_exc_class():
        with anyio.move_on_after(DEREGISTER_GRACE, shield=True):
            try:
                await registry.deregister(registration.consumer_id)
            except Exception:
                logger.warning(
                    "could not remove consumer %s from the registry: its row ages out",
                    registration.consumer_id,
                    exc_info=True,
                )
        raise


async def _keep_leases(
    settings: KeeperSettings,
    tasks: TasksRepository,
    book: KeeperBook,
    counters: KeeperCounters,
    telemetry: LostTelemetry,
    registered: tuple[RegistryRepository, Registration] | None,
) -> None:
    lease_duration = settings.lease_duration
    renew_every = lease_duration / 3
    last_renewal = last_beat = anyio.current_time()
    while True:
        await anyio.sleep(min(settings.cancel_check_interval, renew_every))
        ids, tokens = book.snapshot()
        if registered is not None and anyio.current_time() - last_beat >= renew_every * 0.9:
            last_beat = anyio.current_time()
            registry, registration = registered
            if not await registry.heartbeat(registration.consumer_id, len(ids)):
                await registry.register(registration, len(ids))
        if not ids:
            last_renewal = anyio.current_time()
            continue
        if anyio.current_time() - last_renewal >= renew_every * 0.9:
            started = anyio.current_time()
            held = await tasks.extend_leases(ids, tokens, lease_duration)
            last_renewal = started
            missing = [(i, t) for i, t in zip(ids, tokens, strict=True) if i not in held]
            lost = []
            if missing:
                lost = await tasks.lost_leases([i for i, _ in missing], [t for _, t in missing])
        else:
            lost = await tasks.lost_leases(ids, tokens)
        report_lost(book, counters, telemetry, lost, lease_duration)


def report_lost(
    book: KeeperBook,
    counters: KeeperCounters,
    telemetry: LostTelemetry,
    lost: list[LostLease],
    lease_duration: float,
) -> None:
    """Mark ``lost`` leases lost (cancelling their handlers); warn about and count those
    lost while their handler ran other than by a client's cancel."""
    if not lost:
        return
    running = {lease.task_id: lease for lease in book.mark_lost([x.task_id for x in lost])}
    for fate in lost:
        lease = running.get(fate.task_id)
        if lease is None or fate.status == "cancelled":
            continue
        counters.leases_lost += 1
        telemetry.lease_lost(lease.type)
        if fate.status is None:
            what = "the task was deleted"
        elif fate.status == "running":
            what = f"taken over by consumer {fate.owner or '(unknown)'}"
        else:
            what = f"the task is {fate.status} now (rescued, or finished elsewhere)"
        logger.warning(
            "lease of task %d (%r) lost while its handler ran: %s; the handler is cancelled."
            " A lease is lost when it is not renewed within lease_duration (%g s): an event"
            " loop blocked that long, or no database connection",
            lease.task_id,
            lease.type,
            what,
            lease_duration,
        )
