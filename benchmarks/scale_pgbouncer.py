"""Many consumer processes through PgBouncer (transaction pooling) against direct connections.

``python -m benchmarks.scale_pgbouncer [--processes 16] [--tasks 50000] [--pool-size 10]``
starts PgBouncer itself (as the tests do: ``tests/helpers/servers.py``, which installs it from
the distribution's packages when missing and allowed) in front of ``$ASYNQPG_DSN``'s server,
and burns down the same backlog twice in fresh databases: once with every consumer process
connected straight to PostgreSQL, once through PgBouncer (``transaction_pooling=True``, with
``direct_dsn`` for each process's LISTEN connection).  For each it prints the tasks/s and the
books: every task completed, no handler run twice.

The burn-down (`burn_down`) is also what ``tests/test_pgbouncer.py`` runs, smaller.  Each
consumer is a child process (``python -m benchmarks.scale_pgbouncer child ...``) that records
every task id its handler ran to a file; the queue is paused while the backlog is enqueued and
the children start, and the clock runs from the resume to the moment no task is unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import trio
from psycopg import conninfo, sql

from asynqpg_trio import Client, Handler, Producer, Task, migrate, open_consumer, open_pool

ROOT = Path(__file__).resolve().parent.parent
TASK_TYPE = "burn"
_UNFINISHED = "SELECT count(*) FROM asynqpg_tasks WHERE status IN ('pending', 'running')"


@dataclass(frozen=True)
class BurnResult:
    """One burn-down: its size, its rate, and its books."""

    mode: str
    processes: int
    tasks: int
    seconds: float
    tasks_per_second: float
    completed: int
    handler_runs: int
    distinct_ids: int
    doubled: int


async def _child(dsn: str, direct: str, outfile: str, workers: int, pool_size: int) -> None:
    with open(outfile, "a", buffering=1) as out:  # noqa: ASYNC230 - once, at start-up

        async def record(task: Any) -> None:
            out.write(f"{task.id}\n")

        pooled = direct != "-"
        async with (
            open_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                transaction_pooling=pooled,
                direct_dsn=direct if pooled and direct != "poll" else None,
            ) as pool,
            open_consumer(
                pool,
                handlers={TASK_TYPE: Handler(record, workers=workers)},
                maintenance=False,
                poll_interval=0.2,
            ),
        ):
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)


def _start_child(dsn: str, direct: str, outfile: Path, workers: int, pool_size: int) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(outfile), str(workers), str(pool_size)]
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale_pgbouncer", "child", dsn, direct, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _enqueue_paused(dsn: str, tasks: int) -> None:
    async with open_pool(dsn, min_size=1, max_size=4) as pool:
        await Client(pool).pause_queue("default")
        producer = Producer(pool)
        for start in range(0, tasks, 5000):
            size = min(5000, tasks - start)
            await producer.enqueue_many([Task(TASK_TYPE, b"") for _ in range(size)])


async def _resume(dsn: str) -> None:
    async with open_pool(dsn, min_size=1, max_size=1) as pool:
        await Client(pool).resume_queue("default")


def burn_down(
    direct_dsn: str,
    consumer_dsn: str,
    workdir: Path,
    *,
    mode: str,
    processes: int,
    tasks: int,
    workers: int = 20,
    pool_size: int = 4,
    timeout: float = 600.0,
) -> BurnResult:
    """Burn ``tasks`` pending tasks down with ``processes`` consumer processes connected with
    ``consumer_dsn``; ``mode`` is ``direct`` (plain pools), ``bouncer`` (transaction pooling,
    LISTEN on ``direct_dsn``) or ``poll`` (transaction pooling, poll-only)."""
    trio.run(_enqueue_paused, direct_dsn, tasks)
    listen = {"direct": "-", "bouncer": direct_dsn, "poll": "poll"}[mode]
    files = [workdir / f"{mode}-{i}.ids" for i in range(processes)]
    children = [_start_child(consumer_dsn, listen, f, workers, pool_size) for f in files]
    try:
        for child in children:
            line = child.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a consumer process failed to start (exit {child.poll()})")
        with psycopg.connect(direct_dsn, autocommit=True) as conn:
            started = time.perf_counter()
            trio.run(_resume, direct_dsn)
            deadline = started + timeout
            while conn.execute(_UNFINISHED).fetchone()[0]:  # type: ignore[index]
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the burn-down did not finish in {timeout:g} s")
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            completed = conn.execute(
                "SELECT count(*) FROM asynqpg_tasks WHERE type = %s AND status = 'completed'",
                (TASK_TYPE,),
            ).fetchone()[0]  # type: ignore[index]
    finally:
        for child in children:
            if child.poll() is None:
                try:
                    child.stdin.write("stop\n")
                    child.stdin.flush()
                except OSError:
                    pass
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            for stream in (child.stdin, child.stdout):
                stream.close()
    runs = Counter(int(line) for f in files if f.exists() for line in f.read_text().split() if line)
    return BurnResult(
        mode=mode,
        processes=processes,
        tasks=tasks,
        seconds=round(seconds, 2),
        tasks_per_second=round(tasks / seconds, 1),
        completed=int(completed),
        handler_runs=sum(runs.values()),
        distinct_ids=len(runs),
        doubled=sum(1 for n in runs.values() if n > 1),
    )


def _fresh(server_dsn: str) -> tuple[str, str]:
    name = f"bench_bouncer_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(server_dsn, dbname=name)
    trio.run(migrate, dsn)
    return name, dsn


def _drop(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or, with ``child``, one consumer process)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        dsn, direct, outfile, workers, pool_size = argv[1:6]
        trio.run(_child, dsn, direct, outfile, int(workers), int(pool_size))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_pgbouncer")
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--pool-size", type=int, default=10, help="PgBouncer server connections")
    parser.add_argument("--modes", nargs="+", default=["direct", "bouncer"])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.helpers.servers import pgbouncer

    server = os.environ.get("ASYNQPG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    results = []
    with pgbouncer(server, pool_size=args.pool_size) as bouncer:
        for mode in args.modes:
            name, dsn = _fresh(server)
            try:
                workdir = Path(f"/tmp/{name}")
                workdir.mkdir()
                consumer_dsn = dsn if mode == "direct" else bouncer.dsn_for(dsn)
                result = burn_down(
                    dsn,
                    consumer_dsn,
                    workdir,
                    mode=mode,
                    processes=args.processes,
                    tasks=args.tasks,
                )
                print(json.dumps(asdict(result)), flush=True)
                results.append(result)
            finally:
                _drop(server, name)
    ok = all(r.completed == r.tasks and r.doubled == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
