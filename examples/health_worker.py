"""A worker with an HTTP health endpoint, for a container's liveness and readiness probes.

Run: python examples/health_worker.py DSN [--port 8081]   (or set ASYNQPG_DSN)

``GET /healthz`` answers 200 with the consumer's statistics as JSON while it runs (an answer
at all shows that the event loop runs), and 503 once it is shutting down, so that a load
balancer or an orchestrator stops counting on it.  SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal

import trio

from asynqpg_trio import Consumer, TaskInfo, open_consumer


async def work(task: TaskInfo) -> None:
    await trio.sleep(float(task.payload))  # seconds of work
    print(f"worked {task.payload.decode()} s (task {task.id})", flush=True)


# --8<-- [start:health]
async def serve_health(
    consumer: Consumer,
    stopping: trio.Event,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP request with the consumer's health; report the port once listening."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)  # the request: any path, any method
            if stopping.is_set():
                status, body = "503 Service Unavailable", {"status": "stopping"}
            else:
                stats = dataclasses.asdict(consumer.statistics())
                status, body = "200 OK", {"status": "ok", "statistics": stats}
            data = json.dumps(body).encode()
            head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            await stream.send_all(head.encode() + data)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def main(dsn: str, port: int) -> None:
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:  # the health server outlives the consumer
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_consumer(dsn, handlers={"work": work}) as consumer:
                bound = await nursery.start(serve_health, consumer, stopping, port)
                print(f"health on http://127.0.0.1:{bound}/healthz", flush=True)
                async for _ in signals:
                    break
                stopping.set()  # from now on the probe answers 503...
            # ...while leaving the block shuts the consumer down gracefully
        nursery.cancel_scope.cancel()
    print("stopped", flush=True)


# --8<-- [end:health]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("ASYNQPG_DSN"))
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    trio.run(main, args.dsn, args.port)
