"""The tutorial's worker (docs/tutorial.md): welcome emails, one of which fails once.

Run it from the repository root (or save it as ``tutorial.py`` in your project and name it
``tutorial:worker``):

    asynqpg-trio worker examples.tutorial:worker

then enqueue with ``asynqpg-trio enqueue email.welcome '{"to": "ann@example.com"}'``.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from asynqpg_trio import ConstantRetryPolicy, Handler, SkipRetry, TaskInfo


async def send_welcome(task: TaskInfo) -> None:
    message = json.loads(task.payload)
    address = message.get("to", "")
    if "@" not in address:
        raise SkipRetry(f"invalid address {address!r}")  # fails now: a retry cannot help
    if message.get("fail_first") and task.attempts_elapsed == 0:
        raise ConnectionError("the mail server did not answer")  # fails this attempt only
    await trio.sleep(message.get("seconds", 0))  # sending takes a while
    attempt = task.attempts_elapsed + 1
    print(f"welcome email sent to {address} (task {task.id}, attempt {attempt})", flush=True)


# --8<-- [start:worker]
def worker() -> dict[str, Any]:
    """The worker's options: the handler of each task type, and how failures are retried."""
    return {
        "handlers": {"email.welcome": Handler(send_welcome, workers=4, timeout=60)},
        "retry_policy": ConstantRetryPolicy(5),  # retry 5 s after a failure (default: back-off)
        "shutdown_timeout": 30,  # Ctrl-C: running handlers get 30 s to finish
    }


# --8<-- [end:worker]
