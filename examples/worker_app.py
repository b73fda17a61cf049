"""Handlers for `asynqpg-trio worker examples.worker_app:handlers`.

``greet`` is async and runs on the event loop; ``count_words`` is a plain function, so the
worker runs it in a thread (blocking code is fine there).  Their test,
``tests/test_examples_and_runtime.py``, runs them with `asynqpg_trio.testing.open_harness`.
"""

from __future__ import annotations

from asynqpg_trio import Handler, SkipRetry, TaskInfo


async def greet(task: TaskInfo) -> None:
    print(f"hello, {task.payload.decode()}!", flush=True)


def count_words(task: TaskInfo) -> None:
    if not task.payload.strip():
        raise SkipRetry("nothing to count")
    print(f"{len(task.payload.split())} words in task {task.id}", flush=True)


handlers = {"greet": Handler(greet, workers=2), "words.count": Handler(count_words, threads=2)}
