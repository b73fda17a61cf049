"""``python -m benchmarks``: run the measurements, print one table, write JSON.

Theory of operation
-------------------
One server for the whole run (`common.resolve_server`).  Each system gets a fresh database:
set up its schema, time a batch enqueue of N tasks, ANALYZE (as autovacuum soon would after
a bulk load; every system gets the same), time the burn-down of those N tasks, then measure
idle latency in the same database.  The ceiling, our scaling and our memory probe each use
fresh databases too.  A step that fails is recorded with its error and the run goes on; a
step that would start after the time budget is skipped and recorded as such.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ceiling, ours, peer_pgqueuer, peer_procrastinate, report
from .common import IDLE_GAP, analyze, fresh_database, resolve_server, server_settings, vacuum

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Config", "main"]

STEPS = ("ceiling", "pgqueuer", "procrastinate", "ours", "scaling", "rss", "queues")
DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


@dataclass(frozen=True)
class Config:
    """What to run and how big."""

    #: Tasks per system, and rows for the ceiling: every ratio compares the same amount of work.
    n: int = 20_000
    latency_count: int = 500
    #: Seconds between idle-latency samples (see README: this VM's wake-up cost grows with it).
    idle_gap: float = IDLE_GAP
    #: procrastinate fetches one job per query; its N is capped to keep the run short.
    procrastinate_max_n: int = 10_000
    scaling_processes: tuple[int, ...] = (1, 2, 4)
    rss_backlogs: tuple[int, ...] = (1_000, 1_000_000)
    rss_window: float = 5.0
    #: Runs of each system (round-robin); the table shows the median.
    repeat: int = 1
    budget: float = 540.0  # seconds; later steps are skipped past it
    steps: tuple[str, ...] = STEPS[:-1]  # "queues" runs only when asked for (--only queues)
    sweep: bool = False
    json_path: Path = DEFAULT_JSON

    @classmethod
    def quick(cls) -> Config:
        """Small sizes: the whole run well under two minutes."""
        return cls(
            n=5_000,
            procrastinate_max_n=3_000,
            rss_backlogs=(1_000, 100_000),
            rss_window=3.0,
            budget=100.0,
        )


class Clock:
    """Seconds since the run started, and the budget check."""

    def __init__(self, budget: float) -> None:
        self.started = time.monotonic()
        self.budget = budget

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.started

    def log(self, text: str) -> None:
        """Print a progress line with the elapsed time."""
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def over(self) -> bool:
        """Whether the budget is spent."""
        return self.elapsed() > self.budget


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(server: str) -> dict[str, Any]:
    """Versions, server settings and machine facts that move the figures."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "versions": {
            dist: _version(dist)
            for dist in (
                "asynqpg-trio",
                "pgqueuer",
                "procrastinate",
                "psycopg",
                "psycopg-pool",
                "asyncpg",
                "trio",
                "uvloop",
            )
        },
        "server": server_settings(server),
    }


def _guard(
    clock: Clock, name: str, out: dict[str, Any], fn: Callable[[], None], *, skip: bool = False
) -> None:
    """Run ``fn`` (which fills ``out``) unless over budget; record an error instead of raising."""
    if skip:
        return
    if clock.over():
        out["error"] = "skipped: time budget spent"
        clock.log(f"{name}: skipped (time budget spent)")
        return
    try:
        fn()
    except Exception as ex:
        out["error"] = f"{type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}"
        clock.log(f"{name}: FAILED\n{traceback.format_exc()}")


def run_ceiling(server: str, config: Config, clock: Clock, out: dict[str, Any]) -> None:
    """The raw SQL ceiling on our table."""
    n = config.n
    out["n"] = n
    with fresh_database(server, "ceiling") as dsn:
        ceiling.migrate(dsn)
        out["insert_unnest_per_s"] = ceiling.insert_unnest(dsn, n, 2, 5000)
        clock.log(f"ceiling: insert (unnest) {out['insert_unnest_per_s']:,.0f} rows/s")
        out["insert_copy_per_s"] = ceiling.insert_copy(dsn, n, 2, 10_000)
        clock.log(f"ceiling: insert (COPY) {out['insert_copy_per_s']:,.0f} rows/s")
        out["claim_complete_per_s"] = ceiling.claim_complete(dsn, n, 2, 500)
        clock.log(f"ceiling: claim+complete {out['claim_complete_per_s']:,.0f} tasks/s")
        p50, p99 = ceiling.notify_latency(dsn, config.latency_count, config.idle_gap)
        out["notify_latency_p50_ms"], out["notify_latency_p99_ms"] = p50, p99
        clock.log(f"ceiling: notify latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def run_system(
    server: str,
    name: str,
    n: int,
    latency_count: int,
    clock: Clock,
    out: dict[str, Any],
    *,
    setup: Callable[[str], None],
    enqueue: Callable[[str, int], float],
    burn: Callable[[str, int], float],
    latency: Callable[[str, int], tuple[float, float]],
    burn_defaults: Callable[[str, int], float] | None = None,
) -> None:
    """Enqueue, ANALYZE, burn-down and idle latency for one system in one fresh database
    (``burn_defaults``: a second burn-down with the default settings, given the server)."""
    out["n"] = n
    with fresh_database(server, name) as dsn:
        setup(dsn)
        out["enqueue_per_s"] = enqueue(dsn, n)
        clock.log(f"{name}: batch enqueue {out['enqueue_per_s']:,.0f} tasks/s")
        analyze(dsn)
        out["burn_down_per_s"] = burn(dsn, n)
        clock.log(f"{name}: burn-down {out['burn_down_per_s']:,.0f} tasks/s")
        if burn_defaults is not None:
            out["burn_down_default_per_s"] = burn_defaults(server, n)
            out["default_over_tuned"] = out["burn_down_default_per_s"] / out["burn_down_per_s"]
            clock.log(
                f"{name}: burn-down with the defaults {out['burn_down_default_per_s']:,.0f}"
                f" tasks/s ({out['default_over_tuned']:.2f}x tuned)"
            )
        # Every system's idle latency is taken on a vacuumed table, as the ceiling's is on an
        # emptied one: a burn-down leaves dead index entries that every claim walks past until
        # (auto)vacuum removes them.
        vacuum(dsn)
        p50, p99 = latency(dsn, latency_count)
        out["latency_p50_ms"], out["latency_p99_ms"] = p50, p99
        clock.log(f"{name}: idle latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")


#: A step fills one run's figures into the dict it is given.
Step = Callable[[dict[str, Any]], None]


def _plan(
    server: str,
    config: Config,
    clock: Clock,
    results: dict[str, Any],
    pgq: peer_pgqueuer.Settings,
    pro: peer_procrastinate.Settings,
) -> list[tuple[str, dict[str, Any], Step]]:
    """The repeated steps: (name, where its results go, what fills one run)."""
    plan: list[tuple[str, dict[str, Any], Step]] = []
    systems: dict[str, dict[str, Any]] = results["systems"]
    gap = config.idle_gap
    if "ceiling" in config.steps:
        results["ceiling"]["settings"] = {
            "connections": 2,
            "unnest_chunk": 5000,
            "copy_chunk": 10_000,
            "claim_batch": 500,
        }
        plan.append(
            ("ceiling", results["ceiling"], functools.partial(run_ceiling, server, config, clock))
        )
    if "pgqueuer" in config.steps:
        systems["pgqueuer"] = {"version": peer_pgqueuer.version(), "settings": pgq.describe()}
        step: Step = functools.partial(
            run_system,
            server,
            "pgqueuer",
            config.n,
            config.latency_count,
            clock,
            setup=peer_pgqueuer.setup,
            enqueue=lambda d, n: peer_pgqueuer.enqueue_batch(d, n, pgq),
            burn=lambda d, n: peer_pgqueuer.burn_down(d, n, pgq),
            latency=lambda d, c: peer_pgqueuer.idle_latency(d, c, pgq, gap),
        )
        plan.append(("pgqueuer", systems["pgqueuer"], step))
    if "procrastinate" in config.steps:
        systems["procrastinate"] = {
            "version": peer_procrastinate.version(),
            "settings": pro.describe(),
        }
        n_pro = min(config.n, config.procrastinate_max_n)
        step = functools.partial(
            run_system,
            server,
            "procrastinate",
            n_pro,
            config.latency_count,
            clock,
            setup=peer_procrastinate.setup,
            enqueue=lambda d, n: peer_procrastinate.enqueue_batch(d, n, pro),
            burn=lambda d, n: peer_procrastinate.burn_down(d, n, pro),
            latency=lambda d, c: peer_procrastinate.idle_latency(d, c, pro, gap),
        )
        plan.append(("procrastinate", systems["procrastinate"], step))
    if {"ours", "scaling", "rss", "queues"} & set(config.steps):
        ours_out: dict[str, Any] = {"available": ours.AVAILABLE}
        systems["ours"] = ours_out
        if not ours.AVAILABLE:
            ours_out["error"] = f"not available yet ({ours.UNAVAILABLE_REASON})"
            clock.log(f"ours: not available yet ({ours.UNAVAILABLE_REASON})")
        elif "ours" in config.steps:
            ours_out["settings"] = ours.settings()
            step = functools.partial(
                run_system,
                server,
                "ours",
                config.n,
                config.latency_count,
                clock,
                setup=ours.setup,
                enqueue=ours.enqueue_batch,
                burn=ours.burn_down,
                burn_defaults=ours.burn_down_defaults,
                latency=lambda d, c: ours.idle_latency(d, c, gap),
            )
            plan.append(("ours", ours_out, step))
    return plan


def _aggregate(out: dict[str, Any]) -> None:
    """Put the median of every figure over the runs at the top level of ``out``."""
    runs: list[dict[str, Any]] = out.get("runs", [])
    keys = {
        key
        for one in runs
        for key, value in one.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    for key in sorted(keys):
        out[key] = statistics.median(one[key] for one in runs if key in one)
    errors = [one["error"] for one in runs if one.get("error")]
    if errors and not keys:
        out["error"] = errors[-1]
    elif errors:
        out["warnings"] = errors


def run(config: Config) -> dict[str, Any]:
    """Run every selected step; return the results (also printed and written).

    The ceiling and each system run ``config.repeat`` times, round-robin (so a change in the
    machine's load hits every system alike); the tables show the median of the runs, the
    JSON keeps each run.  Our scaling and memory probes run once, at the end.
    """
    clock = Clock(config.budget)
    results: dict[str, Any] = {"config": asdict(config), "systems": {}, "ceiling": {}}
    with resolve_server() as server:
        results["environment"] = environment(server)
        _print_settings(config, results["environment"])
        pgq = peer_pgqueuer.Settings()
        pro = peer_procrastinate.Settings()
        if config.sweep:
            from . import sweep

            pgq, pro = sweep.run(server, config, clock, results)
        plan = _plan(server, config, clock, results, pgq, pro)
        for name, out, _ in plan:
            if "settings" in out:
                version = f" {out['version']}" if out.get("version") else ""
                clock.log(f"{name}{version}: settings {out['settings']}")
        for attempt in range(config.repeat):
            for name, out, step in plan:
                one: dict[str, Any] = {}
                label = name if config.repeat == 1 else f"{name} (run {attempt + 1})"
                _guard(clock, label, one, functools.partial(step, one))
                out.setdefault("runs", []).append(one)
        for _, out, _ in plan:
            _aggregate(out)
        if ours.AVAILABLE:
            _run_ours_extras(server, config, clock, results)
    results["environment"]["loadavg_at_end"] = list(os.getloadavg())
    results["elapsed_s"] = clock.elapsed()
    return results


#: Tasks enqueued one call (one transaction) at a time for the single-enqueue figure.
SINGLE_ENQUEUE_COUNT = 2000


def _run_ours_extras(server: str, config: Config, clock: Clock, results: dict[str, Any]) -> None:
    if "ours" in config.steps:
        single: dict[str, Any] = {"count": SINGLE_ENQUEUE_COUNT}
        results["single_enqueue"] = single

        def do_single() -> None:
            single["per_s"] = ours.single_enqueue(server, SINGLE_ENQUEUE_COUNT)
            clock.log(f"ours: single enqueue {single['per_s']:,.0f} tasks/s (one commit each)")

        _guard(clock, "single enqueue", single, do_single)
    if "scaling" in config.steps:
        scaling: dict[str, Any] = {"n": config.n}
        results["scaling"] = scaling

        def do_scaling() -> None:
            found = ours.throughput_scaling(server, config.n, config.scaling_processes)
            scaling["burn_down_per_s"] = {str(k): v for k, v in found.items()}
            clock.log(f"ours: scaling {scaling['burn_down_per_s']}")

        _guard(clock, "scaling", scaling, do_scaling)
    if "queues" in config.steps:
        from . import queues

        by_queue: dict[str, Any] = {}
        results["queues"] = by_queue

        def do_queues() -> None:
            by_queue.update(queues.run(server, config.n, clock.log))

        _guard(clock, "queues", by_queue, do_queues)
    if "rss" in config.steps:
        rss: dict[str, Any] = {"window_s": config.rss_window}
        results["rss"] = rss

        def do_rss() -> None:
            found = ours.consumer_rss(server, config.rss_backlogs, config.rss_window)
            rss["by_backlog"] = {str(k): v for k, v in found.items()}
            clock.log(f"ours: consumer RSS {rss['by_backlog']}")

        _guard(clock, "rss", rss, do_rss)


def _print_settings(config: Config, env: dict[str, Any]) -> None:
    server = env["server"]
    print("asynqpg-trio benchmarks")
    print(
        f"  N={config.n:,} (the ceiling's too; procrastinate N<={config.procrastinate_max_n:,}), "
        f"latency samples={config.latency_count} "
        f"{config.idle_gap * 1000:.0f} ms apart"
    )
    print(
        f"  PostgreSQL {server['server_version']}, synchronous_commit="
        f"{server['synchronous_commit']}, fsync={server['fsync']}, "
        f"shared_buffers={server['shared_buffers']}"
    )
    print(
        f"  Python {env['python']}, {env['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in env['loadavg_at_start'])}"
    )
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    if env["loadavg_at_start"][0] > (env["cpus"] or 1) * 0.5:
        print("  WARNING: the machine is busy; figures will be low and noisy")


def parse(argv: Sequence[str] | None) -> Config:
    """Command line to `Config`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (under two minutes)")
    parser.add_argument("--n", type=int, help="tasks per system (default 20,000; quick 5,000)")
    parser.add_argument("--latency-count", type=int, help="idle-latency samples (default 500)")
    parser.add_argument(
        "--idle-gap-ms", type=float, help="pause between idle-latency samples (default 10)"
    )
    parser.add_argument(
        "--repeat", type=int, help="runs of each system, median reported (default 1)"
    )
    parser.add_argument("--json", type=Path, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STEPS,
        metavar="STEP",
        help=f"run only these steps: {', '.join(STEPS)}",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="first try a few settings for each peer and use the best",
    )
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    changes: dict[str, Any] = {}
    if args.n:
        changes["n"] = args.n
    if args.latency_count:
        changes["latency_count"] = args.latency_count
    if args.idle_gap_ms is not None:
        changes["idle_gap"] = args.idle_gap_ms / 1000.0
    if args.repeat:
        changes["repeat"] = args.repeat
    if args.json:
        changes["json_path"] = args.json
    if args.only:
        changes["steps"] = tuple(args.only)
    if args.sweep:
        changes["sweep"] = True
    return replace(config, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 if any step failed)."""
    config = parse(argv)
    results = run(config)
    print()
    print(report.render_table(results))
    report.write_json(results, config.json_path)
    print(f"\nresults written to {config.json_path} ({results['elapsed_s']:.0f}s)")
    failed = [
        name
        for name, part in [("ceiling", results["ceiling"]), *results["systems"].items()]
        if part.get("error") and not str(part["error"]).startswith("not available")
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
