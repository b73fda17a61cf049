"""Properties of the task state machine (asynqpg_trio._core._state).

The table is checked two ways: against invariants (counters, leases, terminal states)
along random event sequences, and against ``spec_apply``, an independent imperative
transcription of docs/design notes ("attempt accounting"), so that a typo in the table
and the same typo in a property cannot cancel out.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio._core._errors import IllegalTransition
from asynqpg_trio._core._state import (
    FENCED_EVENTS,
    TRANSITIONS,
    Event,
    TaskRow,
    TaskStatus,
    TransitionParams,
    allowed_pairs,
    apply,
    matching_rules,
    mermaid_diagram,
)

S, E = TaskStatus, Event
FINAL_EXITS = {E.MANUAL_RETRY, E.DELETE, E.CLEAN}


# --- the specification, written independently of the table ---------------------------


def spec_apply(row: TaskRow | None, event: Event, p: TransitionParams) -> TaskRow | None:
    """design.md's transitions as plain code; raises IllegalTransition like apply()."""
    if event is E.ENQUEUE:
        if row is not None:
            raise IllegalTransition(event, row.status)
        return TaskRow(S.PENDING, max(p.max_retry, 1), 0, 0, None, p.now + p.delay, None)
    if row is None:
        if event in FENCED_EVENTS:
            return None
        raise IllegalTransition(event, None)
    s, left, elapsed = row.status, row.attempts_left, row.attempts_elapsed
    one_more = min(row.n_messages + 1, 100)  # the last 100 messages are kept
    fenced_ok = s is S.RUNNING and row.lease_token is not None and row.lease_token == p.token
    go_claim = s is S.RUNNING and row.lease_token is None  # a Go consumer's: attempt uncharged
    expired = row.blocked_till <= p.now
    failed = replace(
        row, status=S.FAILED, n_messages=one_more, finalized_at=p.now, lease_token=None
    )
    to_pending = replace(row, status=S.PENDING, lease_token=None, blocked_till=p.now + p.delay)
    if event is E.CLAIM and s is S.PENDING and expired:
        return replace(
            row, status=S.RUNNING, attempts_left=left - 1, attempts_elapsed=elapsed + 1,
            lease_token=p.new_token, blocked_till=p.now + p.lease,
        )  # fmt: skip
    if (
        go_claim
        and expired
        and (event is E.LEASE_TAKEOVER or (event is E.RESCUE and p.token is None))
    ):
        # Charge the dead attempt first; then the takeover needs one more for itself.
        left, elapsed = max(left - 1, 0), elapsed + 1
        charged = replace(failed, attempts_left=left, attempts_elapsed=elapsed)
        if event is E.RESCUE:
            pending = replace(to_pending, n_messages=one_more)
            return (
                replace(pending, attempts_left=left, attempts_elapsed=elapsed) if left else charged
            )
        if left >= 1:
            return replace(
                row, attempts_left=left - 1, attempts_elapsed=elapsed + 1,
                lease_token=p.new_token, blocked_till=p.now + p.lease, n_messages=one_more,
            )  # fmt: skip
        return charged
    if event is E.LEASE_TAKEOVER and s is S.RUNNING and expired:
        if left >= 1:
            return replace(
                row, attempts_left=left - 1, attempts_elapsed=elapsed + 1,
                lease_token=p.new_token, blocked_till=p.now + p.lease,
                n_messages=one_more,
            )  # fmt: skip
        return failed
    if event is E.CANCEL and s in (S.PENDING, S.RUNNING, S.FAILED):
        finalized_at = p.now if row.finalized_at is None else row.finalized_at
        return replace(row, status=S.CANCELLED, finalized_at=finalized_at, lease_token=None)
    if event is E.CANCEL and s is S.CANCELLED:
        return row
    if event is E.MANUAL_RETRY and s in (S.FAILED, S.CANCELLED):
        return replace(
            row, status=S.PENDING, finalized_at=None, blocked_till=p.now,
            attempts_left=max(left, 1), lease_token=None,
        )  # fmt: skip
    if event is E.DELETE and s is not S.RUNNING:
        return None
    if event is E.CLEAN and s.is_finalized:
        assert row.finalized_at is not None
        if row.finalized_at < p.now - p.retention:
            return None
    if event not in FENCED_EVENTS:
        raise IllegalTransition(event, s)
    # Fenced events: a stale token or a row that is not running is a no-op.
    if not fenced_ok:
        return row
    if event is E.COMPLETE:
        return replace(row, status=S.COMPLETED, finalized_at=p.now, lease_token=None)
    if event in (E.FAIL, E.SKIP_RETRY):
        return failed
    if event in (E.RETRY, E.SNOOZE_WITH_ERROR):
        return replace(to_pending, n_messages=one_more) if left >= 1 else failed
    if event is E.SNOOZE:
        return replace(to_pending, attempts_left=left + 1, attempts_elapsed=elapsed - 1)
    if event is E.RELEASE:
        return replace(
            to_pending, attempts_left=left + 1, attempts_elapsed=elapsed - 1, blocked_till=p.now
        )
    if event is E.EXTEND_LEASE:
        return replace(row, blocked_till=p.now + p.lease)
    assert event is E.RESCUE
    if not expired:
        return row
    return replace(to_pending, n_messages=one_more) if left >= 1 else failed


# --- strategies -----------------------------------------------------------------------

DURATIONS = st.sampled_from([0.0, 0.5, 1.0, 5.0, 30.0, 120.0])


@st.composite
def params_for(
    draw: st.DrawFn, row: TaskRow | None, now: float, issued: list[int]
) -> TransitionParams:
    """Parameters for the next event: the clock moves on; tokens are current or stale."""
    current = None if row is None else row.lease_token
    return TransitionParams(
        now=now + draw(DURATIONS),
        delay=draw(DURATIONS),
        token=draw(st.one_of(st.just(current), st.sampled_from([None, -1, *issued]))),
        new_token=max(issued, default=0) + 1,
        lease=draw(st.sampled_from([1.0, 30.0])),
        retention=draw(st.sampled_from([0.0, 5.0, 60.0])),
        max_retry=draw(st.integers(-1, 3)),
    )


@st.composite
def situations(
    draw: st.DrawFn, max_steps: int = 10
) -> tuple[TaskRow | None, Event, TransitionParams, list[int]]:
    """A row reached by a random history, the next event and its params, tokens issued."""
    row: TaskRow | None = None
    now = 1000.0
    issued: list[int] = []
    for _ in range(draw(st.integers(0, max_steps))):
        event = draw(st.sampled_from(Event))
        params = draw(params_for(row, now, issued))
        try:
            row = apply(row, event, params)
        except IllegalTransition:
            continue
        now = params.now
        if event in (E.CLAIM, E.LEASE_TAKEOVER) and params.new_token is not None:
            issued.append(params.new_token)
    event = draw(st.sampled_from(Event))
    return row, event, draw(params_for(row, now, issued)), issued


@st.composite
def go_claims(draw: st.DrawFn) -> TaskRow:
    """A running row as a Go consumer's claim leaves it: no lease token, attempt uncharged
    (Go's max_retry 0 stores attempts_left 0)."""
    return TaskRow(
        S.RUNNING,
        draw(st.integers(0, 4)),
        draw(st.integers(0, 4)),
        draw(st.integers(0, 100)),
        None,
        draw(st.sampled_from([990.0, 1000.0, 1010.0])),
        None,
    )


def check_invariants(row: TaskRow | None) -> None:
    """What must hold for every row the table can produce."""
    if row is None:
        return
    assert isinstance(row.status, TaskStatus)
    assert row.attempts_left >= 0
    assert row.attempts_elapsed >= 0
    assert 0 <= row.n_messages <= 100
    assert (row.status is S.RUNNING) == (row.lease_token is not None)
    assert row.status.is_finalized == (row.finalized_at is not None)
    if row.status is S.PENDING:
        assert row.attempts_left >= 1
    if row.status is S.RUNNING:
        assert row.attempts_elapsed >= 1


# --- properties -----------------------------------------------------------------------


@given(st.data())
def test_random_walk_matches_spec_and_keeps_invariants(data: st.DataObject) -> None:
    row: TaskRow | None = None
    now, issued = 1000.0, list[int]()
    for _ in range(data.draw(st.integers(1, 30))):
        event = data.draw(st.sampled_from(Event))
        params = data.draw(params_for(row, now, issued))
        try:
            expected = spec_apply(row, event, params)
        except IllegalTransition:
            with pytest.raises(IllegalTransition):
                apply(row, event, params)
            continue
        new = apply(row, event, params)
        assert new == expected
        check_invariants(new)
        if row is not None and new is not None:
            assert new.n_messages >= row.n_messages
        row, now = new, params.now
        if event in (E.CLAIM, E.LEASE_TAKEOVER):
            issued.append(max(issued, default=0) + 1)


@given(go_claims(), st.sampled_from(Event), st.data())
def test_a_go_claim_is_charged_its_dead_attempt(
    row: TaskRow, event: Event, data: st.DataObject
) -> None:
    params = data.draw(params_for(row, 1000.0, [7]))
    try:
        expected = spec_apply(row, event, params)
    except IllegalTransition:
        with pytest.raises(IllegalTransition):
            apply(row, event, params)
        return
    new = apply(row, event, params)
    assert new == expected
    if new is row or new is None:
        return
    check_invariants(new)  # whatever acts on it leaves a row of our own kind
    if event in (E.LEASE_TAKEOVER, E.RESCUE):
        # The dead attempt and, when taken over and run again, the new one are charged.
        assert new.attempts_elapsed == row.attempts_elapsed + 1 + (new.status is S.RUNNING)
        assert new.attempts_left + new.attempts_elapsed == (
            max(row.attempts_left, 1) + row.attempts_elapsed
        )


@given(situations())
def test_terminal_states_absorb_everything_but_retry_and_deletion(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    if row is None or not row.status.is_finalized or event in FINAL_EXITS:
        return
    try:
        new = apply(row, event, params)
    except IllegalTransition:
        return
    assert new is not None
    assert new.status.is_finalized
    # The one move between terminal states: cancelling a failed task.
    assert new.status is row.status or (row.status, new.status) == (S.FAILED, S.CANCELLED)
    assert new.finalized_at == row.finalized_at
    assert (new.attempts_left, new.attempts_elapsed) == (row.attempts_left, row.attempts_elapsed)


@given(situations())
def test_attempt_sum_is_constant_except_manual_retry(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    try:
        new = apply(row, event, params)
    except IllegalTransition:
        return
    if row is None or new is None:
        return
    total = row.attempts_left + row.attempts_elapsed
    new_total = new.attempts_left + new.attempts_elapsed
    if event is E.MANUAL_RETRY:
        assert new_total >= total
    else:
        assert new_total == total


@given(situations())
def test_no_event_makes_a_counter_negative(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    check_invariants(row)
    try:
        new = apply(row, event, params)
    except IllegalTransition:
        return
    check_invariants(new)


@given(situations(), st.data())
def test_fenced_event_with_stale_token_is_a_noop(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]], data: st.DataObject
) -> None:
    row, _, params, issued = s
    event = data.draw(st.sampled_from(sorted(FENCED_EVENTS)))
    current = None if row is None else row.lease_token
    stale = data.draw(st.sampled_from([None, -1, *issued]).filter(lambda t: t != current))
    assert apply(row, event, replace(params, token=stale)) is row


@given(situations())
def test_fenced_event_on_a_row_that_is_not_running_is_a_noop(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    if event in FENCED_EVENTS and (row is None or row.status is not S.RUNNING):
        assert apply(row, event, params) is row


@given(situations())
def test_illegal_transition_exactly_when_no_rule_matches(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    rules = matching_rules(row, event, params)
    assert len(rules) <= 1, "the guards of one event must be mutually exclusive"
    if rules or event in FENCED_EVENTS:
        apply(row, event, params)
        return
    with pytest.raises(IllegalTransition) as info:
        apply(row, event, params)
    assert info.value.event == event
    assert info.value.status == (None if row is None else row.status)


@given(situations())
def test_status_is_always_a_task_status(
    s: tuple[TaskRow | None, Event, TransitionParams, list[int]],
) -> None:
    row, event, params, _ = s
    try:
        new = apply(row, event, params)
    except IllegalTransition:
        return
    assert new is None or type(new.status) is TaskStatus


# --- the table itself -----------------------------------------------------------------


def test_every_event_has_a_rule() -> None:
    assert {rule.event for rule in TRANSITIONS} == set(Event)


def test_fenced_events_are_the_lease_holders_events() -> None:
    assert {
        E.COMPLETE, E.FAIL, E.SKIP_RETRY, E.RETRY, E.SNOOZE, E.SNOOZE_WITH_ERROR,
        E.RELEASE, E.EXTEND_LEASE, E.RESCUE,
    } == FENCED_EVENTS  # fmt: skip


def test_allowed_pairs_lists_each_source_once() -> None:
    pairs = allowed_pairs()
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {(r.event, src) for r in TRANSITIONS for src in r.sources}
    assert (E.ENQUEUE, None) in pairs
    assert (E.DELETE, S.RUNNING) not in pairs
    assert (E.CANCEL, S.COMPLETED) not in pairs
    for status in (S.PENDING, S.RUNNING, S.COMPLETED):
        assert (E.MANUAL_RETRY, status) not in pairs


def test_mermaid_diagram_mentions_every_status_and_event() -> None:
    diagram = mermaid_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    for name in [*TaskStatus, *Event]:
        assert name.value in diagram
    assert "[*] --> pending : enqueue" in diagram


# --- worked examples ------------------------------------------------------------------


def test_life_of_a_task_with_two_executions() -> None:
    t = TransitionParams
    row = apply(None, E.ENQUEUE, t(now=0.0, delay=5.0, max_retry=2))
    assert row == TaskRow(S.PENDING, 2, 0, 0, None, 5.0, None)
    with pytest.raises(IllegalTransition):
        apply(row, E.CLAIM, t(now=4.0, new_token=1))  # not due yet
    row = apply(row, E.CLAIM, t(now=5.0, new_token=1, lease=30.0))
    assert row == TaskRow(S.RUNNING, 1, 1, 0, None, 35.0, 1)
    row = apply(row, E.RETRY, t(now=6.0, token=1, delay=10.0))
    assert row == TaskRow(S.PENDING, 1, 1, 1, None, 16.0, None)
    row = apply(row, E.CLAIM, t(now=16.0, new_token=2, lease=30.0))
    assert row == TaskRow(S.RUNNING, 0, 2, 1, None, 46.0, 2)
    assert apply(row, E.COMPLETE, t(now=17.0, token=1)) is row  # stale lease
    row = apply(row, E.RETRY, t(now=17.0, token=2, delay=10.0))  # spent: fails
    assert row == TaskRow(S.FAILED, 0, 2, 2, 17.0, 46.0, None)
    row = apply(row, E.MANUAL_RETRY, t(now=20.0))
    assert row == TaskRow(S.PENDING, 1, 2, 2, None, 20.0, None)


def test_snooze_and_release_refund_the_attempt() -> None:
    running = TaskRow(S.RUNNING, 0, 3, 0, None, 50.0, 9)
    snoozed = apply(running, E.SNOOZE, TransitionParams(now=10.0, token=9, delay=7.0))
    assert snoozed == TaskRow(S.PENDING, 1, 2, 0, None, 17.0, None)
    released = apply(running, E.RELEASE, TransitionParams(now=10.0, token=9))
    assert released == TaskRow(S.PENDING, 1, 2, 0, None, 10.0, None)


def test_a_full_message_history_drops_its_oldest_message() -> None:
    running = TaskRow(S.RUNNING, 0, 3, 100, None, 50.0, 9)
    failed = apply(running, E.FAIL, TransitionParams(now=10.0, token=9))
    assert failed == TaskRow(S.FAILED, 0, 3, 100, 10.0, 50.0, None)
    fewer = apply(replace(running, n_messages=99), E.FAIL, TransitionParams(now=10.0, token=9))
    assert fewer is not None
    assert fewer.n_messages == 100


def test_expired_lease_is_taken_over_or_fails_when_spent() -> None:
    row = TaskRow(S.RUNNING, 1, 1, 0, None, 30.0, 4)
    p = TransitionParams(now=30.0, new_token=5, lease=30.0)
    assert apply(row, E.LEASE_TAKEOVER, p) == TaskRow(S.RUNNING, 0, 2, 1, None, 60.0, 5)
    spent = replace(row, attempts_left=0)
    assert apply(spent, E.LEASE_TAKEOVER, p) == TaskRow(S.FAILED, 0, 1, 1, 30.0, 30.0, None)
    with pytest.raises(IllegalTransition):
        apply(row, E.LEASE_TAKEOVER, replace(p, now=29.0))


def test_a_go_claim_taken_over_or_rescued_is_charged_its_dead_attempt() -> None:
    go = TaskRow(S.RUNNING, 3, 1, 1, None, 30.0, None)  # Go claimed attempt 2, uncharged
    p = TransitionParams(now=30.0, new_token=5, lease=30.0, delay=2.0)
    assert apply(go, E.LEASE_TAKEOVER, p) == TaskRow(S.RUNNING, 1, 3, 2, None, 60.0, 5)
    assert apply(go, E.RESCUE, p) == TaskRow(S.PENDING, 2, 2, 2, None, 32.0, None)
    last = replace(go, attempts_left=1)  # attempt 2 was its last
    assert apply(last, E.LEASE_TAKEOVER, p) == TaskRow(S.FAILED, 0, 2, 2, 30.0, 30.0, None)
    assert apply(last, E.RESCUE, p) == TaskRow(S.FAILED, 0, 2, 2, 30.0, 30.0, None)
    # The janitor acts only on what it read: a token it read is not a Go claim.
    assert apply(go, E.RESCUE, replace(p, token=4)) is go


def test_rescue_needs_the_token_it_read_and_an_expired_lease() -> None:
    row = TaskRow(S.RUNNING, 1, 1, 0, None, 30.0, 4)
    assert apply(row, E.RESCUE, TransitionParams(now=29.0, token=4)) is row
    assert apply(row, E.RESCUE, TransitionParams(now=31.0, token=3)) is row
    rescued = apply(row, E.RESCUE, TransitionParams(now=31.0, token=4, delay=2.0))
    assert rescued == TaskRow(S.PENDING, 1, 1, 1, None, 33.0, None)


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (S.COMPLETED, E.CANCEL),
        (S.RUNNING, E.DELETE),
        (S.PENDING, E.MANUAL_RETRY),
        (S.RUNNING, E.MANUAL_RETRY),
        (S.COMPLETED, E.MANUAL_RETRY),
    ],
)
def test_client_commands_refused(status: TaskStatus, event: Event) -> None:
    running = status is S.RUNNING
    row = TaskRow(
        status, 1, 1, 0, None if not status.is_finalized else 5.0, 0.0, 1 if running else None
    )
    with pytest.raises(IllegalTransition, match=event.value):
        apply(row, event, TransitionParams(now=10.0))


def test_cancel_twice_is_a_noop_and_keeps_finalized_at() -> None:
    failed = TaskRow(S.FAILED, 1, 1, 1, 5.0, 0.0, None)
    cancelled = apply(failed, E.CANCEL, TransitionParams(now=10.0))
    assert cancelled == replace(failed, status=S.CANCELLED)
    assert apply(cancelled, E.CANCEL, TransitionParams(now=20.0)) == cancelled


def test_clean_waits_for_the_retention() -> None:
    done = TaskRow(S.COMPLETED, 0, 1, 0, 100.0, 0.0, None)
    with pytest.raises(IllegalTransition):
        apply(done, E.CLEAN, TransitionParams(now=160.0, retention=60.0))
    assert apply(done, E.CLEAN, TransitionParams(now=160.5, retention=60.0)) is None


def test_claim_without_a_new_token_is_a_programming_error() -> None:
    row = TaskRow(S.PENDING, 1, 0, 0, None, 0.0, None)
    with pytest.raises(ValueError, match="new_token"):
        apply(row, E.CLAIM, TransitionParams(now=1.0))


def test_illegal_transition_pickles() -> None:
    import pickle

    exc = pickle.loads(pickle.dumps(IllegalTransition("delete", "running")))
    assert (exc.event, exc.status, str(exc)) == (
        "delete",
        "running",
        "event 'delete' is not allowed on a running task",
    )
