"""The workload as a ``asynqpg-trio worker`` target, for scenarios that need real processes.

``asynqpg-trio worker tests.faults.worker_app:options`` with ``ASYNQPG_DSN`` set and the
consumer's settings as JSON in ``FAULTS_WORKER`` (see `procs.Worker`).  The run log is written
through a lazily opened pool of its own, like a user's handlers would use a database.
"""

from __future__ import annotations

import json
import os
from typing import Any

from asynqpg_trio import ConstantRetryPolicy, MaintenanceConfig
from asynqpg_trio._pg._pool import pool_for

from .workload import KINDS, Recorder, make_handlers


def options() -> dict[str, Any]:
    """The `open_consumer` options for this process, from the environment."""
    dsn = os.environ["ASYNQPG_DSN"]
    config: dict[str, Any] = json.loads(os.environ["FAULTS_WORKER"])
    pool, _ = pool_for(dsn, max_size=8)
    consumer_id = config["consumer_id"]
    handlers = make_handlers(
        Recorder(pool, consumer_id),
        workers=config.get("workers"),
        timeouts=config.get("timeouts"),
        kinds=tuple(config.get("kinds", KINDS)),
    )
    maintenance: Any = False
    if config.get("maintenance"):
        maintenance = MaintenanceConfig(**config["maintenance"])
    return {
        "handlers": handlers,
        "consumer_id": consumer_id,
        "lease_duration": config.get("lease", 2.0),
        "poll_interval": config.get("poll_interval", 0.2),
        "shutdown_timeout": config.get("shutdown_timeout", 30.0),
        "flush_timeout": config.get("flush_timeout", 10.0),
        "retry_policy": ConstantRetryPolicy(config.get("retry_delay", 0.05)),
        "maintenance": maintenance,
    }
