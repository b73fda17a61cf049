"""The dashboard's JSON API against real PostgreSQL: every endpoint, status and error code.

Auth modes, sessions, OAuth and the command line are in test_web_auth.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, quote_from_bytes, urlsplit

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st
from markupsafe import escape

from asynqpg_trio import Pool, open_pool
from asynqpg_trio._api._client import Client
from asynqpg_trio.web import OAuth, User, create_app

from .helpers.web import (
    FakeProvider,
    SyncConn,
    csrf_token,
    dashboard_client,
    error_of,
    make,
    status_of,
)

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
NESTED_CURSOR = base64.urlsafe_b64encode(b"[" * 20_000).decode()


async def test_health_and_config(pool: Pool) -> None:
    async with dashboard_client(pool, prefix="/ops/queue/") as http:
        answer = await http.get("/ops/queue/api/health")
        assert (answer.status_code, answer.json()) == (200, {"data": {"status": "ok"}})
        assert answer.headers["content-type"] == "application/json"
        assert answer.text.endswith("}\n")
        config = (await http.get("/ops/queue/api/config")).json()["data"]
    assert config == {
        "prefix": "/ops/queue",
        "hide_payload_by_default": False,
        "payloads": "show",
        "max_payload_bytes": 1024 * 1024,
        "version": "0.1.0",
        "auth_mode": "none",
        "read_only": False,
    }


async def test_health_failure_uses_the_error_envelope() -> None:
    dead = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"
    async with (
        open_pool(dead, min_size=0, reconnect_timeout=0) as pool,
        dashboard_client(pool) as http,
    ):
        answer = await http.get("/api/health")
    assert error_of(answer) == (503, "database_unreachable", "database unreachable")


async def test_stats_counts_every_status_and_sorts_types(pool: Pool, sync_conn: SyncConn) -> None:
    for task_type, status in [
        ("b", "failed"),
        ("a", "pending"),
        ("a", "pending"),
        ("c", "running"),
    ]:
        make(sync_conn, status, type=task_type)
    async with dashboard_client(pool) as http:
        data = (await http.get("/api/stats")).json()["data"]
        types = (await http.get("/api/task-types")).json()["data"]
        make(sync_conn, type="new")  # no cache: a new type shows at once
        fresher = (await http.get("/api/task-types")).json()["data"]
    assert data["total"] == 4
    assert data["by_status"] == {
        "pending": 2,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert [t["type"] for t in data["by_type"]] == ["a", "b", "c"]
    assert data["by_type"][0]["by_status"] == dict.fromkeys(STATUSES, 0) | {"pending": 2}
    assert data["by_type"][0]["oldest_pending_age"] >= 0
    assert data["by_type"][1]["oldest_pending_age"] is None
    assert data["oldest_pending_age"] == data["by_type"][0]["oldest_pending_age"]
    assert (types, fresher) == (["a", "b", "c"], ["a", "b", "c", "new"])


async def test_empty_queue(pool: Pool) -> None:
    async with dashboard_client(pool) as http:
        stats = (await http.get("/api/stats")).json()["data"]
        types = (await http.get("/api/task-types")).json()["data"]
        tasks = (await http.get("/api/tasks")).json()["data"]
    assert stats == {
        "total": 0,
        "by_status": dict.fromkeys(STATUSES, 0),
        "by_type": [],
        "oldest_pending_age": None,
    }
    assert (types, tasks) == ([], {"tasks": [], "total": 0, "next_cursor": None})


async def test_throughput_counts_finished_tasks_per_minute(pool: Pool, sync_conn: SyncConn) -> None:
    make(sync_conn, "completed")
    make(sync_conn, "completed")
    make(sync_conn, "failed")
    old = make(sync_conn, "completed")
    sync_conn.execute(
        "UPDATE asynqpg_tasks SET finalized_at = asynqpg_now() - interval '20 minutes' "
        "WHERE id = %s",
        (old,),
    )
    async with dashboard_client(pool, throughput_minutes=5) as http:
        data = (await http.get("/api/throughput")).json()["data"]
    assert len(data) == 5
    assert [(m["completed"], m["failed"]) for m in data][-1] == (2, 1)
    assert sum(m["completed"] for m in data) == 2
    minutes = [datetime.fromisoformat(m["minute"]) for m in data]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    with pytest.raises(ValueError, match="1 to 1440"):
        await Client(pool).throughput(0)


async def test_list_filters_order_and_pages(pool: Pool, sync_conn: SyncConn) -> None:
    ids = [
        make(sync_conn, s, type=t) for s, t in [("pending", "a"), ("failed", "b"), ("failed", "a")]
    ]
    ids.append(make(sync_conn, "completed", type="b", created_at="'2020-01-01T00:00:00Z'"))
    async with dashboard_client(pool) as http:

        async def listed(query: str) -> tuple[list[int], int]:
            answer = await http.get(f"/api/tasks{query}")
            assert answer.status_code == 200, answer.text
            data = answer.json()["data"]
            return [t["id"] for t in data["tasks"]], data["total"]

        assert await listed("") == (ids, 4)
        assert await listed("?status=failed") == ([ids[1], ids[2]], 2)
        assert await listed("?status=%20failed%20,pending") == (ids[:3], 3)
        assert await listed("?type=a") == ([ids[0], ids[2]], 2)
        assert await listed("?type=b&status=failed") == ([ids[1]], 1)
        assert await listed(f"?id={ids[3]},{ids[0]}") == ([ids[0], ids[3]], 2)
        assert await listed("?order=desc") == (ids[::-1], 4)
        assert await listed("?order_by=created_at&order=DeSc&limit=1") == ([ids[2]], 4)
        assert await listed("?limit=2&offset=1") == (ids[1:3], 4)
        assert await listed("?limit=999999") == (ids, 4)
        assert await listed("?created_before=2021-01-01T00:00:00Z") == ([ids[3]], 1)
        assert await listed("?created_after=2021-01-01T00:00:00%2B02:00") == (ids[:3], 3)
        page = (await http.get("/api/tasks?limit=2")).json()["data"]
        rest = (await http.get(f"/api/tasks?limit=2&after={page['next_cursor']}")).json()["data"]
        assert [t["id"] for t in rest["tasks"]] == ids[2:]
        item = page["tasks"][0]
    assert "payload" not in item
    assert item["payload_size"] == len(b'{"n": 1}')
    assert set(item) == {
        "id", "type", "status", "idempotency_token", "messages", "blocked_till",
        "attempts_left", "attempts_elapsed", "created_at", "updated_at", "finalized_at",
        "attempted_at", "lease_owner", "payload_size", "queue", "priority",
    }  # fmt: skip
    assert item["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be a positive integer"),
        ("limit=ten", "limit must be a positive integer"),
        ("limit=-1", "limit must be a positive integer"),
        ("offset=-1", "offset must be a non-negative integer"),
        ("offset=x", "offset must be a non-negative integer"),
        ("status=pending,done", "invalid status: done"),
        ("id=1,x", "invalid task id: x"),
        ("id=-3", "invalid task id: -3"),
        ("id=0", "invalid task id: 0"),
        ("id=9223372036854775808", "invalid task id: 9223372036854775808"),
        ("order_by=payload", "invalid order_by field: payload"),
        ("order=up", "order must be ASC or DESC"),
        ("created_after=yesterday", "created_after must be a valid RFC3339 timestamp"),
        ("created_after=2024-05-01", "created_after must be a valid RFC3339 timestamp"),
        ("created_before=2024-05-01T12:00:00", "created_before must be a valid RFC3339 timestamp"),
        ("after=garbage", "malformed page cursor 'garbage'"),
        # Issue 16, item 8: these were 500s.
        ("offset=9223372036854775808", "offset must be at most 9223372036854775807"),
        (f"offset={'9' * 5000}", "offset must be at most 9223372036854775807"),
        (f"id={'9' * 5000}", f"invalid task id: {'9' * 5000}"),
        ("type=a%00b", "invalid type 'a\\x00b': task types cannot contain NUL characters"),
        (f"after={NESTED_CURSOR}", f"malformed page cursor '{NESTED_CURSOR[:40]}...'"),
        ("queue=a%00b", "invalid queue 'a\\x00b': queue names cannot contain NUL characters"),
        (
            f"queue=mail,{'q' * 129}",
            f"invalid queue '{'q' * 40}...': queue names are 1 to 128 characters long",
        ),
    ],
)
async def test_list_refuses_bad_parameters(pool: Pool, query: str, message: str) -> None:
    async with dashboard_client(pool) as http:
        answer = await http.get(f"/api/tasks?{query}")
        page = await http.get(f"/tasks?{query}")
    assert error_of(answer) == (400, "invalid_params", message)
    # The page shows the same message inline (it reads times without an offset as UTC), and
    # answers 400 as the API does (issue #22: it answered 200).
    shown = '<p class="error" role="alert">' in page.text
    assert page.status_code == (400 if shown else 200)
    if not query.startswith("created_"):
        assert page.status_code == 400
        assert f'<p class="error" role="alert">{escape(message)}</p>' in page.text


async def test_huge_limits_are_clamped(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn)
    async with dashboard_client(pool) as http:
        answer = await http.get(f"/api/tasks?limit={'9' * 5000}")
    assert [t["id"] for t in answer.json()["data"]["tasks"]] == [task_id]


async def test_detail_and_payload(pool: Pool, sync_conn: SyncConn) -> None:
    json_task = make(sync_conn, "failed", payload=b'{"to": "a@b"}', messages=("boom",))
    binary = make(sync_conn, payload=b"\xff\x00")
    empty = make(sync_conn, payload=b"")
    async with dashboard_client(pool) as http:
        detail = (await http.get(f"/api/tasks/{json_task}")).json()["data"]
        raw = await http.get(f"/api/tasks/{json_task}/payload")
        raw_binary = await http.get(f"/api/tasks/{binary}/payload")
        raw_empty = await http.get(f"/api/tasks/{empty}/payload")
        empty_detail = (await http.get(f"/api/tasks/{empty}")).json()["data"]
    assert (detail["payload"], detail["payload_size"], detail["messages"]) == (
        '{"to": "a@b"}',
        13,
        ["boom"],
    )
    assert (detail["status"], detail["attempts_left"], detail["finalized_at"][-1]) == (
        "failed",
        0,
        "Z",
    )
    assert (raw.status_code, raw.headers["content-type"], raw.content) == (
        200,
        "application/json",
        b'{"to": "a@b"}',
    )
    assert (raw_binary.headers["content-type"], raw_binary.content) == (
        "application/octet-stream",
        b"\xff\x00",
    )
    assert (raw_empty.status_code, raw_empty.headers["content-type"], raw_empty.content) == (
        200,
        "application/octet-stream",
        b"",
    )
    assert empty_detail["payload"] is None


async def test_payloads_over_the_cap_are_not_read(pool: Pool, sync_conn: SyncConn) -> None:
    """Only the payload endpoint reads a payload, and never one over ``max_payload_bytes``
    (issue 16, item 7)."""
    fits = make(sync_conn, "failed", payload=b"x" * 100)
    big = make(sync_conn, "failed", payload=b'"' + b"y" * 100 + b'"')
    async with dashboard_client(pool, max_payload_bytes=100) as http:
        listed = (await http.get("/api/tasks")).json()["data"]["tasks"]
        config = (await http.get("/api/config")).json()["data"]
        ok_raw = await http.get(f"/api/tasks/{fits}/payload")
        big_raw = await http.get(f"/api/tasks/{big}/payload")
        big_detail = (await http.get(f"/api/tasks/{big}")).json()["data"]
        fits_detail = (await http.get(f"/api/tasks/{fits}")).json()["data"]
        big_page = await http.get(f"/tasks/{big}")
        retried = await http.post(
            f"/api/tasks/{big}/retry", headers={"X-CSRF-Token": await csrf_token(http)}
        )
    assert [t["payload_size"] for t in listed] == [100, 102]
    assert config["max_payload_bytes"] == 100
    assert (ok_raw.status_code, ok_raw.content) == (200, b"x" * 100)
    assert error_of(big_raw) == (
        403,
        "payload_too_large",
        "the payload is 102 bytes, more than this dashboard serves (100 bytes)",
    )
    assert (big_detail["payload"], big_detail["payload_size"]) == (None, 102)
    assert fits_detail["payload"] == "x" * 100
    assert "y" * 100 not in big_page.text
    assert "102 bytes, more than this dashboard shows (100 bytes)" in big_page.text
    assert retried.json()["data"]["payload"] is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tasks/{}"),
        ("GET", "/api/tasks/{}/payload"),
        ("POST", "/api/tasks/{}/retry"),
        ("POST", "/api/tasks/{}/cancel"),
        ("DELETE", "/api/tasks/{}"),
    ],
)
async def test_single_task_endpoints_check_the_id(pool: Pool, method: str, path: str) -> None:
    async with dashboard_client(pool) as http:
        headers = {"X-CSRF-Token": await csrf_token(http)}
        for bad in ("abc", "-1", "0", "1.5", "9223372036854775808", "%D9%A3"):
            answer = await http.request(method, path.format(bad), headers=headers)
            status, code, message = error_of(answer)
            assert (status, code) == (400, "invalid_id"), bad
            assert message.startswith("invalid task id: ")
        answer = await http.request(method, path.format(9223372036854775807), headers=headers)
    assert error_of(answer) == (404, "task_not_found", "task not found")


AVAILABLE = (409, "task_already_available", "task is already available for processing")
RUNNING = (409, "task_running", "task is currently running")
FINALIZED = (409, "task_already_finalized", "task is already in a terminal state")


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("retry", "failed", (200, "pending")),
        ("retry", "cancelled", (200, "pending")),
        ("retry", "pending", AVAILABLE),
        ("retry", "running", RUNNING),
        ("retry", "completed", FINALIZED),
        ("cancel", "pending", (200, "cancelled")),
        ("cancel", "running", (200, "cancelled")),
        ("cancel", "failed", (200, "cancelled")),
        ("cancel", "cancelled", (200, "cancelled")),
        ("cancel", "completed", FINALIZED),
        ("delete", "completed", (200, None)),
        ("delete", "failed", (200, None)),
        ("delete", "pending", (200, None)),
        ("delete", "running", RUNNING),
    ],
)  # fmt: skip
async def test_actions_follow_the_state_table(
    pool: Pool, sync_conn: SyncConn, action: str, status: str, expected: tuple[Any, ...]
) -> None:
    task_id = make(sync_conn, status)
    method, path = ("DELETE", f"/api/tasks/{task_id}")
    if action != "delete":
        method, path = ("POST", f"/api/tasks/{task_id}/{action}")
    async with dashboard_client(pool) as http:
        answer = await http.request(method, path, headers={"X-CSRF-Token": await csrf_token(http)})
    if expected[0] == 200:
        data = answer.json()["data"]
        assert (answer.status_code, data["id"], data["payload"]) == (200, task_id, '{"n": 1}')
        if action == "delete":
            assert (data["status"], status_of(sync_conn, task_id)) == (status, None)
        else:
            assert data["status"] == status_of(sync_conn, task_id) == expected[1]
    else:
        assert error_of(answer) == expected
        assert status_of(sync_conn, task_id) == status


async def test_bulk_retry_and_delete(pool: Pool, sync_conn: SyncConn) -> None:
    failed_a = [make(sync_conn, "failed", type="a") for _ in range(3)]
    failed_b = make(sync_conn, "failed", type="b")
    cancelled = make(sync_conn, "cancelled", type="a")
    async with dashboard_client(pool) as http:
        headers = {"X-CSRF-Token": await csrf_token(http)}
        by_type = await http.post("/api/tasks/bulk/retry", json={"type": "a"}, headers=headers)
        assert (by_type.status_code, by_type.json()) == (200, {"data": {"affected": 3}})
        assert {status_of(sync_conn, i) for i in failed_a} == {"pending"}
        assert status_of(sync_conn, cancelled) == "cancelled"  # bulk retry is failed only
        make(sync_conn, "failed", type="a")
        everything = await http.post("/api/tasks/bulk/delete", headers=headers)
        assert everything.json() == {"data": {"affected": 2}}
        assert status_of(sync_conn, failed_b) is None
        null_type = await http.post("/api/tasks/bulk/retry", json={"type": None}, headers=headers)
        assert null_type.json() == {"data": {"affected": 0}}
        for body in (b"{", b"[1]", b'{"type": 5}', b'"a"', b"[" * 100_000, b"\xff"):
            for path in ("/api/tasks/bulk/retry", "/api/tasks/bulk/delete"):
                answer = await http.post(path, content=body, headers=headers)
                assert error_of(answer) == (400, "invalid_body", "invalid request body")
        nul = await http.post("/api/tasks/bulk/retry", json={"type": "a\x00"}, headers=headers)
        assert error_of(nul) == (
            400,
            "invalid_body",
            "invalid request body: task types cannot contain NUL characters",
        )


async def test_unknown_endpoints_and_methods(pool: Pool) -> None:
    async with dashboard_client(pool, prefix="/q") as http:
        missing = await http.get("/q/api/nothing")
        wrong_method = await http.put("/q/api/tasks/1/retry")
        get_bulk = await http.get("/q/api/tasks/bulk/retry")
        outside = await http.get("/elsewhere/api/health")
        root = await http.get("/q")
    assert error_of(missing) == (404, "not_found", "no such endpoint")
    assert error_of(wrong_method) == (405, "method_not_allowed", "method not allowed")
    assert "POST" in wrong_method.headers["allow"]
    assert error_of(get_bulk)[0] == 405
    assert outside.status_code == 404
    assert (root.status_code, root.headers["location"]) == (307, "/q/")


@pytest.mark.parametrize("prefix", ["", "/q"])
async def test_slash_redirects_are_relative(pool: Pool, prefix: str) -> None:
    """A trailing-slash redirect never echoes the Host header (issue 16, item 10)."""
    evil = {"Host": "evil.example"}
    async with dashboard_client(pool, prefix=prefix) as http:
        page = await http.get(f"{prefix}/tasks/?status=failed&x=%2F", headers=evil)
        api = await http.get(f"{prefix}/api/tasks/7/", headers=evil)
        posted = await http.post(f"{prefix}/api/tasks/bulk/retry/", headers=evil)
        scheme_relative = await http.get(f"http://dash.test{prefix}//evil.example/", headers=evil)
        unknown = await http.get(f"{prefix}/nothing/", headers=evil)
    assert (page.status_code, page.headers["location"]) == (
        307,
        f"{prefix}/tasks?status=failed&x=%2F",
    )
    assert (api.status_code, api.headers["location"]) == (307, f"{prefix}/api/tasks/7")
    assert (posted.status_code, posted.headers["location"]) == (
        307,
        f"{prefix}/api/tasks/bulk/retry",
    )
    assert (scheme_relative.status_code, unknown.status_code) == (404, 404)
    assert "location" not in scheme_relative.headers


async def test_queues_pause_resume_and_limits(pool: Pool, sync_conn: SyncConn) -> None:
    make(sync_conn, "pending")
    mail = [make(sync_conn, s, queue="mail", priority=3) for s in ("pending", "failed")]
    client = Client(pool)
    await client.set_limit(queue="mail", max_running=2, rate=10, per=60, burst=20)
    await client.set_limit(type="t", max_running=0)
    async with dashboard_client(pool) as http:
        listed = (await http.get("/api/queues")).json()["data"]
        headers = {"X-CSRF-Token": await csrf_token(http)}
        paused = await http.post("/api/queues/mail/pause", headers=headers)
        again = await http.post("/api/queues/mail/pause", headers=headers)
        after_pause = (await http.get("/api/queues")).json()["data"]
        slashed = await http.post("/api/queues/a%2Fb/pause", headers=headers)
        resumed = await http.post("/api/queues/mail/resume", headers=headers)
        not_paused = await http.post("/api/queues/mail/resume", headers=headers)
        limits = (await http.get("/api/limits")).json()["data"]
        filtered = (await http.get("/api/tasks?queue=mail")).json()["data"]
        both = (await http.get("/api/tasks?queue=mail,default")).json()["data"]
        detail = (await http.get(f"/api/tasks/{mail[0]}")).json()["data"]
        bad = [
            await http.post(f"/api/queues/{name}/pause", headers=headers)
            for name in ("%00", "q" * 129, "a%00b")
        ]
    assert [(q["name"], q["paused"], q["total"]) for q in listed] == [
        ("default", False, 1),
        ("mail", False, 2),
    ]
    assert listed[1]["counts"] == dict.fromkeys(STATUSES, 0) | {"pending": 1, "failed": 1}
    assert all(q["oldest_ready_age"] >= 0 for q in listed)
    assert paused.json() == {"data": {"queue": "mail", "paused": True, "changed": True}}
    assert again.json()["data"]["changed"] is False
    assert [(q["name"], q["paused"]) for q in after_pause] == [("default", False), ("mail", True)]
    # The name is the rest of the path: a slash in it is no problem.
    assert slashed.json()["data"] == {"queue": "a/b", "paused": True, "changed": True}
    assert [(q.name, q.paused) for q in await client.queues()] == [
        ("a/b", True),
        ("default", False),
        ("mail", False),
    ]
    assert resumed.json()["data"] == {"queue": "mail", "paused": False, "changed": True}
    assert not_paused.json()["data"]["changed"] is False
    assert limits == [
        {"scope": "queue", "name": "mail", "max_running": 2, "rate": 10, "per": 60.0,
         "burst": 20, "running": 0},
        {"scope": "type", "name": "t", "max_running": 0, "rate": None, "per": None,
         "burst": None, "running": 0},
    ]  # fmt: skip
    assert [(t["id"], t["queue"], t["priority"]) for t in filtered["tasks"]] == [
        (mail[0], "mail", 3),
        (mail[1], "mail", 3),
    ]
    assert both["total"] == 3
    assert (detail["queue"], detail["priority"]) == ("mail", 3)
    for answer in bad:
        status, code, message = error_of(answer)
        assert (status, code) == (400, "invalid_queue"), answer.text
        assert "invalid queue name" in message


async def test_queue_pages(pool: Pool, sync_conn: SyncConn) -> None:
    make(sync_conn, "failed", type="mail.send", queue="mail", priority=-2)
    task_id = make(sync_conn, queue="mail", priority=4)
    make(sync_conn, type="other")
    client = Client(pool)
    await client.pause_queue("mail")
    await client.set_limit(queue="mail", max_running=5, rate=100, per=3600)
    async with dashboard_client(pool, prefix="/q") as http:
        queues = await http.get("/q/queues")
        tasks = await http.get("/q/tasks?queue=mail")
        detail = await http.get(f"/q/tasks/{task_id}")
        bad = await http.get("/q/tasks?queue=a%00b")
    async with dashboard_client(pool, read_only=True) as http:
        read_only = await http.get("/queues")
    assert queues.status_code == 200
    html = queues.text
    assert '<tr data-queue="mail" data-paused="true">' in html
    assert '<tr data-queue="default" data-paused="false">' in html
    assert 'data-url="/q/api/queues/mail/resume"' in html
    assert 'data-url="/q/api/queues/default/pause"' in html
    assert 'href="/q/tasks?queue=mail&amp;status=failed">1</a>' in html
    assert "at most 5 running; 100 per 1h" in html  # in the queue's row and the limits table
    assert html.count("at most 5 running; 100 per 1h") == 2
    assert 'aria-current="page">Queues</a>' in html
    assert tasks.status_code == 200
    assert tasks.text.count("<tr data-task-id=") == 2
    assert '<option value="mail" selected>mail</option>' in tasks.text
    assert 'class="num">4</td>' in tasks.text and 'class="num">-2</td>' in tasks.text
    queue_row = '<tr><th>Queue</th><td><a href="/q/tasks?queue=mail">mail</a></td></tr>'
    assert queue_row in detail.text
    assert "<tr><th>Priority</th><td>4 <small>" in detail.text
    assert bad.status_code == 400  # as the API (issue #22)
    assert "queue names cannot contain NUL characters" in bad.text
    assert read_only.status_code == 200
    assert 'data-queue="mail"' in read_only.text
    assert "data-url=" not in read_only.text and "Resume" not in read_only.text


async def test_csrf_is_required_on_every_state_change(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn, "failed")
    writes = [
        ("POST", f"/api/tasks/{task_id}/retry"),
        ("POST", f"/api/tasks/{task_id}/cancel"),
        ("DELETE", f"/api/tasks/{task_id}"),
        ("POST", "/api/tasks/bulk/retry"),
        ("POST", "/api/tasks/bulk/delete"),
        ("POST", "/api/queues/mail/pause"),
        ("POST", "/api/queues/mail/resume"),
    ]
    async with dashboard_client(pool) as http, dashboard_client(pool) as other:
        foreign = await csrf_token(other)  # a valid token, but of another session
        no_session = [
            await http.request(m, p, headers={"X-CSRF-Token": foreign}) for m, p in writes
        ]
        token = await csrf_token(http)
        for headers in (
            {},
            {"X-CSRF-Token": ""},
            {"X-CSRF-Token": token + "x"},
            {"X-CSRF-Token": foreign},
        ):
            for method, path in writes:
                answer = await http.request(method, path, headers=headers)
                assert error_of(answer) == (
                    403,
                    "csrf_failed",
                    "missing or invalid X-CSRF-Token header",
                )
        assert status_of(sync_conn, task_id) == "failed"
        assert [q.name for q in await Client(pool).queues()] == ["default"]  # mail untouched
        assert (await csrf_token(http)) == token  # stable for the session
        done = await http.post(f"/api/tasks/{task_id}/retry", headers={"X-CSRF-Token": token})
    assert all(error_of(a)[:2] == (403, "csrf_failed") for a in no_session)
    assert done.status_code == 200


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


async def test_security_headers_on_every_response(pool: Pool, sync_conn: SyncConn) -> None:
    """Issue 16, item 6: a framed dashboard could be clicked into "Retry all"."""
    task_id = make(sync_conn, "failed")
    async with dashboard_client(pool, prefix="/q") as http:
        answers = {
            path: await http.request(method, path)
            for method, path in [
                ("GET", "/q"),
                ("GET", "/q/"),
                ("GET", "/q/tasks?status=failed"),
                ("GET", "/q/tasks/"),
                ("GET", f"/q/tasks/{task_id}"),
                ("GET", "/q/tasks/404"),
                ("GET", "/q/login"),
                ("GET", "/q/api/stats"),
                ("GET", "/q/api/tasks"),
                ("GET", f"/q/api/tasks/{task_id}/payload"),
                ("GET", "/q/api/nothing"),
                ("POST", "/q/api/tasks/bulk/retry"),
                ("GET", "/elsewhere"),
                ("GET", "/q/static/dashboard.js"),
            ]
        }
    for path, answer in answers.items():
        headers = answer.headers
        assert headers["content-security-policy"] == CSP, path
        assert (headers["x-frame-options"], headers["x-content-type-options"]) == (
            "DENY",
            "nosniff",
        ), path
        assert headers["referrer-policy"] == "same-origin", path
        if path != "/q/static/dashboard.js":
            assert headers["cache-control"] == "no-store", path
    assert "no-store" not in answers["/q/static/dashboard.js"].headers.get("cache-control", "")
    assert answers[f"/q/api/tasks/{task_id}/payload"].status_code == 200


async def test_cross_site_writes_are_refused(pool: Pool, sync_conn: SyncConn) -> None:
    """Beside the CSRF token, a browser's word that a write comes from another site is enough
    to refuse it (issue 16, item 6); scripts that send neither header still work."""
    task_id = make(sync_conn, "failed")
    writes = [
        ("POST", f"/api/tasks/{task_id}/retry"),
        ("POST", f"/api/tasks/{task_id}/cancel"),
        ("DELETE", f"/api/tasks/{task_id}"),
        ("POST", "/api/tasks/bulk/retry"),
        ("POST", "/api/tasks/bulk/delete"),
        ("POST", "/api/queues/mail/pause"),
    ]
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://dash.test.evil.example"},
        {"Origin": "not a url"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://dash.test"},  # the browser decides
    ]
    allowed = [
        {},
        {"Origin": "http://dash.test"},
        {"Origin": "http://DASH.test"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
    ]
    async with dashboard_client(pool) as http:
        token = await csrf_token(http)
        for extra in refused:
            for method, path in writes:
                answer = await http.request(method, path, headers={"X-CSRF-Token": token, **extra})
                assert error_of(answer) == (
                    403,
                    "cross_site",
                    "cross-site request refused: Origin or Sec-Fetch-Site names another site",
                ), (extra, path)
        assert status_of(sync_conn, task_id) == "failed"
        for extra in allowed:
            answer = await http.post(
                "/api/tasks/bulk/retry", headers={"X-CSRF-Token": token, **extra}
            )
            assert answer.status_code == 200, extra
    assert status_of(sync_conn, task_id) == "pending"


async def test_read_only_refuses_changes(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn, "failed")
    async with dashboard_client(pool, read_only=True) as http:
        headers = {"X-CSRF-Token": await csrf_token(http)}
        answers = [
            await http.post(f"/api/tasks/{task_id}/retry", headers=headers),
            await http.post(f"/api/tasks/{task_id}/cancel", headers=headers),
            await http.delete(f"/api/tasks/{task_id}", headers=headers),
            await http.post("/api/tasks/bulk/retry", headers=headers),
            await http.post("/api/tasks/bulk/delete", headers=headers),
            await http.post("/api/tasks/bulk/delete"),  # no token: still read_only
            await http.post("/api/queues/mail/pause", headers=headers),
            await http.post("/api/queues/mail/resume", headers=headers),
        ]
        reads = [
            await http.get(p)
            for p in ("/api/stats", f"/api/tasks/{task_id}", "/api/tasks", "/api/queues")
        ]
        page = await http.get("/tasks?status=failed")
        detail = await http.get(f"/tasks/{task_id}")
        config = (await http.get("/api/config")).json()["data"]
    for answer in answers:
        assert error_of(answer) == (403, "read_only", "the dashboard is read-only")
    assert [r.status_code for r in reads] == [200, 200, 200, 200]
    assert status_of(sync_conn, task_id) == "failed"
    assert config["read_only"] is True
    for html in (page.text, detail.text):
        assert "data-url=" not in html and "Retry all" not in html
        assert "read-only" in html


@pytest.mark.parametrize("mode", ["hide", "deny"])
async def test_payload_modes(pool: Pool, sync_conn: SyncConn, mode: str) -> None:
    task_id = make(sync_conn, "failed", payload=b"secret")
    async with dashboard_client(pool, payloads=mode) as http:
        detail = (await http.get(f"/api/tasks/{task_id}")).json()["data"]
        retried = await http.post(
            f"/api/tasks/{task_id}/retry", headers={"X-CSRF-Token": await csrf_token(http)}
        )
        raw = await http.get(f"/api/tasks/{task_id}/payload")
        page = await http.get(f"/tasks/{task_id}")
        config = (await http.get("/api/config")).json()["data"]
    assert (detail["payload"], detail["payload_size"]) == (None, 6)
    assert retried.json()["data"]["payload"] is None
    assert config["hide_payload_by_default"] is True
    assert "secret" not in page.text
    if mode == "hide":
        assert (raw.status_code, raw.content) == (200, b"secret")
        assert "data-reveal=" in page.text
    else:
        assert error_of(raw) == (403, "payload_denied", "payloads are not shown by this dashboard")
        assert "does not show payloads" in page.text


async def test_pages_render_under_a_prefix(pool: Pool, sync_conn: SyncConn) -> None:
    failed = make(sync_conn, "failed", type="mail", messages=("smtp <down>",))
    async with dashboard_client(pool, prefix="/ops/queue") as http:
        overview = await http.get("/ops/queue/")
        dead = await http.get("/ops/queue/tasks?status=failed")
        bad_filter = await http.get("/ops/queue/tasks?status=nope&created_after=2024-05-01T10:00")
        local_time = await http.get("/ops/queue/tasks?created_after=2024-05-01T10:00")
        detail = await http.get(f"/ops/queue/tasks/{failed}")
        missing = await http.get("/ops/queue/tasks/999")
        bad_id = await http.get("/ops/queue/tasks/x")
        static = await http.get("/ops/queue/static/dashboard.js")
        login = await http.get("/ops/queue/login")
    assert overview.status_code == 200
    assert 'data-count="failed">1<' in overview.text
    assert overview.headers["cache-control"] == "no-store"
    for html in (overview.text, dead.text, detail.text):
        assert 'href="/ops/queue/static/dashboard.css"' in html
        assert 'href="/' not in html.replace('href="/ops/queue/', "")  # every link is prefixed
    assert "Dead letters" in dead.text and "Retry all" in dead.text
    assert 'data-url="/ops/queue/api/tasks/bulk/retry"' in dead.text
    assert "smtp &lt;down&gt;" in dead.text  # escaped
    assert (bad_filter.status_code, "invalid status: nope" in bad_filter.text) == (
        400,
        True,
    )  # as the API (issue #22)
    assert local_time.status_code == 200 and 'class="error"' not in local_time.text
    assert f"Task {failed}" in detail.text and "smtp &lt;down&gt;" in detail.text
    assert (missing.status_code, bad_id.status_code) == (404, 404)
    assert "task 999 not found" in missing.text
    assert (static.status_code, login.status_code, login.headers["location"]) == (
        200,
        302,
        "/ops/queue/",
    )


def test_the_api_is_whole() -> None:
    """Every route the Go dashboard has (and ours) is registered, under the prefix."""
    from starlette.routing import Mount, Route

    from asynqpg_trio.web import create_app

    app = create_app("host=127.0.0.1", prefix="/p")
    mount = next(r for r in app.routes if isinstance(r, Mount))
    routes = {(m, r.path) for r in mount.routes if isinstance(r, Route) for m in r.methods or ()}
    expected = {
        ("GET", "/api/health"), ("GET", "/api/config"), ("GET", "/api/csrf"),
        ("GET", "/api/stats"), ("GET", "/api/throughput"), ("GET", "/api/task-types"),
        ("GET", "/api/tasks"), ("GET", "/api/tasks/{id}"), ("GET", "/api/tasks/{id}/payload"),
        ("POST", "/api/tasks/{id}/retry"), ("POST", "/api/tasks/{id}/cancel"),
        ("DELETE", "/api/tasks/{id}"), ("POST", "/api/tasks/bulk/retry"),
        ("POST", "/api/tasks/bulk/delete"),
        ("GET", "/api/queues"), ("POST", "/api/queues/{name:path}/pause"),
        ("POST", "/api/queues/{name:path}/resume"), ("GET", "/api/limits"),
    }  # fmt: skip
    assert expected <= routes
    assert not any(path.startswith("/api/auth") for _, path in routes)  # OAuth only


async def test_unexpected_errors_are_500_without_details(
    pool: Pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    names = ("stats", "list_tasks", "get_task_summary", "get_payload", "retry_task")
    for name in (*names, "retry_failed", "throughput", "queues", "limits", "pause_queue"):
        monkeypatch.setattr(Client, name, broken)
    async with dashboard_client(pool) as http:
        token = await csrf_token(http)
        answers = {
            path: await http.request(method, path, headers={"X-CSRF-Token": token})
            for method, path in [
                ("GET", "/api/stats"),
                ("GET", "/api/task-types"),
                ("GET", "/api/throughput"),
                ("GET", "/api/tasks"),
                ("GET", "/api/tasks/1"),
                ("GET", "/api/tasks/1/payload"),
                ("POST", "/api/tasks/1/retry"),
                ("POST", "/api/tasks/bulk/retry"),
                ("GET", "/api/queues"),
                ("GET", "/api/limits"),
                ("POST", "/api/queues/q/pause"),
            ]
        }
    messages = {path: error_of(a) for path, a in answers.items()}
    assert messages == {
        "/api/stats": (500, "internal_error", "failed to get stats"),
        "/api/task-types": (500, "internal_error", "failed to get task types"),
        "/api/throughput": (500, "internal_error", "failed to get throughput"),
        "/api/tasks": (500, "internal_error", "failed to list tasks"),
        "/api/tasks/1": (500, "internal_error", "failed to get task"),
        "/api/tasks/1/payload": (500, "internal_error", "failed to get task payload"),
        "/api/tasks/1/retry": (500, "internal_error", "failed to retry task"),
        "/api/tasks/bulk/retry": (500, "internal_error", "failed to bulk retry tasks"),
        "/api/queues": (500, "internal_error", "failed to list queues"),
        "/api/limits": (500, "internal_error", "failed to list limits"),
        "/api/queues/q/pause": (500, "internal_error", "failed to pause queue"),
    }
    assert "secret detail" in caplog.text
    assert all("secret" not in a.text for a in answers.values())
    # The pages show the error in their own layout, not a bare "Internal Server Error".
    async with dashboard_client(pool) as http:
        pages = [await http.get(path) for path in ("/", "/tasks", "/tasks/1", "/queues")]
    for page in pages:
        assert page.status_code == 500
        assert 'class="error" role="alert">The dashboard could not load this page' in page.text
        assert 'href="/static/dashboard.css"' in page.text and "secret" not in page.text


async def test_dsn_app_owns_and_closes_its_pool(dsn: str) -> None:
    from asynqpg_trio.web import create_app

    app = create_app(dsn)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/api/health")).status_code == 200
    async with app.router.lifespan_context(app):
        pass
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/api/health")).status_code == 503


def _percent(raw: bytes) -> str:
    return quote_from_bytes(raw, safe="")


_TEXT = st.text(max_size=30)
_DIGITS = st.integers(-(2**70), 2**70).map(str)
_HUGE_DIGITS = st.integers(19, 5000).map(lambda n: "9" * n)
_WHEN = st.builds(
    lambda moment, minutes, sep: moment.replace(
        tzinfo=timezone(timedelta(minutes=minutes))
    ).isoformat(sep=sep),
    st.datetimes(),
    st.integers(-1439, 1439),
    st.sampled_from(["T", " ", "t"]),
) | st.datetimes().map(datetime.isoformat)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _TEXT | _WHEN,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=10,
)
_CURSOR_FIELDS = st.tuples(
    st.sampled_from([1, 2, "1"]),
    st.sampled_from(["id", "created_at", "updated_at", "blocked_till", "payload", ""]),
    st.booleans() | st.integers(0, 1),
    st.none() | _WHEN | _TEXT,
    st.integers(-(2**70), 2**70) | _TEXT,
)
_CURSOR = (_JSON | _CURSOR_FIELDS).map(
    lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=")
) | st.integers(1, 5000).map(lambda n: base64.urlsafe_b64encode(b"[" * n).decode())
_KNOWN = st.sampled_from(
    ["pending", "failed,completed", "id", "created_at", "asc", "DESC", "1", "25", "0", "",
     "/q/tasks", "/q/../../evil", "provider_error", "good", "a\x00b", "9" * 19, "-1"]
)  # fmt: skip
#: A query value, already percent-encoded (or raw garbage).
_VALUE = (
    (_TEXT | _DIGITS | _HUGE_DIGITS | _WHEN | _CURSOR | _KNOWN).map(lambda v: quote(v, safe=""))
    | st.binary(max_size=12).map(_percent)
    | st.sampled_from(["%", "%zz", "%00", "%ff%fe", "a=b", "%2e%2e"])
)
_KEYS = st.sampled_from(
    ["status", "type", "id", "created_after", "created_before", "order_by", "order", "limit",
     "offset", "after", "next", "error", "code", "state", "queue", "x"]
)  # fmt: skip
_QUERY = st.lists(st.tuples(_KEYS, _VALUE), max_size=6).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
_SEGMENT = (_TEXT | _DIGITS | _HUGE_DIGITS | st.sampled_from(["1", "fake", "bulk"])).map(
    lambda v: quote(v, safe="")
)
_BODY = st.one_of(
    st.none(),
    st.binary(max_size=40),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"type": _TEXT | st.none() | _JSON}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.integers(1, 50_000).map(lambda n: b'{"type": ' + b"[" * n),
)


def _fuzz_routes() -> list[tuple[str, str]]:
    """Every (method, path) the dashboard serves in OAuth mode, under its prefix."""
    from starlette.routing import Mount, Route

    app = create_app("dbname=x", auth=_fuzz_oauth(), prefix="/q")
    mount = next(r for r in app.routes if isinstance(r, Mount))
    return sorted(
        (method, f"/q{route.path}")
        for route in mount.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    )


def _fuzz_oauth() -> OAuth:
    alice = User(id="1", provider="fake", login="alice", name="Alice")
    return OAuth([FakeProvider(users={"good": alice})], "https://d.example/q", lambda u: True)


#: One request: its route, the text for the route's path parameter, the query, the body.  The
#: URL stays under httpx's 64 KiB limit (at most 6 values of at most about 7 KB).
_REQUEST = st.tuples(st.sampled_from(_fuzz_routes()), _SEGMENT, _QUERY, _BODY)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # long values, on failure
@hypothesis.settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
    ],
)
@hypothesis.given(requests=st.lists(_REQUEST, min_size=1, max_size=6))
async def test_no_parameter_makes_a_5xx(
    dsn: str, requests: list[tuple[tuple[str, str], str, str, bytes | None]]
) -> None:
    """Fuzz every route's path parameters, query strings and bodies, logged in and with the
    CSRF token: nothing answers 5xx, and every API refusal says why (issue 16, item 8)."""
    async with open_pool(dsn, min_size=0, max_size=2) as pool:
        app = create_app(pool, auth=_fuzz_oauth(), prefix="/q")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as http:
            start = await http.get("/q/api/auth/login/fake?next=/q/tasks")
            state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
            await http.get(f"/q/api/auth/callback/fake?code=good&state={state}")
            headers = {"X-CSRF-Token": await csrf_token(http, "/q")}
            for (method, template), segment, query, body in requests:
                path = re.sub(r"\{[a-z]+(?::path)?\}", segment, template)
                url = f"http://dash.test{path}?{query}" if query else f"http://dash.test{path}"
                answer = await http.request(method, url, content=body, headers=headers)
                assert answer.status_code < 500, (method, url, body, answer.text[:300])
                if path.startswith("/q/api/") and answer.status_code >= 400:
                    assert error_of(answer)[2], (method, url, body)
