"""Take the README's dashboard screenshots: docs/dashboard-overview.png, docs/dashboard-tasks.png.

Usage::

    python scripts/screenshots.py [--dsn SERVER_DSN] [--out docs]

It creates a scratch database on the server (``--dsn``, else ``$ASYNQPG_TEST_DSN``, else an
embedded PostgreSQL), fills it with a deterministic sample queue, serves the dashboard under
``/asynqpg`` with Basic auth (``asynqpg-trio dashboard``, Hypercorn's Trio worker), takes the
screenshots with headless Chromium (Debian's ``chromium``, driven by Playwright), and drops
the database.  Needs the web and dev extras and ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import trio
from psycopg import conninfo, sql

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PREFIX = "/asynqpg"
USER, PASSWORD = "admin", "screenshots-only"

# (type, status, count, messages); completed and failed tasks finish across the last minutes.
SAMPLE = [
    ("email.send", "completed", 240, []),
    ("email.send", "pending", 37, []),
    ("email.send", "running", 4, []),
    ("email.send", "failed", 3, ["smtp: 421 too many connections", "smtp: 554 rejected"]),
    ("report.build", "completed", 58, []),
    ("report.build", "pending", 12, []),
    ("report.build", "running", 2, []),
    ("report.build", "cancelled", 2, []),
    ("image.resize", "completed", 131, []),
    ("image.resize", "failed", 6, ["decode: unsupported color profile"]),
    ("image.resize", "pending", 5, []),
    ("webhook.deliver", "completed", 96, []),
    ("webhook.deliver", "failed", 4, ["POST https://hooks.example.com: 503", "timeout after 30s"]),
    ("webhook.deliver", "pending", 9, []),
]


def seed(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Insert the sample queue; finished tasks spread over the last 14 minutes."""
    for n, (task_type, status, count, messages) in enumerate(SAMPLE):
        conn.execute(
            """INSERT INTO asynqpg_tasks (type, payload, status, messages, blocked_till,
                   attempts_left, attempts_elapsed, created_at, finalized_at, attempted_at,
                   lease_token, lease_owner)
               SELECT %(type)s, convert_to(json_build_object('n', i, 'to',
                          'user' || i || '@example.com')::text, 'UTF8'),
                      %(status)s::text, %(messages)s::text[],
                      asynqpg_now() - make_interval(secs => (i * 7 + %(n)s) %% 840)
                          + CASE WHEN %(status)s::text = 'running' THEN interval '5 minutes'
                                 ELSE interval '0' END,
                      CASE WHEN %(status)s::text IN ('failed', 'completed') THEN 0 ELSE 2 END,
                      cardinality(%(messages)s::text[]) + 1,
                      asynqpg_now() - make_interval(secs => 900 + i),
                      CASE WHEN %(status)s::text IN ('completed', 'failed', 'cancelled')
                           THEN asynqpg_now() - make_interval(
                               secs => ((i * 37 + %(n)s * 11) %% 780) * (1 + (i %% 3)) / 3.0)
                      END,
                      asynqpg_now() - make_interval(secs => (i * 5) %% 600),
                      CASE WHEN %(status)s::text = 'running'
                           THEN nextval('asynqpg_lease_token_seq') END,
                      CASE WHEN %(status)s::text = 'running' THEN 'worker-' || (i %% 2 + 1) END
               FROM generate_series(1, %(count)s) AS i""",
            {"type": task_type, "status": status, "count": count, "messages": messages, "n": n},
        )


@contextlib.contextmanager
def scratch_database(server_dsn: str) -> Iterator[str]:
    """A new migrated database on the server, dropped on exit."""
    from asynqpg_trio import migrate, open_pool

    name = f"asynqpg_screens_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(server_dsn, dbname=name)
    try:

        async def apply() -> None:
            async with open_pool(dsn, min_size=1, max_size=1) as pool:
                await migrate(pool)

        trio.run(apply)
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def dashboard(dsn: str) -> Iterator[str]:
    """Run ``asynqpg-trio dashboard`` on a free port; yield its URL (prefix included)."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "asynqpg_trio._cli._web", "--dsn", dsn, "--port", "0"),
            *("--prefix", PREFIX, "--basic-user", USER, "--basic-password", PASSWORD),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.search(r"dashboard listening on (\S+)", line)
            if found:
                # Keep reading its stderr so that the server never blocks on a full pipe.
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                yield found[1]
                break
        else:
            raise RuntimeError(f"the dashboard did not start (exit status {proc.wait()})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def shoot(url: str, out: Path) -> list[Path]:
    """Save the overview and the task list as PNGs under ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 820},
            device_scale_factor=1,
            http_credentials={"username": USER, "password": PASSWORD},
        )
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("[data-count=total]")
        saved.append(out / "dashboard-overview.png")
        page.screenshot(path=saved[-1], full_page=True)
        page.goto(f"{url}tasks")
        page.wait_for_selector("table.tasks")
        saved.append(out / "dashboard-tasks.png")
        page.screenshot(path=saved[-1], full_page=False)
        browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("ASYNQPG_TEST_DSN"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        server = args.dsn
        if not server:
            from asynqpg_trio._pg._server import embedded_server

            server = stack.enter_context(embedded_server())
        dsn = stack.enter_context(scratch_database(server))
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed(conn)
        url = stack.enter_context(dashboard(dsn))
        for path in shoot(url, args.out):
            print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
