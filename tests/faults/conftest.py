"""Fixtures of the fault scenarios: a queue database with the run log, and worker processes
that never outlive their test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from .procs import Worker
from .workload import RUNS_DDL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture
def queue_dsn(dsn: str) -> str:
    """A fresh migrated database that also holds the handlers' run log."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RUNS_DDL)
    return dsn


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start `Worker` processes (``spawn(dsn, consumer_id, **config)``); all are killed at the
    end of the test if still running."""
    started: list[Worker] = []

    def start(dsn: str, consumer_id: str, **config: Any) -> Worker:
        worker = Worker(dsn, consumer_id, tmp_path, **config).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every scenario here is a fault scenario (the ``faults`` nox session runs them)."""
    for item in items:
        if "tests/faults/" in item.nodeid:
            item.add_marker(pytest.mark.faults)
