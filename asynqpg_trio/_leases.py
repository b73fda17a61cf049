"""The lease keeper: renews the leases this consumer holds and notices lost ones.

Theory of operation
-------------------
Every ``cancel_check_interval`` it asks which held leases are no longer ours (the task was
cancelled by a client, deleted, or taken over) and cancels their handlers: this is the
periodic check behind the listener's ``asynqpg_cancel`` notifications, which may be lost.
Every third of the lease duration it renews all held leases in one batched, fenced UPDATE;
the leases the UPDATE did not find are lost too.  A live consumer therefore never has a task
taken over, however long its handler runs.

Cancellation: stops between statements; leases it did not renew expire on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from . import _repository as repo

if TYPE_CHECKING:
    from ._context import Runtime

__all__ = ["run_lease_keeper"]


async def run_lease_keeper(rt: Runtime) -> None:
    """Renew and check leases until cancelled."""
    renew_every = rt.config.lease_duration / 3
    last_renewal = anyio.current_time()
    while True:
        await anyio.sleep(min(rt.config.cancel_check_interval, renew_every))
        ids, tokens = rt.book.snapshot()
        if not ids:
            last_renewal = anyio.current_time()
            continue
        async with rt.pool.connection() as conn:
            if anyio.current_time() - last_renewal >= renew_every * 0.9:
                started = anyio.current_time()
                held = await repo.extend_leases(conn, ids, tokens, rt.config.lease_duration)
                last_renewal = started
                lost = [i for i in ids if i not in held]
            else:
                lost = await repo.lost_leases(conn, ids, tokens)
        rt.book.mark_lost(lost)
