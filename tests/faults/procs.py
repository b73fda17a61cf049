"""Consumer processes for the fault scenarios: ``asynqpg-trio worker`` runs of `worker_app`.

A `Worker` is started with its settings, reports ready once the worker command has printed
that it runs, and can be signalled (SIGTERM, SIGKILL) and measured (RSS from ``/proc``).  Its
stderr goes to a log file kept under the test's tmp_path, shown when a wait fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from asynqpg_trio import MaintenanceConfig

ROOT = Path(__file__).resolve().parents[2]

#: Maintenance settings under which a dead consumer's expired leases are rescued within about
#: half a second (and a dead leader replaced within about four).
FAST_MAINTENANCE: dict[str, Any] = {
    "ttl": 3.0,
    "renew_interval": 1.0,
    "janitor_interval": 0.5,
    "resign_grace": 1.0,
}


def fast_maintenance() -> MaintenanceConfig:
    """`FAST_MAINTENANCE` for an in-process consumer."""
    return MaintenanceConfig(**FAST_MAINTENANCE)


class Worker:
    """One ``asynqpg-trio worker tests.faults.worker_app:options`` process."""

    def __init__(self, dsn: str, consumer_id: str, log_dir: Path, **config: Any) -> None:
        self.dsn = dsn
        self.consumer_id = consumer_id
        self.config = {"consumer_id": consumer_id, **config}
        self.log_path = log_dir / f"{consumer_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        """Start the process (returns at once; see `wait_ready`)."""
        env = {
            **os.environ,
            "ASYNQPG_DSN": self.dsn,
            "FAULTS_WORKER": json.dumps(self.config),
            "PYTHONPATH": str(ROOT),
            # libpq names every connection of the process after it, so a test can tell when
            # the server has let go of a killed worker's sessions (see `wait_disconnected`).
            "PGAPPNAME": self.application_name,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "asynqpg_trio._cli",
                    "worker",
                    "tests.faults.worker_app:options",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        """Block until the worker reports it runs (LISTEN in effect)."""
        deadline = time.monotonic() + timeout
        while f"worker {self.consumer_id} running" not in self.log():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.consumer_id} exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.consumer_id} not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    @property
    def application_name(self) -> str:
        """The ``application_name`` of this process's connections."""
        return f"faults-{self.consumer_id}"

    def wait_disconnected(self, conn: psycopg.Connection[Any], timeout: float = 30.0) -> None:
        """Block until the server has no session of this process left.

        A statement the process sent just before it died still runs to its end (an outcome
        flush commits after the SIGKILL); once the sessions are gone, nothing of the process
        can change a row any more.
        """
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        while True:
            row = conn.execute(query, (self.application_name,)).fetchone()
            if row is None or row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.consumer_id}: {row[0]} sessions outlived it")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the exit; return the status (AssertionError on timeout)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.consumer_id} still running after {timeout} s:\n{self.log()}"
            ) from None

    def rss_kib(self) -> int:
        """Resident set size now, in KiB (from /proc)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> None:
        """Make sure the process is gone (test cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
