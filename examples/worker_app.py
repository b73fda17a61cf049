"""Handlers for `asynqpg-trio worker examples.worker_app:handlers`."""

from __future__ import annotations

from asynqpg_trio import Handler, TaskInfo


async def greet(task: TaskInfo) -> None:
    print(f"hello, {task.payload.decode()}!", flush=True)


handlers = {"greet": Handler(greet, workers=2)}
