"""Which database errors are transient: an actor survives them by restarting."""

from __future__ import annotations

import psycopg

__all__ = ["TRANSIENT"]

#: Database errors an actor survives by restarting (connection loss, server restart).
TRANSIENT: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
