"""Helpers for the dashboard tests: rows in any status, an HTTP client for the app, a fake
OAuth provider, and the dashboard command run as a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import trio

from asynqpg_trio import Pool
from asynqpg_trio.web import AuthenticationFailed, User, create_app

SyncConn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parent.parent.parent


def make(
    sync_conn: SyncConn,
    status: str = "pending",
    *,
    type: str = "t",
    payload: bytes = b'{"n": 1}',
    messages: tuple[str, ...] = (),
    created_at: str = "asynqpg_now()",
    queue: str = "default",
    priority: int = 0,
) -> int:
    """Insert a task in any status with consistent columns; return its id."""
    running = status == "running"
    final = status in ("completed", "failed", "cancelled")
    row = sync_conn.execute(
        f"""INSERT INTO asynqpg_tasks (type, payload, status, messages, blocked_till,
               attempts_left, attempts_elapsed, created_at, finalized_at, attempted_at,
               lease_token, lease_owner, queue, priority)
           VALUES (%s, %s, %s, %s, asynqpg_now(), %s, %s, {created_at},
               CASE WHEN %s THEN asynqpg_now() END,
               CASE WHEN %s THEN asynqpg_now() END,
               CASE WHEN %s THEN nextval('asynqpg_lease_token_seq') END,
               CASE WHEN %s THEN 'consumer-1' END, %s, %s)
           RETURNING id""",
        (
            type,
            payload,
            status,
            list(messages),
            0 if status in ("failed", "completed") else 2,
            0 if status == "pending" else 1,
            final,
            status != "pending",
            running,
            running,
            queue,
            priority,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(sync_conn: SyncConn, task_id: int) -> str | None:
    row = sync_conn.execute("SELECT status FROM asynqpg_tasks WHERE id = %s", (task_id,)).fetchone()
    return None if row is None else str(row[0])


@asynccontextmanager
async def dashboard_client(
    pool: Pool | str, *, auth_header: tuple[str, str] | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``create_app(pool, **options)`` in process (ASGI)."""
    app = create_app(pool, **options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://dash.test", auth=auth_header
    ) as http:
        yield http


async def csrf_token(http: httpx.AsyncClient, base: str = "") -> str:
    """The session's CSRF token (the client keeps the session cookie)."""
    answer = await http.get(f"{base}/api/csrf")
    assert answer.status_code == 200, answer.text
    token = answer.json()["data"]["token"]
    assert isinstance(token, str)
    return token


def error_of(answer: httpx.Response) -> tuple[int, str, str]:
    """(status, error code, message) of an enveloped failure."""
    body = answer.json()
    assert body["data"] is None
    return answer.status_code, body["error"]["code"], body["error"]["message"]


@dataclass
class FakeProvider:
    """An OAuth provider that knows a fixed set of codes; no network."""

    users: Mapping[str, User] = field(default_factory=dict)
    id: str = "fake"
    name: str = "Fake"
    icon_url: str | None = None
    callbacks: list[str] = field(default_factory=list)

    def authorization_url(self, *, callback_url: str, state: str) -> str:
        query = urlencode({"redirect_uri": callback_url, "state": state})
        return f"https://provider.test/authorize?{query}"

    async def complete(self, *, callback_url: str, params: Mapping[str, str]) -> User:
        await trio.lowlevel.checkpoint()
        self.callbacks.append(callback_url)
        user = self.users.get(params.get("code", ""))
        if user is None:
            raise AuthenticationFailed("the provider refused the code <script>x</script>")
        return user


@contextmanager
def dashboard_process(dsn: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run the dashboard command on a free port; yield (its URL with the prefix, process).

    On exit the process gets SIGTERM and must stop by itself, with status 0.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynqpg_trio._cli._web", "--dsn", dsn, "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    drain = None
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"dashboard listening on (\S+)", line)
            if found:
                url = found[1]
                break
        if url is None:
            raise AssertionError(f"the dashboard did not start:\n{''.join(lines)}")
        drain = threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True)
        drain.start()
        yield url, proc
    finally:
        proc.terminate()
        status = proc.wait(timeout=15)
        if drain is not None:
            drain.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
    assert status == 0, "".join(lines)
