"""The pool-owning lifecycle `Client` and `Producer` share.

Both take a pool or a DSN.  Given a pool, they borrow it and never close it; given a DSN, they
make a small lazy pool of their own (`_pg._pool.pool_for`: no task needed, so the constructor
stays synchronous) and close it in `aclose`, which ``async with`` calls on the way out.
`pool_of` hands the pool to code inside the package that needs it beside its owner (the
dashboard's health check) without making it an attribute of the public classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._pg._pool import Pool, pool_for

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["PoolOwner", "pool_of"]


class PoolOwner:
    """A pool-or-DSN holder usable as ``async with``; `aclose` closes only a pool it made."""

    def __init__(self, pool_or_dsn: Pool | str) -> None:
        self._pool, self._owns_pool = pool_for(pool_or_dsn)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool this object made for itself, if it made one (a DSN was given);
        a pool that was passed in stays open.

        Cancellation: not a checkpoint.
        """
        if self._owns_pool:
            self._pool.close()


def pool_of(owner: PoolOwner) -> Pool:
    """The pool ``owner`` runs on (borrowed or its own; `PoolOwner.aclose` decides which it
    closes)."""
    return owner._pool
