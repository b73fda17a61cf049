"""The command line as a subprocess against real PostgreSQL: output, JSON and exit codes."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from asynqpg_trio._cli._main import build_parser, run
from asynqpg_trio._pg._migrate import LATEST_VERSION

SyncConn = psycopg.Connection[Any]
DEAD_DSN = "host=127.0.0.1 port=1 user=postgres"
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ASYNQPG_DSN"} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "asynqpg_trio._cli", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def ok_json(*args: str) -> Any:
    done = cli(*args, "--json")
    assert (done.returncode, done.stderr) == (0, ""), done
    return json.loads(done.stdout)


def fails(code: int, *args: str, match: str) -> None:
    done = cli(*args)
    assert done.returncode == code, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert match in done.stderr, done.stderr


def make(sync_conn: SyncConn, status: str, task_type: str = "t", created: str = "now()") -> int:
    running, final = status == "running", status in ("completed", "failed", "cancelled")
    row = sync_conn.execute(
        f"""INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
               created_at, finalized_at, lease_token, lease_owner)
           VALUES (%s, 'p', %s, now(), 1, {created}, CASE WHEN %s THEN now() END,
               CASE WHEN %s THEN 7 END, CASE WHEN %s THEN 'w1' END)
           RETURNING id""",
        (task_type, status, final, running, running),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_enqueue_show(empty_dsn: str) -> None:
    fails(1, "tasks", "list", "--dsn", empty_dsn, match="asynqpg-trio migrate")
    latest = LATEST_VERSION
    assert ok_json("--dsn", empty_dsn, "migrate") == {
        "applied": list(range(1, latest + 1)),
        "version": latest,
    }
    done = cli("migrate", "--dsn", empty_dsn)
    assert (done.returncode, done.stdout) == (0, f"schema is up to date (version {latest})\n")

    first = ok_json("enqueue", "--dsn", empty_dsn, "email", '{"to": "a"}', "--token", "k")["id"]
    fails(1, "enqueue", "--dsn", empty_dsn, "email", "x", "--token", "k", match=f"(id {first})")
    fails(2, "enqueue", "--dsn", empty_dsn, "x" * 300, "p", match="most is 255")
    raw = b"\x00\xff binary"
    done = cli("--dsn", empty_dsn, "--json", "enqueue", "blob", "-", "--delay", "60", stdin=raw)
    second = json.loads(done.stdout)["id"]
    shown = ok_json("tasks", "show", str(second), "--dsn", empty_dsn)
    assert base64.b64decode(shown["payload_base64"]) == raw
    assert (shown["payload"], shown["payload_size"]) == (None, len(raw))  # not UTF-8
    blocked = datetime.fromisoformat(shown["blocked_till"])
    assert blocked - datetime.fromisoformat(shown["created_at"]) == timedelta(seconds=60)
    task = ok_json("tasks", "show", str(first), "--dsn", empty_dsn)
    assert (task["type"], task["payload"], task["status"], task["attempts_left"]) == (
        "email",
        '{"to": "a"}',
        "pending",
        3,
    )
    human = cli("tasks", "show", str(first), "--dsn", empty_dsn).stdout
    assert "email" in human
    assert "idempotency token" in human


def test_list_filters_and_pages(dsn: str, sync_conn: SyncConn) -> None:
    ids = [
        make(sync_conn, "failed", "a", "'2024-05-01T10:00Z'"),
        make(sync_conn, "failed", "b", "'2024-05-01T11:00Z'"),
        make(sync_conn, "pending", "a", "'2024-05-01T12:00Z'"),
        make(sync_conn, "completed", "c", "'2024-05-01T13:00Z'"),
    ]
    newest_first = ids[::-1]

    def listed(*args: str) -> list[int]:
        return [t["id"] for t in ok_json("tasks", "list", "--dsn", dsn, *args)["tasks"]]

    assert listed() == newest_first  # the dashboard's order
    assert listed("--asc") == ids
    assert listed("--desc") == newest_first
    assert listed("--status", "failed", "--type", "a") == [ids[0]]
    assert listed("--status", "failed,completed", "--status", "pending") == newest_first
    assert listed("--type", "b,c") == [ids[3], ids[1]]
    assert listed("--id", f"{ids[0]},{ids[3]}") == [ids[3], ids[0]]
    window = ["--created-after", "2024-05-01T11:00:00Z", "--created-before", "2024-05-01T14:00+02"]
    assert listed(*window) == [ids[2], ids[1]]
    assert listed("--order-by", "created_at", "--desc") == newest_first
    assert listed("--order-by", "created_at", "--asc") == ids

    page = ok_json("tasks", "list", "--dsn", dsn, "--limit", "3")
    assert (len(page["tasks"]), page["total"]) == (3, 4)
    rest = ok_json("tasks", "list", "--dsn", dsn, "--after", page["next_cursor"])
    assert ([t["id"] for t in rest["tasks"]], rest["next_cursor"]) == ([ids[0]], None)
    assert listed("--offset", "3") == [ids[0]]
    assert listed("--limit", "1") == [ids[3]]
    assert len(listed("--limit", "10000")) == 4
    fails(2, "tasks", "list", "--dsn", dsn, "--after", "garbage", match="malformed page cursor")

    human = cli("tasks", "list", "--dsn", dsn, "--limit", "2").stdout
    assert human.index(f" {ids[3]} ") < human.index(f" {ids[2]} ")
    assert "completed" in human
    assert "2 tasks shown (1-2 of 4 matching); next page: --after " in human
    assert (
        "1 task shown (1-1 of 4 matching)"
        in cli("tasks", "list", "--dsn", dsn, "--limit", "1").stdout
    )


def test_piped_output_prints_values_in_full(dsn: str, sync_conn: SyncConn) -> None:
    long_type = "billing.invoice." + "x" * 200
    message = "connection reset by the payment provider " * 5 + "\nretrying will not help"
    sync_conn.execute(
        """INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
               messages, finalized_at) VALUES (%s, 'p', 'failed', now(), 0, ARRAY[%s], now())""",
        (long_type, message),
    )
    listed = cli("tasks", "list", "--dsn", dsn)  # stdout is a pipe here, not a terminal
    assert listed.returncode == 0, listed
    assert long_type in listed.stdout
    assert message.replace("\n", "\\n") in listed.stdout  # one row, line break shown as \n
    assert "…" not in listed.stdout
    stats = cli("stats", "--dsn", dsn)
    assert long_type in stats.stdout
    assert "…" not in stats.stdout


def test_single_task_actions_and_state_errors(dsn: str, sync_conn: SyncConn) -> None:
    running, done, pending = (make(sync_conn, s) for s in ("running", "completed", "pending"))
    fails(1, "tasks", "retry", str(pending), "--dsn", dsn, match="already pending")
    fails(1, "tasks", "delete", str(running), "--dsn", dsn, match="is running")
    fails(1, "tasks", "cancel", str(done), "--dsn", dsn, match="already completed")
    for action in ("show", "cancel", "retry", "delete"):
        fails(1, "tasks", action, "424242", "--dsn", dsn, match="task 424242 not found")

    cancelled = ok_json("tasks", "cancel", str(running), "--dsn", dsn)
    assert (cancelled["status"], cancelled["lease_token"]) == ("cancelled", None)
    retried = cli("tasks", "retry", str(running), "--dsn", dsn)
    assert retried.stdout == f"re-queued task {running} (t); status now pending\n"
    gone = ok_json("tasks", "delete", str(done), "--dsn", dsn)
    assert (gone["id"], gone["status"]) == (done, "completed")
    fails(1, "tasks", "show", str(done), "--dsn", dsn, match="not found")


def test_bulk_retry_and_delete_failed(dsn: str, sync_conn: SyncConn) -> None:
    for task_type in ("a", "a", "b"):
        make(sync_conn, "failed", task_type)
    assert ok_json("tasks", "retry-failed", "--type", "a", "--dsn", dsn) == {"affected": 2}
    assert ok_json("tasks", "delete-failed", "--dsn", dsn) == {"affected": 1}
    done = cli("tasks", "delete-failed", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (0, "deleted 0 failed tasks\n")


def test_stats(dsn: str, sync_conn: SyncConn) -> None:
    make(sync_conn, "pending", "b")
    make(sync_conn, "failed", "a")
    stats = ok_json("stats", "--dsn", dsn)
    assert stats["total"] == 2
    assert stats["by_status"] == {
        "pending": 1,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert [t["type"] for t in stats["by_type"]] == ["a", "b"]
    assert stats["by_type"][0]["oldest_pending_age"] is None
    assert stats["by_type"][1]["oldest_pending_age"] >= 0
    human = cli("stats", "--dsn", dsn).stdout
    assert "cancelled" in human
    assert "lag" in human


def test_stats_watch_until_ctrl_c(dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASYNQPG_DSN"} | {"ASYNQPG_DSN": dsn}
    with subprocess.Popen(
        [sys.executable, "-m", "asynqpg_trio._cli", "stats", "--watch", "0.1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"stats --watch ignored SIGINT for 30 s; stderr: {err.decode()!r}")
        assert status == 0, proc.communicate()[1].decode()
    assert all(line["total"] == 0 for line in lines)


def test_queues_list_pause_and_resume(dsn: str) -> None:
    ok_json("enqueue", "--dsn", dsn, "t", "a")
    urgent = ok_json("enqueue", "--dsn", dsn, "t", "b", "--queue", "mail", "--priority", "5")["id"]
    later = ("--queue", "mail", "--priority", "-5", "--delay", "60")
    ok_json("enqueue", "--dsn", dsn, "t", "c", *later)
    shown = ok_json("tasks", "show", str(urgent), "--dsn", dsn)
    assert (shown["queue"], shown["priority"]) == ("mail", 5)
    human = cli("tasks", "show", str(urgent), "--dsn", dsn).stdout
    assert re.search(r"^ *queue +mail *$", human, flags=re.MULTILINE), human
    assert re.search(r"^ *priority +5 *$", human, flags=re.MULTILINE), human

    listed = ok_json("queues", "--dsn", dsn)["queues"]
    assert [(q["name"], q["paused"], q["total"]) for q in listed] == [
        ("default", False, 1),
        ("mail", False, 2),
    ]
    assert listed[1]["counts"] == {
        "pending": 2,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert listed[1]["oldest_ready_age"] >= 0  # the delayed task is not ready: not counted

    assert ok_json("queues", "pause", "mail", "--dsn", dsn) == {
        "queue": "mail",
        "paused": True,
        "changed": True,
    }
    again = cli("queues", "pause", "mail", "--dsn", dsn)
    assert (again.returncode, again.stdout) == (0, "queue mail was already paused\n")
    # A queue with no tasks can be paused ahead of its first task; it is listed from then on.
    assert cli("queues", "pause", "later", "--dsn", dsn).stdout == "paused queue later\n"
    listed = ok_json("queues", "--dsn", dsn)["queues"]
    assert [(q["name"], q["paused"], q["total"]) for q in listed] == [
        ("default", False, 1),
        ("later", True, 0),
        ("mail", True, 2),
    ]
    table = cli("queues", "--dsn", dsn).stdout
    assert re.search(r"^ *mail +paused +2 +0 +0 +0 +0 +2 ", table, flags=re.MULTILINE), table
    assert re.search(r"^ *default +active +1 ", table, flags=re.MULTILINE), table

    assert ok_json("queues", "resume", "mail", "--dsn", dsn)["changed"] is True
    assert cli("queues", "resume", "mail", "--dsn", dsn).stdout == "queue mail was not paused\n"
    assert [q["paused"] for q in ok_json("queues", "--dsn", dsn)["queues"]] == [False, True, False]


def test_tasks_list_filters_by_queue(dsn: str) -> None:
    ids = {
        queue: ok_json("enqueue", "--dsn", dsn, "t", "p", "--queue", queue)["id"]
        for queue in ("default", "mail", "reports")
    }

    def listed(*args: str) -> list[int]:
        return [t["id"] for t in ok_json("tasks", "list", "--dsn", dsn, *args)["tasks"]]

    assert listed("--queue", "mail") == [ids["mail"]]
    assert listed("--queue", "mail,reports", "--asc") == [ids["mail"], ids["reports"]]
    assert listed("--queue", "default", "--queue", "reports", "--asc") == [
        ids["default"],
        ids["reports"],
    ]
    assert listed("--queue", "nowhere") == []
    tasks = ok_json("tasks", "list", "--dsn", dsn, "--queue", "mail")["tasks"]
    assert (tasks[0]["queue"], tasks[0]["priority"]) == ("mail", 0)
    human = cli("tasks", "list", "--dsn", dsn).stdout
    assert "Queue" in human and "reports" in human


def test_limits_set_list_and_clear(dsn: str) -> None:
    assert ok_json("limits", "--dsn", dsn) == {"limits": []}
    assert cli("limits", "--dsn", dsn).stdout == "no limits\n"
    assert ok_json(
        "limits", "set", "--queue", "mail", "--max-running", "10", "--rate", "100", "--per",
        "1m", "--burst", "150", "--dsn", dsn,
    ) == {
        "scope": "queue", "name": "mail", "max_running": 10, "rate": 100, "per": 60.0,
        "burst": 150,
    }  # fmt: skip
    done = cli("limits", "set", "--type", "api.call", "--rate", "5", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (0, "limit on type api.call: 5 per 1s\n")
    done = cli("limits", "set", "--queue", "slow", "--max-running", "0", "--dsn", dsn)
    assert done.stdout == "limit on queue slow: at most 0 running\n"
    assert ok_json("limits", "--dsn", dsn)["limits"] == [
        {"scope": "queue", "name": "mail", "max_running": 10, "rate": 100, "per": 60.0,
         "burst": 150, "running": 0},
        {"scope": "queue", "name": "slow", "max_running": 0, "rate": None, "per": None,
         "burst": None, "running": 0},
        {"scope": "type", "name": "api.call", "max_running": None, "rate": 5, "per": 1.0,
         "burst": 5, "running": 0},
    ]  # fmt: skip
    table = cli("limits", "--dsn", dsn).stdout
    assert "at most 10 running; 100 per 1m, in bursts of up to 150" in table
    # Setting again replaces the limit.
    ok_json("limits", "set", "--queue", "mail", "--rate", "2", "--per", "0.5", "--dsn", dsn)
    (mail,) = [lim for lim in ok_json("limits", "--dsn", dsn)["limits"] if lim["name"] == "mail"]
    assert (mail["max_running"], mail["rate"], mail["per"], mail["burst"]) == (None, 2, 0.5, 2)

    assert ok_json("limits", "clear", "--queue", "mail", "--dsn", dsn) == {
        "scope": "queue",
        "name": "mail",
        "cleared": True,
    }
    done = cli("limits", "clear", "--type", "api.call", "--dsn", dsn)
    assert done.stdout == "cleared the limit on type api.call\n"
    done = cli("limits", "clear", "--type", "api.call", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (0, "type api.call had no limit: nothing to clear\n")
    assert [lim["name"] for lim in ok_json("limits", "--dsn", dsn)["limits"]] == ["slow"]


async def test_worker_serves_the_queues_it_is_given(dsn: str, sync_conn: SyncConn) -> None:
    from asynqpg_trio import Task, sync

    from .helpers.waiting import wait_until

    ids = sync.enqueue_many(
        sync_conn,
        [Task("greet", b"mail", queue="mail"), Task("greet", b"default"), Task("greet", b"x")],
    )
    sync_conn.execute("UPDATE asynqpg_tasks SET queue = 'other' WHERE id = %s", (ids[2],))
    env = {k: v for k, v in os.environ.items() if k != "ASYNQPG_DSN"} | {"ASYNQPG_DSN": dsn}
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "asynqpg_trio._cli", "worker", "examples.worker_app:handlers"),
            *("--queue", "mail=1", "--queue", "other"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:

            def done() -> bool:
                rows = sync_conn.execute(
                    "SELECT count(*) FROM asynqpg_tasks WHERE status = 'completed'"
                ).fetchone()
                return rows is not None and rows[0] == 2

            await wait_until(done, timeout=30, what="the mail and other tasks to complete")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "running (queues: mail, other); Ctrl-C to stop" in err
    assert sorted(out.splitlines()) == ["hello, mail!", "hello, x!"]
    statuses = dict(sync_conn.execute("SELECT id, status FROM asynqpg_tasks").fetchall())
    assert statuses == {ids[0]: "completed", ids[1]: "pending", ids[2]: "completed"}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["tasks", "show", "abc"], "invalid task id 'abc'"),
        (["tasks", "cancel", "0"], "invalid task id '0'"),
        (["tasks", "delete", "-3"], "invalid task id '-3'"),
        (["tasks", "list", "--status", "done"], "valid statuses are pending, running"),
        (["tasks", "list", "--id", "1,x"], "invalid task id 'x'"),
        (["tasks", "list", "--created-after", "yesterday"], "invalid timestamp 'yesterday'"),
        (["tasks", "list", "--created-before", "2024-05-01"], "has no UTC offset"),
        (["tasks", "list", "--order-by", "payload"], "invalid choice: 'payload'"),
        (["tasks", "list", "--offset", "-1"], "non-negative integer"),
        (["tasks", "list", "--limit", "0"], "expected a number from 1 to 10000, got '0'"),
        (["tasks", "list", "--limit", "20000"], "expected a number from 1 to 10000, got '20000'"),
        (["tasks", "list", "--asc", "--desc"], "not allowed with argument --asc"),
        (["stats", "--watch", "0"], "positive number of seconds"),
        (["tasks", "list", "--queue", "q" * 129], "queue names are 1 to 128 characters long"),
        (["enqueue", "t", "p", "--priority", "6"], "a priority from -5 (least urgent) to 5"),
        (["enqueue", "t", "p", "--priority", "high"], "got 'high'"),
        (["enqueue", "t", "p", "--queue", ""], "invalid queue name ''"),
        (["queues", "pause"], "required: NAME"),
        (["queues", "stop", "mail"], "invalid choice: 'stop'"),
        (["queues", "resume", "q" * 200], "queue names are 1 to 128 characters long"),
        (["limits", "set", "--max-running", "1"], "one of the arguments --queue --type is"),
        (["limits", "set", "--queue", "q", "--type", "t", "--rate", "1"], "not allowed with"),
        (["limits", "set", "--queue", "q"], "a limit needs --max-running, --rate, or both"),
        (["limits", "set", "--queue", "q", "--max-running", "1", "--per", "1s"], "--per needs"),
        (["limits", "set", "--queue", "q", "--max-running", "1", "--burst", "3"], "--burst needs"),
        (["limits", "set", "--queue", "q", "--max-running", "-1"], "non-negative integer"),
        (["limits", "set", "--queue", "q", "--rate", "0"], "expected a positive integer"),
        (["limits", "set", "--queue", "q", "--rate", "1", "--per", "0"], "invalid period '0'"),
        (["limits", "set", "--queue", "q", "--rate", "1", "--per", "1w"], "invalid period '1w'"),
        (["limits", "set", "--queue", "q", "--rate", "1", "--per", "inf"], "invalid period"),
        (["limits", "set", "--queue", "q", "--rate", "1", "--burst", "0"], "a positive integer"),
        (["limits", "set", "--queue", "q", "--max-running", str(2**31)], "and 2147483647"),
        (["limits", "set", "--type", "t" * 256, "--rate", "1"], "1 to 255 characters long"),
        (["limits", "clear"], "one of the arguments --queue --type is required"),
        (["worker", "examples.worker_app:handlers", "--queue", "mail=0"], "CAP a positive integer"),
        (["worker", "examples.worker_app:handlers", "--queue", "=3"], "invalid queue name ''"),
        (["worker", "examples.worker_app:handlers", "--queue", "a", "--queue", "a"], "given twice"),
        (["tasks"], "required: ACTION"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_before_connecting(args: list[str], match: str) -> None:
    # The DSN points nowhere: exiting 2 (not 1) proves nothing tried to connect.
    fails(2, "--dsn", DEAD_DSN, *args, match=match)


def test_no_dsn_is_a_usage_error() -> None:
    fails(2, "stats", match="no database given: pass --dsn or set ASYNQPG_DSN")
    fails(2, "stats", "--dsn", "host='unterminated", match="invalid DSN")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield silent.getsockname()[1]


def test_unreachable_database_is_one_line_exit_1(silent_port: int) -> None:
    fails(1, "stats", "--dsn", DEAD_DSN, match="cannot connect to the database")
    silent = f"host=127.0.0.1 port={silent_port} user=postgres"
    fails(
        1, "tasks", "list", "--dsn", silent, "--connect-timeout", "2", match="no answer within 2 s"
    )


def test_connect_timeout_bounds_the_whole_connect(silent_port: int) -> None:
    # libpq's own connect_timeout is whole seconds, at least 2, per address: --connect-timeout
    # 0.5 used to take over 2 s.  The message names the bound that ended the wait.
    silent = f"host=127.0.0.1 port={silent_port} user=postgres"
    fails(1, "stats", "--dsn", silent, "--connect-timeout", "0.5", match="no answer within 0.5 s")
    # The DSN's own connect_timeout wins.
    fails(1, "stats", "--dsn", f"{silent} connect_timeout=1", match="no answer within 1 s")


def _one_line_failure(done: subprocess.CompletedProcess[str], code: int, match: str) -> None:
    assert done.returncode == code, done
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert done.stderr.startswith("asynqpg-trio"), done.stderr
    assert match in done.stderr, done.stderr


def test_every_error_is_one_line(empty_dsn: str, dsn: str) -> None:
    worker = ("worker", "examples.worker_app:handlers", "--connect-timeout", "1")
    cases: list[tuple[list[str], int, str]] = [
        (["stats", "--dsn", DEAD_DSN], 1, "cannot connect to the database"),
        ([*worker, "--dsn", DEAD_DSN], 1, "cannot connect to the database"),
        (["tasks", "list", "--dsn", empty_dsn], 1, "run `asynqpg-trio migrate"),
        ([*worker, "--dsn", empty_dsn], 1, "run `asynqpg-trio migrate"),
        (["worker", "examples.worker_app:greet", "--dsn", dsn], 2, "is an async function"),
        (["worker", "examples.worker_app", "--dsn", dsn], 2, "expected MODULE:ATTR"),
        (["worker", "tests.test_cli:make", "--dsn", dsn], 2, "needs arguments"),
        (["worker", "tests.test_cli:DEAD_DSN", "--dsn", dsn], 2, "is a str: expected a mapping"),
        (["tasks", "list", "--limit", "0", "--dsn", dsn], 2, "from 1 to 10000"),
        (["tasks", "show", "424242", "--dsn", dsn, "--json"], 1, "task 424242 not found"),
    ]
    for args, code, match in cases:
        _one_line_failure(cli(*args), code, match)


def test_json_errors_go_to_stdout_too(dsn: str) -> None:
    for args, code, match in [
        (["tasks", "show", "424242", "--dsn", dsn], 1, "task 424242 not found"),
        (["tasks", "list", "--limit", "0", "--dsn", dsn], 2, "from 1 to 10000"),
        (["stats", "--dsn", DEAD_DSN], 1, "cannot connect to the database"),
        (["worker", "examples.worker_app:greet", "--dsn", dsn], 2, "is an async function"),
    ]:
        done = cli(*args, "--json")
        _one_line_failure(done, code, match)
        assert done.stdout.count("\n") == 1, done.stdout
        error = json.loads(done.stdout)
        assert error["exit_status"] == code
        assert match in error["error"]
        assert error["error"] in done.stderr
    assert cli("tasks", "show", "424242", "--dsn", dsn).stdout == ""  # without --json: nothing


def _help(capsys: pytest.CaptureFixture[str], *path: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        run([*path, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _subcommands(help_text: str) -> list[str]:
    # argparse lists subcommands indented by four spaces under the COMMAND/ACTION metavar.
    return re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", help_text, flags=re.MULTILINE)


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line, by its command path ("" for the top one)."""

    def walk(path: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(f"{path} {name}".strip(), sub)

    yield from walk("", build_parser())


def test_every_command_and_option_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    parsers = dict(_parsers())
    assert {"tasks list", "queues pause", "limits set", "worker", "demo", "dashboard"} <= set(
        parsers
    )
    for path, parser in parsers.items():
        assert parser.description, f"{path or 'the top parser'} has no description"
        assert parser.description in " ".join(_help(capsys, *path.split()).split())
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):  # its commands: above
                assert action.help, f"{path}: {action.option_strings or action.dest} has no help"


def test_readme_command_line_section_matches_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line\n", 1)[1].split("\n## ", 1)[0]
    groups = ("tasks", "queues", "limits")  # commands with actions
    listed: dict[str, str] = {}
    for item in re.split(r"^- ", section, flags=re.MULTILINE)[1:]:
        usage = re.match(r"`([^`]+)`", item)
        assert usage is not None, item
        words = usage.group(1).split()
        names = [words[0]]
        if words[0] in groups and len(words) > 1 and re.fullmatch(r"[a-z|-]+", words[1]):
            names = [f"{words[0]} {a}" for a in words[1].split("|")]
        for name in names:
            listed[name] = item
    top = _subcommands(_help(capsys))
    actual = [name for name in top if name != "tasks"]  # `tasks` alone is not a command
    for group in groups:
        actual += [f"{group} {name}" for name in _subcommands(_help(capsys, group))]
    assert sorted(listed) == sorted(actual)
    for name, item in listed.items():
        text = _help(capsys, *name.split())
        for option in re.findall(r"--[a-z][a-z-]*", item):
            assert option in text, f"README names {option} for {name}; its --help does not"
    intro = section.split("\n- ", 1)[0]
    for option in re.findall(r"--[a-z][a-z-]*", intro):
        assert option in _help(capsys), option


def test_enqueue_unique_reports_the_holder(dsn: str) -> None:
    first = ok_json("enqueue", "--dsn", dsn, "report", "same", "--unique")["id"]
    fails(1, "enqueue", "--dsn", dsn, "report", "same", "--unique", match=f"(id {first})")
    other = ok_json("enqueue", "--dsn", dsn, "report", "other", "--unique")["id"]
    assert other != first
    keyed = ok_json("enqueue", "--dsn", dsn, "report", "a", "--unique-key", "k")["id"]
    fails(1, "enqueue", "--dsn", dsn, "report", "b", "--unique-key", "k", match=f"(id {keyed})")
    # A period or a state alone asks for uniqueness too, by the payload.
    timed = ok_json("enqueue", "--dsn", dsn, "daily", "x", "--unique-period", "3600")["id"]
    fails(1, "enqueue", "--dsn", dsn, "daily", "x", "--unique-period", "3600", match=f"{timed}")
    fails(
        2,
        "enqueue",
        "--dsn",
        dsn,
        "t",
        "x",
        "--unique-state",
        "completed",
        match="unique.states",
    )
    # Without a unique option, equal payloads are two tasks.
    plain = {ok_json("enqueue", "--dsn", dsn, "report", "same")["id"] for _ in range(2)}
    assert len(plain) == 2
