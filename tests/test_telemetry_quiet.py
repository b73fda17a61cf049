"""Quiet task runs: no span and no instrument call while OpenTelemetry has no SDK, and the
switch to recording once an application installs one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from asynqpg_trio._core._book import Lease
from asynqpg_trio._telemetry._telemetry import QuietRun, TaskRun, Telemetry

# Global providers can be set once per process: this runs in a fresh interpreter.
_GLOBAL_SDK_LATER = textwrap.dedent(
    """
    import time
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from asynqpg_trio._core._book import Lease
    from asynqpg_trio._telemetry._telemetry import _QUIET_RECHECK, Telemetry

    t = Telemetry()
    lease = Lease(1, 2, "t")
    print(t.quiet(), type(t.task_run(lease)).__name__)
    trace.set_tracer_provider(TracerProvider())
    time.sleep(_QUIET_RECHECK + 0.05)
    print(t.quiet(), type(t.task_run(lease)).__name__)
    """
)


def test_quiet_until_a_global_sdk_is_installed() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _GLOBAL_SDK_LATER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["True QuietRun", "False TaskRun"]


def test_explicit_providers_are_never_quiet() -> None:
    lease = Lease(1, 2, "t")
    for telemetry in (
        Telemetry(tracer_provider=TracerProvider()),
        Telemetry(meter_provider=MeterProvider()),
    ):
        assert not telemetry.quiet()
        assert isinstance(telemetry.task_run(lease), TaskRun)
    run = QuietRun()
    with run:
        pass
    run.cancelled()  # records nothing, raises nothing
