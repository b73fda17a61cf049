import os
import signal
import sys

import trio

import asynqpg_trio
from asynqpg_trio import Handler, Producer, SkipRetry, Task, TaskInfo, open_consumer, open_pool


async def send_email(task: TaskInfo) -> None:
    if not task.payload:
        raise SkipRetry("empty payload")  # fail now, no retry
    print(f"processed task {task.id}: {task.payload.decode()}")
    # returning = completed; any other error = retried later


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)  # safe to run from many processes
    async with open_pool(dsn, max_size=10) as pool:
        async with pool.connection() as conn, conn.transaction():
            # your own writes on conn here commit (or roll back) together with the task
            task = Task("email.send", b'{"to": "ann@example.com"}')
            task_id = await Producer(pool).enqueue(task, conn=conn)
        print(f"enqueued task {task_id}")
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            handlers = {"email.send": Handler(send_email, workers=10)}
            async with open_consumer(pool, handlers=handlers):
                print("consumer running; Ctrl-C to stop")
                async for _ in interrupts:
                    break  # leaving the block shuts down gracefully
    print("stopped")


if __name__ == "__main__":
    if not os.environ.get("ASYNQPG_DSN"):
        sys.exit("set ASYNQPG_DSN, e.g. ASYNQPG_DSN=postgresql://localhost/mydb")
    trio.run(main, os.environ["ASYNQPG_DSN"])
