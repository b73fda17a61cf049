"""The examples, the ``worker`` command and the ``demo`` command, run as users run them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("cwd", ROOT)
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kw)


def test_trio_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/trio_consumer.py", dsn])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("sent email") == 5
    assert "done: 5 emails" in proc.stdout


def test_pgbouncer_example(dsn: str) -> None:
    from .helpers.servers import pgbouncer

    with pgbouncer(dsn, pool_size=2) as bouncer:
        for extra in ([dsn], []):  # LISTEN on a direct connection, then poll-only
            proc = _run([sys.executable, "examples/pgbouncer.py", bouncer.dsn_for(dsn), *extra])
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.count("resized img") == 3
            mode = "listening directly" if extra else "poll-only"
            assert proc.stdout.splitlines()[-1] == f"{mode} - done"


def test_anyio_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/anyio_consumer.py", dsn])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("resized image") == 3


def test_periodic_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/periodic.py", dsn])
    assert proc.returncode == 0, proc.stderr
    beats = [line for line in proc.stdout.splitlines() if line.startswith("heartbeat of ")]
    assert len(beats) >= 3
    assert all(line.endswith(" UTC: ok") for line in beats)
    assert proc.stdout.endswith("done: 3 heartbeats\n")
    with psycopg.connect(dsn) as conn:
        names = conn.execute("SELECT name FROM asynqpg_schedules ORDER BY name").fetchall()
    assert names == [("heartbeat every 2s",), ("report.daily cron 0 6 * * * Europe/Berlin",)]


def test_periodic_tasks_in_the_readme_are_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Periodic tasks\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "examples" / "periodic.py").read_text()


def test_queues_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/queues.py", dsn])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "limit on queue mail: max_running=1, rate=100 per 60 s, burst=10"
    # The reports wait in their paused queue while the mail goes out...
    assert lines.count("queue reports (paused): 3 pending") == 2
    sent = [i for i, line in enumerate(lines) if line.startswith("sent mail to ")]
    assert len(sent) == 3
    assert max(sent) < lines.index("resumed queue reports")
    # ...and, resumed, run most urgent first (the consumer holds one report at a time).
    built = [line for line in lines if line.startswith("built the ")]
    assert built == [
        "built the quarterly report (priority 5)",
        "built the weekly report (priority 0)",
        "built the daily report (priority -3)",
    ]
    assert lines.index("resumed queue reports") < lines.index(built[0])
    assert lines[-3:] == [
        "queue mail (active): 3 completed",
        "queue reports (active): 3 completed",
        "done",
    ]
    with psycopg.connect(dsn) as conn:  # it leaves no limit and no paused queue behind
        assert conn.execute("SELECT count(*) FROM asynqpg_limits").fetchone() == (0,)
        assert conn.execute("SELECT name, paused FROM asynqpg_queues").fetchall() == [
            ("reports", False)
        ]


def test_consumers_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/consumers.py", dsn])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(line.split(" on ")[0] for line in lines[:2]) == ["encoder-1", "encoder-2"]
    assert all(re.search(r": running tasks \[\d+\]$", line) for line in lines[:2]), lines
    assert lines[2] == "after shutdown: 0 consumers registered"


def test_unique_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/unique.py", dsn])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first = lines[0].removeprefix("enqueued task ")
    assert lines[1] == f"a duplicate of task {first}: not enqueued"
    assert lines[2].startswith("batch: ['duplicate', ") and lines[2].endswith(", 'duplicate']")
    assert sum(line.startswith("this hour's digest is task ") for line in lines) == 1
    assert sum(line.startswith("refreshed the cache") for line in lines) == 3
    assert any(line.endswith(" again, the first one being done") for line in lines)
    assert lines[-1] == "done"


def test_results_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/results.py", dsn])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "thumbnails: ['cat.png@64', 'cat.png@128', 'cat.png@256']"
    assert lines[1] == "check returned b'hello'"
    assert lines[2] == "stored result: b'hello'"
    assert lines[3].endswith(" is completed, result 5 bytes")
    assert lines[4] == "progress 100%: resized to 256px"
    assert lines[5].startswith("failed: task ")
    assert lines[-1] == "done"


def test_django_example(dsn: str) -> None:
    """The Django recipe: a task enqueued on Django's own connection inside
    ``transaction.atomic()`` is rolled back with the order or committed with it, and a sync
    handler using Django processes the committed one."""
    proc = _run([sys.executable, "examples/django_app.py", dsn])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "rolled back: order 2: payment refused",
        "orders kept: [1]",
        f"confirmed order 1 (Django on {psycopg.conninfo.conninfo_to_dict(dsn)['dbname']})",
        "done",
    ]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT type, payload, status FROM asynqpg_tasks").fetchall()
    assert rows == [("order.confirm", b"1", "completed")]  # order 2's task was rolled back


def test_fastapi_example(dsn: str) -> None:
    proc = _run([sys.executable, "examples/fastapi_app.py", dsn])
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == [
        "done",
        "signed up ann@example.com: task 1",
        "signed up bob@example.com: task 2",
        "welcome email sent to ann@example.com",
        "welcome email sent to bob@example.com",
    ]


def test_fastapi_app_with_the_testing_harness_on_asyncio(dsn: str) -> None:
    """The FastAPI recipe on anyio's asyncio backend: the app enqueues (its lifespan without a
    consumer), the testing harness runs the example's handlers."""
    import anyio
    import httpx

    from asynqpg_trio import TaskStatus
    from asynqpg_trio.testing import EnqueuedTask, open_harness
    from examples.fastapi_app import create_app, handlers

    async def scenario() -> list[EnqueuedTask]:
        app = create_app(dsn, consume=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                for email in ("ann@example.com", "bob@example.com"):
                    response = await client.post("/signup", params={"email": email})
                    assert response.status_code == 200, response.text
            async with open_harness(dsn, handlers=handlers) as harness:
                assert [t.status for t in await harness.tasks()] == [TaskStatus.PENDING] * 2
                with anyio.fail_after(30):
                    await harness.drain()
                return await harness.tasks("email.welcome")

    tasks = anyio.run(scenario, backend="asyncio")
    assert [(t.status, t.json()) for t in tasks] == [
        (TaskStatus.COMPLETED, {"email": "ann@example.com"}),
        (TaskStatus.COMPLETED, {"email": "bob@example.com"}),
    ]


def test_quickstart_in_the_readme_is_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "examples" / "quickstart.py").read_text()


def test_quickstart_prints_what_happens_and_stops_on_ctrl_c(dsn: str) -> None:
    env = {**os.environ, "ASYNQPG_DSN": dsn, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(60, proc.kill)  # a hang ends the readline loop below
        watchdog.start()
        seen: list[str] = []
        try:
            while not (
                any("Ctrl-C to stop" in line for line in seen)
                and any(line.startswith("processed task") for line in seen)
            ):
                line = proc.stdout.readline()
                assert line, f"exited early: {seen}"
                seen.append(line)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            watchdog.cancel()
    assert (proc.returncode, err) == (0, ""), err
    lines = [*seen, *out.splitlines(keepends=True)]
    assert lines[0].startswith("enqueued task ")
    assert lines[-1] == "stopped\n"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM asynqpg_tasks").fetchall() == [("completed",)]


def test_quickstart_without_a_dsn_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASYNQPG_DSN"}
    proc = _run([sys.executable, "examples/quickstart.py"], env=env)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("set ASYNQPG_DSN")


def test_demo_command(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        from asynqpg_trio import Task, sync

        mine = sync.enqueue(conn, Task("email.send", b"not the demo's"))
    proc = _run([sys.executable, "-m", "asynqpg_trio._cli", "demo", "--tasks", "300", "--dsn", dsn])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("demo on your database ")  # said before anything happens
    assert "the demo's tasks are deleted at the end" in out
    assert "every task ended as intended" in out
    assert "deleted the demo's 300 tasks" in out
    next_steps = out.split("Next:\n", 1)[1]
    for hint in ("asynqpg-trio --help", "asynqpg-trio dashboard", "examples/", "worker"):
        assert hint in next_steps
    assert not [line for line in out.splitlines() if line.rstrip().endswith(";")]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, status FROM asynqpg_tasks").fetchall()
    # The demo runs beside other work: it leaves tasks it did not create alone, and its own
    # are gone.
    assert rows == [(mine, "pending")]


def test_demo_json_summary_and_keep(dsn: str) -> None:
    proc = _run(
        [sys.executable, "-m", "asynqpg_trio._cli", "demo", "--tasks", "40", "--keep", "--json"],
        env={**os.environ, "ASYNQPG_DSN": dsn},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1  # one JSON document; the progress went to stderr
    summary = json.loads(proc.stdout)
    assert (summary["ok"], summary["tasks"], summary["kept"], summary["deleted"]) == (
        True,
        40,
        True,
        0,
    )
    assert sum(summary["final"].values()) == 40
    assert "$ASYNQPG_DSN" in proc.stderr
    assert "are left there (--keep)" in proc.stderr
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM asynqpg_tasks WHERE starts_with(type, %s) GROUP BY 1",
            (summary["type_prefix"],),
        ).fetchall()
    assert {str(k): int(v) for k, v in rows} == summary["final"]


def test_editable_install_exposes_only_the_package(tmp_path: Path) -> None:
    # Run from elsewhere, so the repository root is not the working directory.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name in ("tests", "examples", "benchmarks"):
        proc = _run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, env=env)
        assert f"No module named '{name}'" in proc.stderr, proc
    proc = _run([sys.executable, "-c", "import asynqpg_trio"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def test_worker_command_graceful_sigterm(dsn: str, sync_conn: Any) -> None:
    from asynqpg_trio import Task, sync

    sync.enqueue_many(sync_conn, [Task("greet", b"world")])
    env = {**os.environ, "ASYNQPG_DSN": dsn}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynqpg_trio._cli", "worker", "examples.worker_app:handlers"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = sync_conn.execute("SELECT status FROM asynqpg_tasks").fetchone()
        if row == ("completed",):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "hello, world!" in out
    assert "worker stopped: completed 1" in err


# --8<-- [start:harness]
async def test_worker_app_handlers_with_the_testing_harness(
    autojump_clock: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from asynqpg_trio import Task, TaskStatus
    from asynqpg_trio.testing import FakeDatabase, open_harness
    from examples.worker_app import handlers

    async with open_harness(FakeDatabase(), handlers=handlers) as harness:
        await harness.enqueue_many(
            [
                Task("greet", b"world"),
                Task("words.count", b"one two three"),
                Task("words.count", b" "),
            ]
        )
        await harness.drain()
        tasks = await harness.tasks()
    assert [(t.type, t.status) for t in tasks] == [
        ("greet", TaskStatus.COMPLETED),
        ("words.count", TaskStatus.COMPLETED),
        ("words.count", TaskStatus.FAILED),
    ]
    assert tasks[2].messages[0].startswith("SkipRetry: nothing to count")
    out = capsys.readouterr().out
    assert "hello, world!" in out
    assert f"3 words in task {tasks[1].id}" in out


# --8<-- [end:harness]


def test_worker_command_bad_target(dsn: str) -> None:
    proc = _run(
        [sys.executable, "-m", "asynqpg_trio._cli", "worker", "nope:handlers", "--dsn", dsn]
    )
    assert proc.returncode == 2
    assert "cannot import 'nope'" in proc.stderr
