"""Issue #22 in headless Chromium: every page of the dashboard (overview, tasks, a task's
timeline, scheduled, queues, consumers with two live consumers, schedules), each one
screenshotted, and the task list usable at a phone's width (420 px, no sideways scroll).

Screenshots go to a temporary directory; with ``ASYNQPG_SCREENSHOTS=docs/screenshots`` they
replace the ones kept in the repository.  Needs Debian's ``chromium`` and ``playwright`` (as
``test_web_browser.py``); never skips.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import trio

from asynqpg_trio import Handler, Producer, Task, TaskInfo, open_consumer, open_pool

from .helpers.web import ROOT, SyncConn, dashboard_process, make
from .test_web_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, PREFIX, USER, _need_chromium

PAGES = ("", "tasks", "scheduled", "queues", "consumers", "schedules")


def _two_consumers(dsn: str, ready: threading.Event, stop: threading.Event) -> None:
    """Two consumers, each running one task that waits for ``stop`` (in a thread)."""

    async def main() -> None:
        started, release = trio.Event(), trio.Event()
        count = 0

        async def hold(task: TaskInfo) -> None:
            nonlocal count
            count += 1
            if count == 2:
                started.set()
            await release.wait()

        options: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "prefetch": 0}
        async with open_pool(dsn) as pool:
            producer = Producer(pool)
            for _ in range(2):
                await producer.enqueue(Task("video.encode", b"{}"))
            handlers = {"video.encode": Handler(hold, workers=1)}
            async with (
                open_consumer(pool, handlers=handlers, consumer_id="worker-a", **options),
                open_consumer(pool, handlers=handlers, consumer_id="worker-b", **options),
            ):
                await started.wait()
                ready.set()
                await trio.to_thread.run_sync(stop.wait)
                release.set()

    trio.run(main)


def test_every_page_in_chromium(dsn: str, sync_conn: SyncConn, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    out = Path(os.environ.get("ASYNQPG_SCREENSHOTS") or tmp_path)
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    failed = make(
        sync_conn, "failed", type="email", messages=("ValueError: bad address\n  File x",)
    )
    for _ in range(3):
        make(sync_conn, "completed", type="report")
    sync_conn.execute(
        "UPDATE asynqpg_tasks SET blocked_till = asynqpg_now() + interval '2 h' WHERE id = %s",
        (make(sync_conn, "pending", type="report"),),
    )
    sync_conn.execute(
        """INSERT INTO asynqpg_schedules (name, type, spec, timezone, catch_up, last_fire,
               next_fire)
           VALUES ('nightly-report', 'report', '0 3 * * *', 'UTC', 'latest',
                   asynqpg_now() - interval '3 h', asynqpg_now() + interval '21 h')"""
    )
    ready, stop = threading.Event(), threading.Event()
    consumers = threading.Thread(target=_two_consumers, args=(dsn, ready, stop), daemon=True)
    consumers.start()
    try:
        assert ready.wait(30), "the two consumers did not start their tasks"
        server = dashboard_process(
            dsn,
            *("--prefix", PREFIX, "--refresh", "0.5"),
            *("--basic-user", USER, "--basic-password", PASSWORD),
        )
        with server as (url, _), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD},
                    viewport={"width": 1100, "height": 760},
                )
                page = context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda error: problems.append(str(error)))
                for path in PAGES:
                    page.goto(f"{url}{path}")
                    expect(page.locator("main#live")).to_be_visible()
                    name = path or "overview"
                    page.screenshot(path=str(out / f"dashboard-{name}.png"))
                # Consumers: both live, each running its task.
                page.goto(f"{url}consumers")
                for ident in ("worker-a", "worker-b"):
                    card = page.locator(f'[data-consumer="{ident}"]')
                    expect(card).to_be_visible()
                    expect(card.locator("tr[data-task-id]")).to_have_count(1)
                # Relative times, the absolute time on hover.
                first = page.locator("time[datetime]").first
                expect(first).to_contain_text("ago")
                assert "UTC" in (first.get_attribute("title") or "")
                # The task page: one ordered timeline.
                page.goto(f"{url}tasks/{failed}")
                expect(page.locator("ol.timeline li").first).to_contain_text("Enqueued")
                page.screenshot(path=str(out / "dashboard-task.png"))
                # Scheduled: the delayed task, not the others.
                page.goto(f"{url}scheduled")
                expect(page.locator("tr[data-task-id]")).to_have_count(1)
                # Schedules.
                page.goto(f"{url}schedules")
                expect(page.locator('tr[data-schedule="nightly-report"]')).to_be_visible()
                # A phone: the task list fits 420 px without scrolling sideways.
                phone = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD},
                    viewport={"width": 420, "height": 860},
                )
                small = phone.new_page()
                small.goto(f"{url}tasks")
                expect(small.locator("tr[data-task-id]").first).to_be_visible()
                width = small.evaluate("document.scrollingElement.scrollWidth")
                assert width <= 420, f"the task list is {width} px wide at 420 px"
                small.screenshot(path=str(out / "dashboard-tasks-phone.png"))
            finally:
                browser.close()
        assert problems == []
    finally:
        stop.set()
        consumers.join(30)
    for name in (*(p or "overview" for p in PAGES), "task", "tasks-phone"):
        shot = out / f"dashboard-{name}.png"
        assert shot.stat().st_size > 1000
