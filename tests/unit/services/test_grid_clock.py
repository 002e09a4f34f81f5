from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shequ_services.grid import clock
from shequ_services.grid.clock import BusinessCalendar, Limit

SHANGHAI = ZoneInfo("Asia/Shanghai")

# A made-up calendar, NOT the real 2026 arrangement: one holiday on Wednesday
# 2026-12-02 and one make-up working Saturday 2026-12-05. Weekdays around it:
# Fri 11-20, Mon 11-23, Fri 11-27, Mon 11-30, Tue 12-01, Thu 12-03, Fri 12-04.
CALENDAR = BusinessCalendar(
    holidays=frozenset({date(2026, 12, 2)}),
    makeup_workdays=frozenset({date(2026, 12, 5)}),
)
PLAIN = BusinessCalendar()


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


def end_of_local_day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 23, 59, 59, 999999, tzinfo=SHANGHAI).astimezone(UTC)


def working_days(n: int) -> Limit:
    return Limit(n, "working_days")


def test_a_calendar_defaults_to_shanghai_time() -> None:
    assert BusinessCalendar().tz == SHANGHAI


def test_a_weekday_is_a_working_day() -> None:
    assert CALENDAR.is_working_day(date(2026, 12, 1))


def test_a_holiday_on_a_weekday_is_not_a_working_day() -> None:
    assert not CALENDAR.is_working_day(date(2026, 12, 2))


def test_an_ordinary_saturday_is_not_a_working_day() -> None:
    assert not CALENDAR.is_working_day(date(2026, 11, 28))


def test_a_makeup_saturday_is_a_working_day() -> None:
    assert CALENDAR.is_working_day(date(2026, 12, 5))


def test_a_calendar_refuses_a_date_that_is_both_holiday_and_makeup_workday() -> None:
    with pytest.raises(ValueError, match="2026-12-05"):
        BusinessCalendar(
            holidays=frozenset({date(2026, 12, 5)}),
            makeup_workdays=frozenset({date(2026, 12, 5)}),
        )


def test_working_days_skip_the_weekend() -> None:
    deadline = clock.add_duration(local(2026, 11, 26, 10, 0), working_days(3), CALENDAR)
    assert deadline == end_of_local_day(2026, 12, 1)  # Fri 27, Mon 30, Tue 1


def test_working_days_skip_a_holiday() -> None:
    deadline = clock.add_duration(local(2026, 11, 30, 10, 0), working_days(3), CALENDAR)
    assert deadline == end_of_local_day(2026, 12, 4)  # Tue 1, (Wed 2 off), Thu 3, Fri 4


def test_working_days_count_a_makeup_saturday() -> None:
    deadline = clock.add_duration(local(2026, 12, 3, 10, 0), working_days(2), CALENDAR)
    assert deadline == end_of_local_day(2026, 12, 5)  # Fri 4, Sat 5 (调休)


def test_without_the_makeup_saturday_the_same_count_ends_on_monday() -> None:
    deadline = clock.add_duration(local(2026, 12, 3, 10, 0), working_days(2), PLAIN)
    assert deadline == end_of_local_day(2026, 12, 7)


def test_a_start_late_on_friday_evening_in_shanghai_counts_from_monday() -> None:
    start = local(2026, 11, 20, 23, 30)  # still Friday 15:30 in UTC
    deadline = clock.add_duration(start, working_days(1), PLAIN)
    assert deadline == datetime(2026, 11, 23, 15, 59, 59, 999999, tzinfo=UTC)


def test_working_days_count_from_the_local_date_not_the_utc_date() -> None:
    start = datetime(2026, 11, 19, 16, 30, tzinfo=UTC)  # Thursday in UTC, Friday 00:30 local
    deadline = clock.add_duration(start, working_days(1), PLAIN)
    assert deadline == end_of_local_day(2026, 11, 23)


def test_the_start_day_never_counts_whatever_the_hour() -> None:
    early = clock.add_duration(local(2026, 11, 23, 0, 0), working_days(1), PLAIN)
    late = clock.add_duration(local(2026, 11, 23, 23, 59), working_days(1), PLAIN)
    assert early == late == end_of_local_day(2026, 11, 24)


def test_a_working_day_deadline_is_returned_in_utc() -> None:
    deadline = clock.add_duration(local(2026, 11, 23, 9, 0), working_days(3), PLAIN)
    assert deadline.tzinfo is UTC


def test_hours_run_across_midnight_by_the_clock() -> None:
    deadline = clock.add_duration(local(2026, 11, 23, 23, 0), Limit(2, "hours"), CALENDAR)
    assert deadline == local(2026, 11, 24, 1, 0)
    assert deadline.tzinfo is UTC


def test_hours_run_through_holidays() -> None:
    deadline = clock.add_duration(local(2026, 12, 1, 12, 0), Limit(24, "hours"), CALENDAR)
    assert deadline == local(2026, 12, 2, 12, 0)


def test_calendar_days_are_exact_days_through_weekends_and_holidays() -> None:
    start = local(2026, 11, 27, 10, 15)
    deadline = clock.add_duration(start, Limit(7, "calendar_days"), CALENDAR)
    assert deadline == start + timedelta(days=7)


def test_calendar_days_keep_the_local_clock_time_across_a_dst_change() -> None:
    berlin = BusinessCalendar(tz=ZoneInfo("Europe/Berlin"))
    start = datetime(2026, 3, 28, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    deadline = clock.add_duration(start, Limit(1, "calendar_days"), berlin)
    assert deadline == datetime(2026, 3, 29, 10, 0, tzinfo=UTC)  # 12:00 CEST


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.add_duration(datetime(2026, 11, 23, 9, 0), Limit(2, "hours"), PLAIN)


def test_a_limit_refuses_a_zero_amount() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limit(0, "hours")


def test_a_limit_refuses_an_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unknown limit unit"):
        Limit(3, "fortnights")  # type: ignore[arg-type]


def test_the_369_tier_set_is_three_six_nine_working_days() -> None:
    tiers = clock.TIER_SETS["369"]
    assert [tiers[t] for t in ("simple", "ordinary", "complex")] == [
        working_days(3),
        working_days(6),
        working_days(9),
    ]


def test_the_12345_tier_set_mixes_hours_and_calendar_days() -> None:
    tiers = clock.TIER_SETS["12345"]
    assert tiers["urgent"] == Limit(2, "hours")
    assert tiers["complex"] == Limit(15, "calendar_days")


STARTED = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
DEADLINE = STARTED + timedelta(hours=10)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (STARTED, "running"),
        (STARTED + timedelta(hours=8, microseconds=-1), "running"),
        (STARTED + timedelta(hours=8), "warned"),
        (DEADLINE, "warned"),
        (DEADLINE + timedelta(microseconds=1), "overdue"),
    ],
    ids=["at-start", "just-before-80pct", "at-80pct", "at-deadline", "just-after-deadline"],
)
def test_status_at_the_boundaries(now: datetime, expected: str) -> None:
    assert clock.status(DEADLINE, STARTED, now) == expected


def test_the_warning_fraction_is_a_parameter() -> None:
    now = STARTED + timedelta(hours=5)
    assert clock.status(DEADLINE, STARTED, now, warn_fraction=0.5) == "warned"


def test_status_refuses_a_deadline_not_after_the_start() -> None:
    with pytest.raises(ValueError, match="after the start"):
        clock.status(STARTED, STARTED, STARTED)


def test_status_refuses_a_warning_fraction_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="warn_fraction"):
        clock.status(DEADLINE, STARTED, STARTED, warn_fraction=1.5)


def test_an_extension_counts_from_the_old_deadline() -> None:
    old = end_of_local_day(2026, 11, 27)  # a Friday
    assert clock.extend(old, working_days(2), CALENDAR) == end_of_local_day(2026, 12, 1)


def test_an_hours_extension_moves_the_deadline_by_exactly_those_hours() -> None:
    assert clock.extend(DEADLINE, Limit(24, "hours"), CALENDAR) == DEADLINE + timedelta(days=1)


def test_a_started_clock_fixes_its_deadline_from_the_limit() -> None:
    state = clock.ClockState.start(local(2026, 11, 26, 10, 0), working_days(3), CALENDAR)
    assert state.deadline == end_of_local_day(2026, 12, 1)
    assert state.started.tzinfo is UTC


def test_an_overdue_clock_runs_again_after_an_extension() -> None:
    state = clock.ClockState.start(STARTED, Limit(10, "hours"), PLAIN)
    now = DEADLINE + timedelta(hours=1)
    assert state.status(now) == "overdue"
    longer = state.extended(Limit(2, "calendar_days"), PLAIN)
    assert longer.status(now) == "running"
    assert longer.extensions == (Limit(2, "calendar_days"),)
    assert longer.started == state.started


def test_parse_calendar_reads_dates_and_timezone() -> None:
    calendar = clock.parse_calendar(
        {
            "timezone": "Asia/Shanghai",
            "holidays": ["2026-12-02"],
            "makeup_workdays": ["2026-12-05"],
        }
    )
    assert calendar == CALENDAR


def test_parse_calendar_defaults_to_shanghai_and_empty_lists() -> None:
    assert clock.parse_calendar({}) == PLAIN


def test_parse_calendar_accepts_dates_yaml_already_parsed() -> None:
    calendar = clock.parse_calendar({"holidays": [date(2026, 12, 2)]})
    assert calendar.holidays == {date(2026, 12, 2)}


def test_parse_calendar_names_the_entry_with_an_impossible_date() -> None:
    with pytest.raises(ValueError, match=r"holidays\[1\]: '2026-13-01' is not a date"):
        clock.parse_calendar({"holidays": ["2026-12-02", "2026-13-01"]})


def test_parse_calendar_refuses_dates_not_written_as_yyyy_mm_dd() -> None:
    with pytest.raises(ValueError, match=r"makeup_workdays\[0\]"):
        clock.parse_calendar({"makeup_workdays": ["2026/12/05"]})


def test_parse_calendar_refuses_a_date_and_time_in_place_of_a_date() -> None:
    with pytest.raises(ValueError, match=r"holidays\[0\]"):
        clock.parse_calendar({"holidays": [datetime(2026, 12, 2, tzinfo=UTC)]})


def test_parse_calendar_refuses_a_date_listed_as_both_holiday_and_makeup_workday() -> None:
    with pytest.raises(ValueError, match="both as holiday and as make-up workday: 2026-12-05"):
        clock.parse_calendar({"holidays": ["2026-12-05"], "makeup_workdays": ["2026-12-05"]})


def test_parse_calendar_refuses_a_makeup_workday_on_a_weekday() -> None:
    with pytest.raises(ValueError, match="2026-12-04 is a Friday"):
        clock.parse_calendar({"makeup_workdays": ["2026-12-04"]})


def test_parse_calendar_refuses_an_unknown_timezone() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Asia/Beijing'"):
        clock.parse_calendar({"timezone": "Asia/Beijing"})


def test_parse_calendar_refuses_a_misspelt_key() -> None:
    with pytest.raises(ValueError, match="unknown calendar keys: holiday"):
        clock.parse_calendar({"holiday": ["2026-12-02"]})


def test_parse_calendar_refuses_a_date_list_that_is_not_a_list() -> None:
    with pytest.raises(ValueError, match="holidays must be a list"):
        clock.parse_calendar({"holidays": "2026-12-02"})
