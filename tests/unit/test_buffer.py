"""A type's lease buffer: most urgent first across sends, first come among equals, bounded,
and nothing lost to a cancelled receive or a close."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
import trio

from asynqpg_trio._consumer._buffer import LeaseReceiver, LeaseSender, open_lease_buffer
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._task import TaskInfo

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def lease(task_id: int, priority: int | None) -> Lease:
    """A lease of priority ``priority`` (None: no task info, as some tests build them)."""
    if priority is None:
        return Lease(task_id, 1, "t")
    info = TaskInfo(task_id, "t", b"", None, 1, 0, EPOCH, EPOCH, (), "default", priority)
    return Lease(task_id, 1, "t", info)


async def test_the_most_urgent_lease_comes_first_whenever_it_was_sent() -> None:
    send, receive = open_lease_buffer(10)
    with send, receive:
        await urgent_first(send, receive)


async def urgent_first(send: LeaseSender, receive: LeaseReceiver) -> None:
    for task_id, priority in [(1, 0), (2, -5), (3, 0), (4, None)]:
        send.send_nowait(lease(task_id, priority))
    assert receive.receive_nowait().task_id == 1  # equals: first sent, first out
    # An urgent task claimed later overtakes everything still waiting.
    send.send_nowait(lease(5, 5))
    got = [receive.receive_nowait().task_id for _ in range(4)]
    assert got == [5, 3, 4, 2]  # no info counts as priority 0, after 3 which came first
    with pytest.raises(anyio.WouldBlock):
        receive.receive_nowait()


async def test_a_full_buffer_refuses_and_keeps_nothing() -> None:
    send, receive = open_lease_buffer(1)
    with send, receive:
        await full(send, receive)


async def full(send: LeaseSender, receive: LeaseReceiver) -> None:
    send.send_nowait(lease(1, 0))
    with pytest.raises(anyio.WouldBlock):
        send.send_nowait(lease(2, 5))
    assert receive.receive_nowait().task_id == 1
    with pytest.raises(anyio.WouldBlock):
        receive.receive_nowait()


async def test_a_cancelled_receive_takes_nothing_and_close_ends_after_the_drain() -> None:
    send, receive = open_lease_buffer(4)
    with send, receive, receive.clone() as other:
        await cancelled_then_closed(send, receive, other)


async def cancelled_then_closed(
    send: LeaseSender, receive: LeaseReceiver, other: LeaseReceiver
) -> None:
    with trio.move_on_after(0.01):
        await receive.receive()  # nothing sent yet: cancelled while waiting
    send.send_nowait(lease(1, 0))
    send.send_nowait(lease(2, 1))
    send.close()
    assert (await other.receive()).task_id == 2
    assert (await receive.receive()).task_id == 1
    for end in (receive, other):
        with pytest.raises(anyio.EndOfStream):
            await end.receive()


async def test_waiting_receivers_get_every_lease_once() -> None:
    send, receive = open_lease_buffer(8)
    got: list[int] = []

    async def actor() -> None:
        async with receive.clone() as mine:
            while True:
                try:
                    got.append((await mine.receive()).task_id)
                except anyio.EndOfStream:
                    return

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(actor)
        for task_id in range(20):
            while True:
                try:
                    send.send_nowait(lease(task_id, task_id % 3))
                    break
                except anyio.WouldBlock:
                    await trio.sleep(0)
        send.close()
        receive.close()
    assert sorted(got) == list(range(20))
