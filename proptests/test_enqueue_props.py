"""Properties of batch planning: the column path agrees with the per-task validator.

`plan_batch` checks plain batches column by column (each distinct value once) and sends
uniform columns as scalars; `validate_task` is the definition of a valid task.  For any batch,
valid or not, plain or not, planning must refuse exactly the batches some task of which
`validate_task` refuses (same index, same message), and otherwise describe, row by row, the
values `validate_task` gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from asynqpg_trio import InvalidTask, Task
from asynqpg_trio._core._enqueue import BatchPlan, plan_batch
from asynqpg_trio._core._task import validate_task


def field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes one the validator must refuse."""
    return st.integers(0, 24).flatmap(lambda i: bad if i == 0 else good)


TYPES = field(
    st.sampled_from(["a", "b", "email:send", "x" * 255, "é"]),
    st.sampled_from(["", "x" * 256, "a\x00b", "\ud800", None, 3, b"a", ["a"]]),
)
PAYLOADS = field(
    st.one_of(st.sampled_from([b"", b"{}"]), st.binary(max_size=8)),
    st.sampled_from([bytearray(b"ba"), memoryview(b"mv"), "text", None]),
)
TOKENS = field(
    st.one_of(st.none(), st.none(), st.sampled_from(["t1", "t2", "t3"])),
    st.sampled_from(["", "\ud800", 5, ["t"]]),
)
DELAYS = field(
    st.one_of(
        st.sampled_from([0.0, 0.0, 0, -0.0, 5, 1.5, timedelta(0), timedelta(seconds=90)]),
        st.floats(min_value=0, max_value=1e6),
    ),
    st.sampled_from([-1, float("nan"), float("inf"), True, False, "1", timedelta(seconds=-1)]),
)
RETRIES = field(
    st.one_of(st.none(), st.none(), st.sampled_from([0, 1, 3, 32767])),
    st.sampled_from([32768, -1, True, False, 2.0, "3"]),
)
PROCESS_AT = field(
    st.one_of(
        st.none(),
        st.none(),
        st.sampled_from(
            [
                datetime(2030, 1, 1, tzinfo=UTC),
                datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),  # same instant
                datetime(2000, 1, 1, tzinfo=UTC),
            ]
        ),
    ),
    st.sampled_from([datetime(2030, 1, 1), "2030-01-01"]),  # naive, not a datetime
)


class SubTask(Task):
    """A subclass: valid, but not a plain task (the per-task path handles it)."""

    __slots__ = ()


@st.composite
def tasks(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 50)) == 0:
        return draw(st.sampled_from([None, "task", ("a", b"")]))
    cls = SubTask if draw(st.integers(0, 20)) == 0 else Task
    return cls(
        draw(TYPES),
        draw(PAYLOADS),
        idempotency_token=draw(TOKENS),
        delay=draw(DELAYS),
        max_retry=draw(RETRIES),
        process_at=draw(PROCESS_AT),
    )


# Also batches drawn from a few tasks, so that columns are often uniform.
BATCHES = st.one_of(
    st.lists(tasks(), min_size=1, max_size=8),
    st.lists(tasks(), min_size=1, max_size=3).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=12)
    ),
)


def rows_of(plan: BatchPlan, size: int) -> list[tuple[Any, ...]]:
    """Each row's values as the statement computes them: coalesce(array[i], scalar)."""
    p = plan.params
    assert len(p["payloads"]) == size

    def column(array: str, scalar: str) -> list[Any]:
        if p[array] is None:
            return [p[scalar]] * size
        assert p[scalar] is None, f"{scalar} must be NULL when {array} is sent"
        assert len(p[array]) == size
        return list(p[array])

    return list(
        zip(
            column("types", "type"),
            p["payloads"],
            column("tokens", "token"),
            column("delays", "delay"),
            column("process_ats", "process_at"),
            column("attempts", "attempt"),
            strict=True,
        )
    )


@given(BATCHES, st.integers(0, 5))
@example([Task("a", b""), Task("a", b"", delay=False)], 3)  # False == 0.0
@example([Task("a", b"", max_retry=1), Task("a", b"", max_retry=True)], 3)  # True == 1
@example([Task("a", b"", delay=0), Task("a", b"", delay=0.0)], 3)
def test_plan_agrees_with_per_task_validation(batch: list[Any], default: int) -> None:
    expected: list[tuple[Any, ...]] = []
    error: tuple[int, str] | None = None
    for index, task in enumerate(batch):
        try:
            v = validate_task(task, default)
        except InvalidTask as ex:
            error = (index, str(ex))
            break
        expected.append((v.type, v.payload, v.token, v.delay, v.process_at, v.attempts))
    if error is not None:
        with pytest.raises(InvalidTask) as info:
            plan_batch(batch, default)
        assert (info.value.index, str(info.value)) == (
            error[0],
            f"task at index {error[0]}: {error[1]}",
        )
        return
    plan = plan_batch(batch, default)
    got = rows_of(plan, len(batch))
    assert got == expected
    # Same types, not only equal values (0 == 0.0 == False); payloads are bytes.
    assert [tuple(type(x) for x in row) for row in got] == [
        tuple(type(x) for x in row) for row in expected
    ]
    assert plan.types == [row[0] for row in expected]
    tokened = any(row[2] is not None for row in expected)
    assert (plan.keys is not None) == tokened
    if plan.keys is not None:
        assert plan.keys == tuple(None if r[2] is None else (r[0], r[2]) for r in expected)
