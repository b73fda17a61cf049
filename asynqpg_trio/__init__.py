"""asynqpg-trio: a PostgreSQL-backed task queue for Trio and anyio."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
