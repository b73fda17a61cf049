"""How many tasks the fetcher asks for, per type (pure).

Theory of operation
-------------------
A type's capacity is its workers plus its prefetch buffer (``limit``); ``busy`` counts the
claimed tasks not yet finished by a handler.  The fetcher asks for a type's whole free
capacity, but only when at least half of it is free or the type holds nothing: claims come in
batches rather than one per finished task.  No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["plan_claim"]


def plan_claim(
    free: Mapping[str, int], busy: Mapping[str, int], limits: Mapping[str, int]
) -> dict[str, int]:
    """How many tasks of each type to ask for: free capacity, in batches."""
    wanted: dict[str, int] = {}
    for task_type, n in free.items():
        if n <= 0:
            continue
        if busy.get(task_type, 0) == 0 or n >= max(1, limits[task_type] // 2):
            wanted[task_type] = n
    return wanted
