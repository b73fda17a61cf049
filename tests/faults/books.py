"""The books: one audit of the task table against the handlers' run log, for every scenario.

The ledger rules (design.md, "the claim consumes the attempt"):

* each claim consumes one attempt, and every attempt ends in exactly one of: the completion
  (final, no message), a message appended by the fenced outcome write (error, retry, fail),
  or a "lease expired ..." message appended by whoever took the expired lease over (the next
  claim, or the janitor).  A snooze or a release refunds its attempt and writes nothing.
  Hence ``attempts_elapsed == len(messages) + (1 if completed else 0)``, and
  ``messages[a - 1]`` tells what became of attempt ``a``;
* ``attempts_left + attempts_elapsed`` equals the attempts the task was given;
* a recorded run of attempt ``a`` that ran to completion (``ok``) either is the one that
  completed the task (``a == attempts_elapsed``, status completed) or lost its acknowledgement
  to a lease takeover: then ``messages[a - 1]`` starts with "lease expired";
* a recorded failing run of attempt ``a`` has its attempt accounted for (``a <= len(messages)``);
* one attempt number is never executed twice (each claim draws the next number);
* nothing is left pending or running, no lease is left behind, and each task ends as its
  payload says (see `workload.Spec`).

`check_books` checks all of it in one pass and raises AssertionError listing what is wrong.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from .workload import Spec

#: How a takeover's message starts (the claim's and the janitor's alike).
LEASE_EXPIRED = "lease expired"


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the books expect of one task: its final status and total attempts."""

    status: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Row:
    """The task columns the books read."""

    id: int
    type: str
    payload: bytes
    status: str
    messages: tuple[str, ...]
    attempts_left: int
    attempts_elapsed: int
    lease_token: int | None
    lease_owner: str | None
    finalized_at: Any


@dataclass(frozen=True, slots=True)
class Totals:
    """The books' totals, for the report.

    Attributes:
        tasks: tasks audited.
        statuses: tasks per final status.
        attempts: attempts consumed (sum of attempts_elapsed).
        runs: executions recorded by handlers (ran to their end).
        completions: recorded executions that ran to completion.
        lost_completions: completions whose acknowledgement was lost to a lease takeover
            (the task then ran again).
        lease_expiries: "lease expired" messages (takeovers at claim, janitor rescues).
        errors: other messages (failed attempts written by the consumer).
    """

    tasks: int
    statuses: Mapping[str, int]
    attempts: int
    runs: int
    completions: int
    lost_completions: int
    lease_expiries: int
    errors: int

    def __str__(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.tasks} tasks ({statuses}); {self.attempts} attempts, {self.runs} runs, "
            f"{self.completions} completions ({self.lost_completions} lost to takeovers), "
            f"{self.lease_expiries} lease expiries, {self.errors} error messages"
        )


def expect_from_payload(row: Row) -> Expectation:
    """The default expectation: the `workload.Spec` in the task's payload."""
    spec = Spec.parse(row.payload)
    return Expectation(spec.expect, spec.attempts)


def check_books(
    conn: psycopg.Connection[Any],
    *,
    expect: Callable[[Row], Expectation] = expect_from_payload,
    show: int = 15,
) -> Totals:
    """Audit every task against the run log; return the totals or raise AssertionError.

    Args:
        conn: a connection to the queue's database (which holds ``runs``).
        expect: the final status and attempt budget of a task.
        show: how many violations to list in the error.
    """
    rows = [
        Row(*r)
        for r in conn.execute(
            "SELECT id, type, payload, status, messages, attempts_left, attempts_elapsed,"
            " lease_token, lease_owner, finalized_at FROM asynqpg_tasks ORDER BY id"
        ).fetchall()
    ]
    runs: dict[int, list[tuple[int, str]]] = defaultdict(list)
    run_count = 0
    for task_id, attempt, outcome in conn.execute(
        "SELECT task_id, attempt, outcome FROM runs ORDER BY at"
    ).fetchall():
        runs[int(task_id)].append((int(attempt), str(outcome)))
        run_count += 1

    problems: list[str] = []
    statuses: Counter[str] = Counter()
    attempts = completions = lost = expiries = errors = 0
    ids = set()
    for row in rows:
        ids.add(row.id)
        statuses[row.status] += 1
        attempts += row.attempts_elapsed
        task_runs = runs.get(row.id, [])
        row_lost, row_problems = _audit(row, expect(row), task_runs)
        problems += [f"task {row.id} ({row.type}): {p}" for p in row_problems]
        row_expiries = sum(m.startswith(LEASE_EXPIRED) for m in row.messages)
        expiries += row_expiries
        errors += len(row.messages) - row_expiries
        completions += sum(outcome == "ok" for _, outcome in task_runs)
        lost += row_lost
    orphans = set(runs) - ids
    if orphans:
        problems.append(f"runs recorded for tasks not in the table: {sorted(orphans)[:10]}")
    totals = Totals(
        tasks=len(rows),
        statuses=dict(statuses),
        attempts=attempts,
        runs=run_count,
        completions=completions,
        lost_completions=lost,
        lease_expiries=expiries,
        errors=errors,
    )
    if problems:
        listed = "\n  ".join(problems[:show])
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise AssertionError(f"the books do not balance ({totals}):\n  {listed}{more}")
    return totals


def _audit(row: Row, want: Expectation, task_runs: list[tuple[int, str]]) -> tuple[int, list[str]]:
    """Check one task; return (completions lost to takeovers, problems)."""
    problems: list[str] = []
    elapsed, messages = row.attempts_elapsed, row.messages
    if row.status != want.status:
        problems.append(f"status {row.status}, expected {want.status}; messages {messages!r}")
    if row.lease_token is not None or row.lease_owner is not None:
        problems.append(f"lease left behind: token {row.lease_token}, owner {row.lease_owner}")
    if row.status in ("completed", "failed") and row.finalized_at is None:
        problems.append("final without finalized_at")
    if row.attempts_left + elapsed != want.attempts:
        problems.append(
            f"attempts do not add up: left {row.attempts_left} + elapsed {elapsed}"
            f" != {want.attempts}"
        )
    completed = row.status == "completed"
    if elapsed != len(messages) + completed:
        problems.append(
            f"{elapsed} attempts but {len(messages)} messages"
            f"{' and a completion' if completed else ''}: an attempt is unaccounted for"
        )
    seen = Counter(attempt for attempt, _ in task_runs)
    twice = sorted(a for a, n in seen.items() if n > 1)
    if twice:
        problems.append(f"attempts executed more than once: {twice}")
    landed = 0
    lost = 0
    for attempt, outcome in task_runs:
        if not 1 <= attempt <= elapsed:
            problems.append(f"a run of attempt {attempt}, but {elapsed} attempts were claimed")
            continue
        fate = messages[attempt - 1] if attempt <= len(messages) else None
        if outcome == "ok":
            if completed and attempt == elapsed:
                landed += 1
            elif fate is not None and fate.startswith(LEASE_EXPIRED):
                lost += 1
            else:
                problems.append(
                    f"attempt {attempt} ran to completion, yet was neither acknowledged nor "
                    f"taken over (its message: {fate!r})"
                )
        elif fate is None:
            problems.append(f"attempt {attempt} failed, but no message accounts for it")
    if completed and landed != 1:
        problems.append(f"completed, but {landed} runs of the completing attempt {elapsed}")
    return lost, problems
