from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shequ_services.grid import deadlines
from shequ_services.grid.clock import Limit, add_duration
from shequ_services.grid.deadlines import Alert

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


def test_a_late_stop_says_whether_the_overdue_alert_was_already_raised() -> None:
    reported, _ = step({}, "reported", MONDAY)
    late = MONDAY + timedelta(hours=5)
    _, unseen = step(reported, "accepted", late)
    assert unseen == [deadlines.Stopped("acknowledge", 5 * 3600.0, True, overdue_raised=False)]
    alerts = deadlines.due_alerts(reported, late)
    alerted = deadlines.mark_raised(reported, alerts, late)
    _, counted = step(alerted, "accepted", late)
    assert counted == [deadlines.Stopped("acknowledge", 5 * 3600.0, True, overdue_raised=True)]


def test_a_late_co_handler_stop_is_reported_under_the_co_handling_stage() -> None:
    dispatched, _ = step({}, "dispatched", MONDAY, co_handlers=("police",))
    _, stopped = step(dispatched, "dispatched", MONDAY + timedelta(days=30), co_handlers=())
    assert [(s.clock, s.breached, s.overdue_raised) for s in stopped] == [
        ("co_handling", True, False)
    ]


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
    clocks = deadlines.mark_raised(clocks, [Alert("resolve", "warned")], MONDAY)
    clocks, _ = step(clocks, "deferred", MONDAY, target_date=date(2026, 12, 31))
    resolve = clocks["resolve"]
    assert resolve.deadline == datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)
    assert resolve.warned_at is None
    # Re-armed and counted from the new deadline: 2027-01-01 is a Friday.
    assert [level.at for level in resolve.escalations] == [
        datetime(2027, 1, 1, 15, 59, 59, 999999, tzinfo=UTC),
        datetime(2027, 1, 5, 15, 59, 59, 999999, tzinfo=UTC),
    ]


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
    assert due == [Alert("acknowledge", "warned"), Alert("acknowledge", "overdue")]
    clocks = deadlines.mark_raised(clocks, due, late)
    assert deadlines.due_alerts(clocks, late + timedelta(days=30)) == []
    assert deadlines.next_due(clocks) is None


def test_the_resolve_clock_escalates_to_the_sub_district_then_to_the_district() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    first, second = clocks["resolve"].escalations
    # Deadline Thursday 26th; one working day later is Friday, three are Tuesday.
    assert (first.level, first.to) == (1, "sub_district")
    assert first.at == datetime(2026, 11, 27, 15, 59, 59, 999999, tzinfo=UTC)
    assert (second.level, second.to) == (2, "district")
    assert second.at == datetime(2026, 12, 1, 15, 59, 59, 999999, tzinfo=UTC)
    due = deadlines.due_alerts(clocks, first.at)
    assert Alert("resolve", "escalated", 1, "sub_district") in due
    assert not any(alert.level == 2 for alert in due)


def test_each_escalation_level_is_raised_once_and_in_order() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    first, second = clocks["resolve"].escalations
    due = deadlines.due_alerts(clocks, first.at)
    clocks = deadlines.mark_raised(clocks, due, first.at)
    assert deadlines.next_due(clocks) == second.at
    later = deadlines.due_alerts(clocks, second.at)
    assert later == [Alert("resolve", "escalated", 2, "district")]
    clocks = deadlines.mark_raised(clocks, later, second.at)
    assert deadlines.due_alerts(clocks, second.at + timedelta(days=90)) == []
    assert [level.raised_at for level in clocks["resolve"].escalations] == [first.at, second.at]


def test_levels_are_numbered_in_the_order_they_fall_due_whatever_the_listing() -> None:
    raw = {
        "clocks": {
            "x": {
                "starts_on": ["reported"],
                "stops_on": [],
                "limit": {"amount": 1, "unit": "hours"},
                "escalations": [
                    {"after": {"amount": 2, "unit": "hours"}, "to": "district"},
                    {"after": {"amount": 30, "unit": "minutes"}, "to": "sub_district"},
                ],
            }
        }
    }
    policy = deadlines.parse_policy(raw)
    clocks, _ = deadlines.on_state({}, policy, urgency="simple", to_state="reported", at=MONDAY)
    levels = clocks["x"].escalations
    assert [(level.level, level.to) for level in levels] == [(1, "sub_district"), (2, "district")]


def test_an_old_single_escalate_after_still_loads_as_one_level() -> None:
    raw = {
        "clocks": {
            "x": {
                "starts_on": ["reported"],
                "stops_on": [],
                "limit": {"amount": 2, "unit": "seconds"},
                "escalate_after": {"amount": 1, "unit": "seconds"},
            }
        }
    }
    (rule,) = deadlines.parse_policy(raw).clocks
    assert rule.escalations == (
        deadlines.EscalationRule(Limit(1, "seconds"), deadlines.DEFAULT_ESCALATION_TARGET),
    )


def test_the_shipped_drill_policy_with_escalate_after_still_loads() -> None:
    drill = Path(__file__).resolve().parents[2] / "support" / "fast_policy.yaml"
    rule = deadlines.parse_policy(yaml.safe_load(drill.read_text())).rule("acknowledge")
    assert rule is not None and len(rule.escalations) == 1


def test_a_clock_stored_before_escalation_levels_reads_as_one_level() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    stored = clocks["resolve"].to_document()
    del stored["escalations"]
    stored["escalate_at"] = MONDAY + timedelta(days=5)
    stored["escalated_at"] = None
    (level,) = deadlines.Clock.from_document(stored).escalations
    assert level == deadlines.Escalation(
        1, MONDAY + timedelta(days=5), deadlines.DEFAULT_ESCALATION_TARGET
    )


def test_a_clock_the_policy_no_longer_has_moves_without_escalations() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    renamed = replace(clocks["resolve"], name="retired")
    moved = deadlines.move_to(renamed, POLICY, date(2026, 12, 31))
    assert moved.escalations == ()
    assert moved.deadline == datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)


def test_a_stopped_clock_raises_nothing() -> None:
    clocks, _ = step({}, "reported", MONDAY)
    clocks, _ = step(clocks, "accepted", MONDAY + timedelta(minutes=5))
    assert Alert("acknowledge", "overdue") not in deadlines.due_alerts(
        clocks, MONDAY + timedelta(days=1)
    )


def test_a_clock_survives_a_round_trip_through_its_stored_form() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    stored = {name: clock.to_document() for name, clock in clocks.items()}
    assert {n: deadlines.Clock.from_document(d) for n, d in stored.items()} == clocks


ZERO_LIMIT = {"starts_on": [], "stops_on": [], "limit": {"amount": 0, "unit": "hours"}}
HOUR = {"amount": 1, "unit": "hours"}
ONE_HOUR = {"starts_on": [], "stops_on": [], "limit": HOUR}
LEVEL = {"after": HOUR, "to": "district"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"resolve_limits": {"simple": {"set": "369", "tier": "urgent"}}}, "no tier 'urgent'"),
        ({"warn_fraction": 1.5}, "warn_fraction"),
        ({"clocks": {"x": ZERO_LIMIT}}, "positive"),
        ({"clocks": {"x": {**ONE_HOUR, "escalations": []}}}, "non-empty list"),
        ({"clocks": {"x": {**ONE_HOUR, "escalations": [{"after": HOUR}]}}}, r"x.escalations\[0\]"),
        (
            {"clocks": {"x": {**ONE_HOUR, "escalations": [{"after": HOUR, "to": " "}]}}},
            "must name a level",
        ),
        (
            {"clocks": {"x": {**ONE_HOUR, "escalations": [LEVEL, LEVEL]}}},
            "its own target",
        ),
        (
            {"clocks": {"x": {**ONE_HOUR, "escalations": [LEVEL], "escalate_after": HOUR}}},
            "not both",
        ),
        ({"co_handling": {"limit": HOUR, "deadline": 3}}, "co_handling: unknown keys deadline"),
        ({"clocks": {"co_handling": ONE_HOUR}}, "top-level co_handling"),
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


def test_each_co_handler_gets_its_own_sub_task_clock_at_dispatch() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, co_handlers=("police", "housing"))
    police = clocks[deadlines.co_handling_key("police")]
    assert (police.name, police.department) == ("co_handling", "police")
    assert police.deadline == clocks["resolve"].deadline  # the urgency tier's limit
    assert [level.to for level in police.escalations] == ["sub_district"]
    assert deadlines.co_handling_key("housing") in clocks


def test_a_co_handler_clock_stops_when_its_sub_task_is_reported() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, co_handlers=("police", "housing"))
    later = MONDAY + timedelta(hours=2)
    clocks, stopped = step(clocks, "dispatched", later, co_handlers=("housing",))
    assert stopped == [deadlines.Stopped("co_handling", 7200.0, False)]
    assert not clocks[deadlines.co_handling_key("police")].running
    assert clocks[deadlines.co_handling_key("housing")].running


def test_a_co_handler_named_again_at_redispatch_keeps_its_running_clock() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, co_handlers=("police",))
    first = clocks[deadlines.co_handling_key("police")]
    clocks, _ = step(clocks, "accepted", MONDAY + timedelta(hours=1), co_handlers=("police",))
    clocks, _ = step(clocks, "dispatched", MONDAY + timedelta(hours=2), co_handlers=("police",))
    assert clocks[deadlines.co_handling_key("police")] == first


def test_a_co_handler_overdue_alert_names_its_own_clock_key() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, urgency="urgent", co_handlers=("police",))
    due = deadlines.due_alerts(clocks, MONDAY + timedelta(hours=3))
    assert Alert("co_handling:police", "overdue") in due


def test_an_approved_extension_moves_only_the_resolve_clock() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, co_handlers=("police",))
    before = clocks[deadlines.co_handling_key("police")]
    clocks = deadlines.mark_raised(clocks, [Alert("resolve", "warned")], MONDAY)
    moved, stopped = step(
        clocks, "in_progress", MONDAY, target_date=date(2026, 12, 4), co_handlers=("police",)
    )
    resolve = moved["resolve"]
    assert resolve.deadline == datetime(2026, 12, 4, 15, 59, 59, 999999, tzinfo=UTC)
    assert resolve.started == MONDAY and resolve.warned_at is None
    assert resolve.warn_at == MONDAY + (resolve.deadline - MONDAY) * POLICY.warn_fraction
    assert moved[deadlines.co_handling_key("police")] == before
    assert [s.clock for s in stopped] == ["sign_for"]


def test_a_new_target_on_a_stopped_resolve_clock_changes_nothing() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    clocks, _ = step(clocks, "handled", MONDAY + timedelta(hours=1))
    after, _ = step(clocks, "handled", MONDAY + timedelta(hours=2), target_date=date(2027, 1, 8))
    assert after["resolve"] == clocks["resolve"]


def test_deadline_date_is_the_local_date_of_a_running_clock() -> None:
    clocks, _ = step({}, "dispatched", MONDAY)
    assert deadlines.deadline_date(clocks, POLICY, "resolve") == date(2026, 11, 26)
    assert deadlines.deadline_date(clocks, POLICY, "feedback") is None


def test_a_co_handler_clock_survives_a_round_trip_through_its_stored_form() -> None:
    clocks, _ = step({}, "dispatched", MONDAY, co_handlers=("police",))
    clocks = deadlines.mark_raised(
        clocks, deadlines.due_alerts(clocks, MONDAY + timedelta(days=30)), MONDAY
    )
    stored = {name: clock.to_document() for name, clock in clocks.items()}
    assert {n: deadlines.Clock.from_document(d) for n, d in stored.items()} == clocks
