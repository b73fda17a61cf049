"""The pure parts of results and progress: encoding round trips, the limit, the throttle."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio._core._progress import (
    InvalidProgress,
    Progress,
    ProgressBook,
    check_progress,
)
from asynqpg_trio._core._results import (
    ResultNotSerializable,
    ResultTooLarge,
    StoredOutcome,
    TaskCancelled,
    TaskFailed,
    TaskNotFinished,
    decode_result,
    encode_result,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_json_results_round_trip(value: object) -> None:
    encoded = encode_result(value, limit=1 << 20, task_type="t")
    if value is None:
        assert encoded is None
        return
    assert encoded is not None
    assert decode_result(*encoded) == value


@given(st.binary())
def test_bytes_are_stored_as_they_are(value: bytes) -> None:
    assert encode_result(value, limit=1 << 20, task_type="t") == (value, "bytes")
    assert decode_result(value, "bytes") == value


def test_the_limit_and_unserialisable_values() -> None:
    assert encode_result(b"x" * 10, limit=10, task_type="t") == (b"x" * 10, "bytes")
    with pytest.raises(ResultTooLarge) as large:
        encode_result(b"x" * 11, limit=10, task_type="t")
    assert (large.value.size, large.value.limit) == (11, 10)
    for bad in ({1, 2}, object(), math.nan, [math.inf]):
        with pytest.raises(ResultNotSerializable):
            encode_result(bad, limit=100, task_type="t")


def test_stored_outcomes_give_the_value_or_the_error() -> None:
    assert StoredOutcome(1, "completed", b"[1]", "json", None).value() == [1]
    with pytest.raises(TaskFailed) as failed:
        StoredOutcome(1, "failed", None, None, "boom").value()
    assert failed.value.message == "boom" and "boom" in str(failed.value)
    with pytest.raises(TaskCancelled):
        StoredOutcome(1, "cancelled", None, None, None).value()
    with pytest.raises(TaskNotFinished):
        StoredOutcome(1, "running", None, None, None).value()


def test_progress_is_checked() -> None:
    assert check_progress(1, None) == Progress(1.0, None)
    assert check_progress(0.5, "x" * 2000).note == "x" * 1000
    for bad in (-0.1, 1.5, math.nan, True, "0.5"):
        with pytest.raises(InvalidProgress):
            check_progress(bad, None)
    with pytest.raises(InvalidProgress):
        check_progress(0.5, 3)


def test_the_book_writes_each_task_at_most_once_per_interval() -> None:
    book = ProgressBook(interval=0.25)
    writes = 0
    for step in range(100):  # 100 reports over one second
        now = step * 0.01
        book.report(1, 7, Progress(step / 100, None))
        due, _later = book.due(now)
        writes += len(due)
    assert writes == 4  # at 0, 0.25, 0.5, 0.75
    due, later = book.due(0.99)
    assert due == [] and later == pytest.approx(1.0)
    assert book.finish(1) == Progress(0.99, None)  # the last report, for the completion
    assert book.finish(1) is None
    assert book.due(5.0) == ([], None)
