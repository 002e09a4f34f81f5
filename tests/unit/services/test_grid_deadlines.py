from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shequ_services.grid import deadlines
from shequ_services.grid.clock import Limit, add_duration

POLICY = deadlines.parse_policy(
    yaml.safe_load((Path(deadlines.__file__).parent / "policy.yaml").read_text())
)
# Monday 2026-11-23 09:00 in Shanghai.
MONDAY = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def step(clocks, to_state, at, urgency="simple", **kw):  # type: ignore[no-untyped-def]
    return deadlines.on_state(clocks, POLICY, urgency=urgency, to_state=to_state, at=at, **kw)


def test_a_report_starts_the_acknowledge_clock_only() -> None:
    clocks, stopped = step({}, "reported", MONDAY)
    assert set(clocks) == {"acknowledge"}
    assert clocks["acknowledge"].deadline == MONDAY + timedelta(hours=4)
    assert stopped == []


def test_acceptance_stops_acknowledge_in_time_and_starts_dispatch() -> None:
    clocks, _ = step({}, "reported", MONDAY)
    clocks, stopped = step(clocks, "accepted", MONDAY + timedelta(hours=1))
    assert stopped == [deadlines.Stopped("acknowledge", 3600.0, False)]
    assert clocks["dispatch"].running and not clocks["acknowledge"].running


def test_the_resolve_limit_comes_from_the_urgency_tier() -> None:
    simple, _ = step({}, "dispatched", MONDAY, urgency="simple")
    urgent, _ = step({}, "dispatched", MONDAY, urgency="urgent")
    # 3 working days after Monday: the end of Thursday in Shanghai.
    assert simple["resolve"].deadline == datetime(2026, 11, 26, 15, 59, 59, 999999, tzinfo=UTC)
    assert urgent["resolve"].deadline == MONDAY + timedelta(hours=2)


def test_the_resolve_clock_keeps_running_through_return_and_redispatch() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    first = clocks["resolve"]
    clocks, stopped = step(clocks, "accepted", MONDAY + timedelta(hours=1))  # returned (退回)
    assert [s.clock for s in stopped] == ["sign_for"]
    clocks, _ = step(clocks, "dispatched", MONDAY + timedelta(hours=2))
    assert clocks["resolve"] == first
    assert clocks["sign_for"].started == MONDAY + timedelta(hours=2)


def test_a_deferral_moves_the_resolve_deadline_to_the_end_of_the_target_date() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    clocks = deadlines.mark_raised(clocks, [("resolve", "warned")], MONDAY)
    clocks, _ = step(clocks, "deferred", MONDAY, target_date=date(2026, 12, 31))
    resolve = clocks["resolve"]
    assert resolve.deadline == datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)
    assert resolve.warned_at is None and resolve.escalate_at is None


def test_a_reopened_case_starts_a_fresh_resolve_clock_on_redispatch() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    clocks, _ = step(clocks, "handled", MONDAY + timedelta(days=1))
    clocks, _ = step(clocks, "reopened", MONDAY + timedelta(days=2))
    clocks, _ = step(clocks, "dispatched", MONDAY + timedelta(days=3))
    assert clocks["resolve"].started == MONDAY + timedelta(days=3)
    assert clocks["resolve"].running


def test_alerts_fall_due_in_order_and_are_raised_once() -> None:
    clocks, _ = step({}, "reported", MONDAY)
    ack = clocks["acknowledge"]
    assert deadlines.next_due(clocks) == ack.warn_at == MONDAY + timedelta(hours=3, minutes=12)
    assert deadlines.due_alerts(clocks, ack.warn_at - timedelta(seconds=1)) == []
    late = MONDAY + timedelta(hours=5)
    due = deadlines.due_alerts(clocks, late)
    assert due == [("acknowledge", "warned"), ("acknowledge", "overdue")]
    clocks = deadlines.mark_raised(clocks, due, late)
    assert deadlines.due_alerts(clocks, late + timedelta(days=30)) == []
    assert deadlines.next_due(clocks) is None


def test_the_resolve_clock_escalates_a_working_day_after_its_deadline() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    resolve = clocks["resolve"]
    assert resolve.escalate_at == datetime(2026, 11, 27, 15, 59, 59, 999999, tzinfo=UTC)
    due = deadlines.due_alerts(clocks, resolve.escalate_at)
    assert ("resolve", "escalated") in due


def test_a_stopped_clock_raises_nothing() -> None:
    clocks, _ = step({}, "reported", MONDAY)
    clocks, _ = step(clocks, "accepted", MONDAY + timedelta(minutes=5))
    assert ("acknowledge", "overdue") not in deadlines.due_alerts(
        clocks, MONDAY + timedelta(days=1)
    )


def test_a_clock_survives_a_round_trip_through_its_stored_form() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    stored = {name: clock.to_document() for name, clock in clocks.items()}
    assert {n: deadlines.Clock.from_document(d) for n, d in stored.items()} == clocks


ZERO_LIMIT = {"starts_on": [], "stops_on": [], "limit": {"amount": 0, "unit": "hours"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"resolve_limits": {"simple": {"set": "369", "tier": "urgent"}}}, "no tier 'urgent'"),
        ({"warn_fraction": 1.5}, "warn_fraction"),
        ({"clocks": {"x": ZERO_LIMIT}}, "positive"),
    ],
)
def test_a_bad_policy_is_refused_with_a_message_naming_the_entry(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deadlines.parse_policy(raw)


def test_a_fixed_limit_does_not_depend_on_urgency() -> None:
    rule = POLICY.clocks[0]
    assert POLICY.limit_for(rule, "complex") == Limit(4, "hours")


def test_the_shipped_calendar_counts_the_2026_national_day_holiday_and_makeup_days() -> None:
    calendar = POLICY.calendar
    assert not calendar.is_working_day(date(2026, 10, 1))
    assert not calendar.is_working_day(date(2026, 10, 7))
    assert calendar.is_working_day(date(2026, 9, 20))  # a Sunday made a working day
    assert calendar.is_working_day(date(2026, 10, 10))  # a Saturday made a working day
    # Reported Wednesday 30 September: 1–7 October are holidays, so the three working
    # days are Thursday 8th, Friday 9th and the make-up Saturday 10th.
    start = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)
    deadline = add_duration(start, Limit(3, "working_days"), calendar)
    assert deadline == datetime(2026, 10, 10, 15, 59, 59, 999999, tzinfo=UTC)


def test_the_shipped_calendar_lists_the_spring_festival_week_as_holidays() -> None:
    spring = [date(2026, 2, 15) + timedelta(days=n) for n in range(9)]
    assert not any(POLICY.calendar.is_working_day(d) for d in spring)
    assert POLICY.calendar.is_working_day(date(2026, 2, 14))
    assert POLICY.calendar.is_working_day(date(2026, 2, 28))
