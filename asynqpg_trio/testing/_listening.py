"""The fake's LISTEN connection: notices from a memory channel, claims by the fake."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .._core._pacing import ClaimPlan
    from .._core._rows import ClaimedTask, Notice
    from ._fake import FakeDatabase

__all__ = ["FakeListening"]


class FakeListening:
    """The fake's LISTEN connection (a `Listening`): notices from a memory channel; claims go
    to the fake's `FakeDatabase.claim`."""

    def __init__(self, db: FakeDatabase, notices: MemoryObjectReceiveStream[Notice]) -> None:
        self._db, self._notices = db, notices

    def __aiter__(self) -> FakeListening:
        """This object: it is its own iterator."""
        return self

    async def __anext__(self) -> Notice:
        """The next notice.  Cancellation: a checkpoint."""
        try:
            return await self._notices.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def claim(
        self,
        plan: ClaimPlan,
        *,
        owner: str,
        lease: float,
        takeover_message: str,
        exhausted_message: str,
        grace: float,
    ) -> list[ClaimedTask]:
        """`FakeDatabase.claim`."""
        return await self._db.claim(
            plan,
            owner=owner,
            lease=lease,
            takeover_message=takeover_message,
            exhausted_message=exhausted_message,
            grace=grace,
        )
