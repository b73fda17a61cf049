"""The dashboard in headless Chromium, served by the dashboard command (Hypercorn's Trio
worker) under a non-root prefix with Basic auth: counts, live refresh, the dead-letter view's
Retry all, cancelling a task from its detail page, and pausing and resuming a queue from the
Queues page, all under the dashboard's Content Security Policy (no violation reported).  And
another site cannot frame it.

Needs Debian's ``chromium`` and the ``playwright`` package (``.ci/run`` installs both).  It
never skips: without them it fails and says what to install.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .helpers.web import SyncConn, dashboard_process, make, status_of

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = Path("/usr/bin/chromium")
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
PREFIX = "/ops/queue"
USER, PASSWORD = "admin", "browser-test"


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing; install it with "
            "`apt-get update && apt-get install -y chromium chromium-driver`"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing; `pip install playwright` (no browsers)")


def test_dashboard_in_chromium(dsn: str, sync_conn: SyncConn) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    failed = [make(sync_conn, "failed", type="email", messages=("smtp down",)) for _ in range(3)]
    pending = make(sync_conn, "pending", type="report")
    make(sync_conn, "completed", type="report")
    server = dashboard_process(
        dsn,
        *("--prefix", PREFIX, "--refresh", "0.5"),
        *("--basic-user", USER, "--basic-password", PASSWORD),
    )
    with server as (url, _), sync_playwright() as pw:
        assert url.endswith(f"{PREFIX}/")
        origin = url.removesuffix(f"{PREFIX}/")
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            anonymous = browser.new_context()
            assert anonymous.request.get(url).status == 401
            anonymous.close()

            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
            page = context.new_page()
            requested: list[str] = []
            problems: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None,
            )

            # Overview: the counts, then a live refresh without reloading the page.
            page.goto(url)
            expect(page.locator('[data-count="total"]')).to_have_text("5")
            expect(page.locator('[data-count="failed"]')).to_have_text("3")
            expect(page.locator('[data-count="pending"]')).to_have_text("1")
            page.evaluate("window.notReloaded = true")
            failed.append(make(sync_conn, "failed", type="email", messages=("smtp down",)))
            expect(page.locator('[data-count="failed"]')).to_have_text("4")
            assert page.evaluate("window.notReloaded") is True

            # Filter the task list to failed: the dead-letter view; retry them all.
            page.get_by_role("link", name="Tasks", exact=True).click()
            expect(page).to_have_url(f"{url}tasks")
            page.select_option("select[name=status]", "failed")
            page.get_by_role("button", name="Filter").click()
            expect(page).to_have_url(re.compile(re.escape(f"{url}tasks?status=failed")))
            expect(page.locator("main h1")).to_contain_text("Dead letters")
            expect(page.locator("tr[data-task-id]")).to_have_count(4)
            page.get_by_role("button", name="Retry all").click()
            expect(page.locator("#flash")).to_have_text("Re-queued 4 failed tasks")
            expect(page.locator("tr[data-task-id]")).to_have_count(0)
            assert {status_of(sync_conn, i) for i in failed} == {"pending"}

            # They are pending now.
            page.select_option("select[name=status]", "pending")
            page.get_by_role("button", name="Filter").click()
            rows = page.locator('tr[data-status="pending"]')
            expect(rows).to_have_count(5)
            shown = {int(rows.nth(i).get_attribute("data-task-id") or 0) for i in range(5)}
            assert shown == {*failed, pending}

            # Cancel one pending task from its detail page.
            page.locator(f'a[href="{PREFIX}/tasks/{pending}"]').click()
            expect(page).to_have_url(f"{url}tasks/{pending}")
            badge = page.locator("main h1 .status")
            expect(badge).to_have_text("pending")
            # The payload, once revealed, stays revealed across live refreshes.
            page.get_by_text("Reveal payload").click()
            expect(page.locator("pre.payload")).to_contain_text('"n": 1')
            before = page.evaluate("document.body.dataset.refreshed || ''")
            page.wait_for_function("b => (document.body.dataset.refreshed || '') !== b", arg=before)
            expect(page.locator("pre.payload")).to_be_visible()
            page.get_by_role("button", name="Cancel").click()
            expect(page.locator("#flash")).to_have_text(f"Task {pending} cancelled")
            expect(badge).to_have_text("cancelled")
            expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
            assert status_of(sync_conn, pending) == "cancelled"
        finally:
            browser.close()
    assert requested and all(u.startswith(f"{origin}{PREFIX}/") for u in requested), requested
    assert not [p for p in problems if "Content Security Policy" in p], problems
    assert problems == []


def _paused(sync_conn: SyncConn, queue: str) -> bool | None:
    query = "SELECT paused FROM asynqpg_queues WHERE name = %s"
    row = sync_conn.execute(query, (queue,)).fetchone()
    return None if row is None else bool(row[0])


def test_queues_page_pause_and_resume_in_chromium(dsn: str, sync_conn: SyncConn) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    make(sync_conn, "pending", type="email", queue="mail", priority=5)
    make(sync_conn, "failed", type="email", queue="mail")
    make(sync_conn, "pending", type="report")
    server = dashboard_process(
        dsn,
        *("--prefix", PREFIX, "--refresh", "0.5"),
        *("--basic-user", USER, "--basic-password", PASSWORD),
    )
    with server as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None,
            )
            page.goto(url)
            page.get_by_role("link", name="Queues", exact=True).click()
            expect(page).to_have_url(f"{url}queues")
            mail = page.locator('tr[data-queue="mail"]')
            expect(mail).to_have_attribute("data-paused", "false")
            expect(mail.locator(".state")).to_have_text("active")
            expect(page.locator('tr[data-queue="default"] .state')).to_have_text("active")

            # Pause mail: the button goes through the JSON API with the CSRF token, and the
            # live part shows the queue paused without reloading the page.
            page.evaluate("window.notReloaded = true")
            mail.get_by_role("button", name="Pause").click()
            expect(page.locator("#flash")).to_have_text("Queue mail paused")
            expect(mail).to_have_attribute("data-paused", "true")
            expect(mail.locator(".state")).to_have_text("paused")
            expect(mail.get_by_role("button", name="Pause")).to_have_count(0)
            assert _paused(sync_conn, "mail") is True
            assert page.evaluate("window.notReloaded") is True

            # A pause made elsewhere (the CLI, another dashboard) shows at the next refresh.
            sync_conn.execute("INSERT INTO asynqpg_queues (name, paused) VALUES ('default', true)")
            expect(page.locator('tr[data-queue="default"]')).to_have_attribute(
                "data-paused", "true"
            )

            # Resume mail.
            mail.get_by_role("button", name="Resume").click()
            expect(page.locator("#flash")).to_have_text("Queue mail resumed")
            expect(mail).to_have_attribute("data-paused", "false")
            expect(mail.get_by_role("button", name="Pause")).to_have_count(1)
            assert _paused(sync_conn, "mail") is False

            # The queue's name links to its tasks.
            mail.get_by_role("link", name="mail", exact=True).click()
            expect(page).to_have_url(f"{url}tasks?queue=mail")
            expect(page.locator("tr[data-task-id]")).to_have_count(2)
            expect(page.locator("select[name=queue]")).to_have_value("mail")
        finally:
            browser.close()
    assert problems == []


@contextmanager
def _site(body: bytes) -> Iterator[int]:
    """Another site: an HTTP server on 127.0.0.1 answering every GET with ``body``; yields
    its port.  Chromium lets a page served from a local address frame a local dashboard
    (a page it did not load from the network counts as public and may not)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_another_site_cannot_frame_the_dashboard(dsn: str, sync_conn: SyncConn) -> None:
    """A page on another site frames the dead-letter view of an open dashboard (the default,
    no auth) to overlay "Retry all" with its own bait: Chromium must refuse the frame (CSP
    ``frame-ancestors 'none'``; ``X-Frame-Options: DENY`` for older browsers).  Issue 16,
    item 6: the frame used to load, "Retry all" and all."""
    _need_chromium()
    from playwright.sync_api import sync_playwright

    make(sync_conn, "failed", type="email")
    with dashboard_process(dsn, "--prefix", PREFIX) as (url, _):
        target = f"{url}tasks?status=failed"
        bait = f'<!doctype html><iframe src="{target}" width="900" height="600"></iframe>'
        with _site(bait.encode()) as port, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                evil = browser.new_page()
                console: list[str] = []
                evil.on("console", lambda m: console.append(m.text))
                # "localhost" is another site than the dashboard's "127.0.0.1".  goto returns
                # at the load event, which waits for the frame (or its error page).
                evil.goto(f"http://localhost:{port}/")
                (framed,) = evil.main_frame.child_frames
                # Under load the refusal (the frame's error page and the console report) can
                # land just after the load event: give it up to 10 s to arrive.
                for _ in range(100):
                    refused = any("frame-ancestors 'none'" in text for text in console)
                    if refused and framed.url:
                        break
                    evil.wait_for_timeout(100)
                retry_all = evil.frame_locator("iframe").get_by_role("button", name="Retry all")
                assert (framed.url, retry_all.count()) == ("chrome-error://chromewebdata/", 0)
                assert any("frame-ancestors 'none'" in text for text in console), console
            finally:
                browser.close()
