"""FastAPI on asyncio: enqueue from request handlers, process in a consumer beside the app.

asynqpg-trio runs on asyncio through anyio, so the pool, the producer and the consumer live
in the app's lifespan on the server's own event loop: the pool opens at startup, the
consumer (optional: ``asynqpg-trio worker`` can run it in processes of its own instead) runs
until shutdown, when it stops gracefully.

Serve: ASYNQPG_DSN=... hypercorn examples.fastapi_app:app   (any ASGI server on asyncio)
Run once: python examples/fastapi_app.py DSN   (starts the app in-process on anyio's asyncio
backend, signs two users up through HTTP, and waits for their welcome emails)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from fastapi import FastAPI, Request

import asynqpg_trio
from asynqpg_trio import Producer, Task, TaskInfo, open_consumer, open_pool


async def send_welcome(task: TaskInfo) -> None:
    user = json.loads(task.payload)
    await anyio.sleep(0.01)  # pretend to talk to an SMTP server
    print(f"welcome email sent to {user['email']}")


handlers = {"email.welcome": send_welcome}


def create_app(dsn: str | None = None, *, consume: bool = True) -> FastAPI:
    """The app; ``dsn`` defaults to ``$ASYNQPG_DSN``, read at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_pool(dsn or os.environ["ASYNQPG_DSN"], max_size=10) as pool:
            app.state.pool = pool
            app.state.producer = Producer(pool)
            if not consume:
                yield
                return
            async with open_consumer(pool, handlers=handlers, poll_interval=0.5) as consumer:
                app.state.consumer = consumer
                yield  # leaving: the consumer shuts down gracefully, then the pool closes

    app = FastAPI(lifespan=lifespan)

    @app.post("/signup")
    async def signup(email: str, request: Request) -> dict[str, int]:
        pool = request.app.state.pool
        async with pool.connection() as conn, conn.transaction():
            # Your own writes on conn here commit (or roll back) together with the task.
            task = Task("email.welcome", json.dumps({"email": email}).encode())
            task_id = await request.app.state.producer.enqueue(task, conn=conn)
        return {"task_id": task_id}

    return app


app = create_app()


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    demo = create_app(dsn)
    async with demo.router.lifespan_context(demo):  # what the ASGI server does at startup
        transport = httpx.ASGITransport(app=demo)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for email in ("ann@example.com", "bob@example.com"):
                response = await client.post("/signup", params={"email": email})
                print(f"signed up {email}: task {response.json()['task_id']}")
        consumer = demo.state.consumer
        while consumer.statistics().completed < 2:
            await anyio.sleep(0.05)
    print("done")


if __name__ == "__main__":
    anyio.run(
        main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"], backend="asyncio"
    )
