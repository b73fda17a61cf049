"""The results table and the JSON file.

Every figure is absolute; the ratio columns divide ours by a peer or by the ceiling, so for
throughput a ratio above 1 means ours is faster and for latency a ratio above 1 means ours is
slower.  A missing figure (system not run, not available, or failed) prints as ``-``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ROWS", "render_table", "write_json"]

PEERS = ("pgqueuer", "procrastinate")

#: (label, key in a system's results, key in the ceiling's results, unit)
ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("batch enqueue", "enqueue_per_s", "insert_unnest_per_s", "tasks/s"),
    ("burn-down", "burn_down_per_s", "claim_complete_per_s", "tasks/s"),
    ("burn-down, defaults", "burn_down_default_per_s", "claim_complete_per_s", "tasks/s"),
    ("idle latency p50", "latency_p50_ms", "notify_latency_p50_ms", "ms"),
    ("idle latency p99", "latency_p99_ms", "notify_latency_p99_ms", "ms"),
)
#: Ceiling-only rows: (label, key in the ceiling's results, unit)
CEILING_ONLY: tuple[tuple[str, str, str], ...] = (
    ("batch insert, COPY", "insert_copy_per_s", "rows/s"),
)


def _num(value: Any, unit: str) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    if unit == "ms":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _ratio(ours: Any, other: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(other, int | float):
        return "-"
    if math.isnan(ours) or math.isnan(other) or other == 0:
        return "-"
    return f"{ours / other:.2f}x"


def render_table(results: dict[str, Any]) -> str:
    """One table: absolute figures per system and the ceiling, then ours/peer, ours/ceiling."""
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    ceiling: dict[str, Any] = results.get("ceiling", {})
    ours = systems.get("ours", {})
    header = [
        "measurement",
        "unit",
        "ours",
        *PEERS,
        "ceiling",
        *(f"ours/{p}" for p in PEERS),
        "ours/ceiling",
    ]
    lines: list[list[str]] = [header]
    for label, key, ceiling_key, unit in ROWS:
        ceiling_value = ceiling.get(ceiling_key) if ceiling_key else None
        row = [label, unit, _num(ours.get(key), unit)]
        row += [_num(systems.get(p, {}).get(key), unit) for p in PEERS]
        row.append(_num(ceiling_value, unit))
        row += [_ratio(ours.get(key), systems.get(p, {}).get(key)) for p in PEERS]
        row.append(_ratio(ours.get(key), ceiling_value))
        lines.append(row)
    for label, key, unit in CEILING_ONLY:
        row = [label, unit, "-", *("-" for _ in PEERS), _num(ceiling.get(key), unit)]
        row += ["-" for _ in PEERS] + ["-"]
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [
        "throughput ratios > 1: ours faster; latency ratios > 1: ours slower.",
        "ceiling: enqueue = unnest INSERT, burn-down = claim+complete loop, "
        "latency = INSERT+NOTIFY to a LISTENing claimer (plain psycopg, our table).",
    ]
    for name, system in systems.items():
        if system.get("error"):
            notes.append(f"{name}: {system['error']}")
    if ceiling.get("error"):
        notes.append(f"ceiling: {ceiling['error']}")
    return "\n".join([*out, "", *notes])


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results (settings included) as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
