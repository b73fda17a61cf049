"""``--sweep``: try a few settings per peer, quickly, and keep the best.

Each candidate runs in a fresh database at a reduced N.  Enqueue settings (chunk size,
connections in flight) and consumer settings (processes, workers, batch size, pool size) are
swept separately, since neither affects the other's measurement.  Every figure lands in the
results under ``sweep`` so the choice can be checked.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from . import peer_pgqueuer as pgq
from . import peer_procrastinate as pro
from .common import analyze, fresh_database

if TYPE_CHECKING:
    from collections.abc import Callable

    from .cli import Clock, Config

__all__ = ["run"]

S = TypeVar("S", pgq.Settings, pro.Settings)

PGQ_ENQUEUE = [(1000, 1), (5000, 1), (5000, 2), (20_000, 2)]
PGQ_BURN = [
    (1, 1, 200),
    (1, 2, 200),
    (2, 1, 200),
    (2, 2, 50),
    (2, 2, 200),
    (2, 2, 500),
    (4, 1, 200),
]
PRO_ENQUEUE = [(1000, 1), (5000, 1), (5000, 2), (20_000, 2)]
PRO_BURN = [(1, 50, 8), (2, 20, 4), (2, 50, 8), (4, 20, 4), (4, 50, 8)]


def _best(
    candidates: list[S],
    measure: Callable[[S], float],
    label: str,
    clock: Clock,
    log: list[dict[str, Any]],
) -> S:
    best: tuple[float, S] | None = None
    for settings in candidates:
        if clock.over():
            break
        try:
            value = measure(settings)
        except Exception as ex:
            log.append({"what": label, "settings": settings.describe(), "error": repr(ex)})
            clock.log(f"sweep {label} {settings.describe()}: failed: {ex!r}")
            continue
        log.append({"what": label, "settings": settings.describe(), "per_s": value})
        clock.log(f"sweep {label} {settings.describe()}: {value:,.0f}/s")
        if best is None or value > best[0]:
            best = (value, settings)
    if best is None:
        return candidates[0]
    return best[1]


def run(
    server: str, config: Config, clock: Clock, results: dict[str, Any]
) -> tuple[pgq.Settings, pro.Settings]:
    """Sweep both peers; return the best settings found for each."""
    log: list[dict[str, Any]] = []
    results["sweep"] = log

    def pgq_enqueue(s: pgq.Settings) -> float:
        with fresh_database(server, "sweep_pgq") as dsn:
            pgq.setup(dsn)
            return pgq.enqueue_batch(dsn, min(config.n, 20_000), s)

    def pgq_burn(s: pgq.Settings) -> float:
        n = min(config.n, 10_000)
        with fresh_database(server, "sweep_pgq") as dsn:
            pgq.setup(dsn)
            pgq.enqueue_batch(dsn, n, pgq.Settings())
            analyze(dsn)
            return pgq.burn_down(dsn, n, s, timeout=60.0)

    def pro_enqueue(s: pro.Settings) -> float:
        with fresh_database(server, "sweep_pro") as dsn:
            pro.setup(dsn)
            return pro.enqueue_batch(dsn, min(config.n, 20_000), s)

    def pro_burn(s: pro.Settings) -> float:
        n = min(config.n, 2_000)
        with fresh_database(server, "sweep_pro") as dsn:
            pro.setup(dsn)
            pro.enqueue_batch(dsn, n, pro.Settings())
            analyze(dsn)
            return pro.burn_down(dsn, n, s, timeout=60.0)

    base_pgq = pgq.Settings()
    enq = _best(
        [replace(base_pgq, enqueue_chunk=c, enqueue_connections=k) for c, k in PGQ_ENQUEUE],
        pgq_enqueue,
        "pgqueuer enqueue",
        clock,
        log,
    )
    burn = _best(
        [replace(base_pgq, processes=p, managers=m, batch_size=b) for p, m, b in PGQ_BURN],
        pgq_burn,
        "pgqueuer burn-down",
        clock,
        log,
    )
    best_pgq = replace(
        burn, enqueue_chunk=enq.enqueue_chunk, enqueue_connections=enq.enqueue_connections
    )
    base_pro = pro.Settings()
    pro_enq = _best(
        [replace(base_pro, enqueue_chunk=c, enqueue_in_flight=k) for c, k in PRO_ENQUEUE],
        pro_enqueue,
        "procrastinate enqueue",
        clock,
        log,
    )
    pro_b = _best(
        [replace(base_pro, processes=p, concurrency=c, pool_size=s) for p, c, s in PRO_BURN],
        pro_burn,
        "procrastinate burn-down",
        clock,
        log,
    )
    best_pro = replace(
        pro_b, enqueue_chunk=pro_enq.enqueue_chunk, enqueue_in_flight=pro_enq.enqueue_in_flight
    )
    clock.log(f"sweep: best pgqueuer {best_pgq.describe()}")
    clock.log(f"sweep: best procrastinate {best_pro.describe()}")
    return best_pgq, best_pro
