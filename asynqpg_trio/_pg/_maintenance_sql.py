"""The maintenance statements (``_pg/sql/maintenance.sql``), loaded once at import.

Shared by the elector (`_elector`) and the janitor (`_janitor`), which must not import each
other; see the SQL file for what each statement does and for the leader fence every
maintenance write carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._sql import load

__all__ = ["QUERIES", "MaintenanceQueries"]


@dataclass(frozen=True, slots=True)
class MaintenanceQueries:
    """One attribute per named block of ``_pg/sql/maintenance.sql``."""

    elect: str
    resign: str
    listen: str
    select_expired: str
    update_rescued: str
    clean: str


#: The loaded statements.
QUERIES: MaintenanceQueries = load(MaintenanceQueries, "maintenance.sql")
