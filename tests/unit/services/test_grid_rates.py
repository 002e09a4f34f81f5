"""The rates on a fixture small enough to work out by hand.

Eight incidents; "ack" is the acknowledge clock (limit 4 h = 14,400 s), the
other columns are how long each stopped clock ran, in seconds ("run" is a
clock still running, "-" one that never started):

  # community   category department status            ack         disp sign resolve  fb  score
  1 hx-qingyuan facility municipal  closed_resolved     600 in time 1800 3600  86400 7200   5
  2 hx-qingyuan facility municipal  closed_unresolved  3000 in time  600 7200 172800 3600   2
  3 hx-qingyuan alley    city_mgmt  closed_resolved   20000 late    1200 1800  43200 1800   4
  4 hx-qingyuan facility -          rejected           1200 in time    -    -      -    -   -
  5 hx-liushu   alley    -          reported          run, 1 h old     -    -      -    -   -
  6 hx-liushu   facility -          reported          run, 2 d old     -    -      -    -   -
  7 hx-liushu   facility municipal  reopened            900 in time  run 5400 259200  600   1
  8 hx-liushu   alley    city_mgmt  closed_resolved    1800 in time 3000  900  21600 5400   -

("city_mgmt" is city_management.)

By hand, all eight together:

- response: decided = stopped (1, 2, 3, 4, 7, 8) + running past the deadline
  (6) = 7; #5 is within its limit, pending. In time: 1, 2, 4, 7, 8 = 5 -> 5/7.
- resolution: resolved 1, 3, 8 = 3; unresolved 2 = 1; #7 (reopened), the
  rejected and the open ones count nowhere -> 3/4.
- satisfaction: latest scores 5, 2, 4, 1; 4 or 5: two -> 2/4.
- acknowledge: 600 900 1200 1800 3000 20000 (n=6): median (1200+1800)/2 =
  1500; p90 nearest rank ceil(0.9*6)=6th -> 20000.
- dispatch: 600 1200 1800 3000 (n=4, #7 running): median 1500; p90 rank
  ceil(3.6)=4th -> 3000.
- sign_for: 900 1800 3600 5400 7200: median 3600; p90 rank ceil(4.5)=5th -> 7200.
- resolve: 21600 43200 86400 172800 259200: median 86400; p90 -> 259200.
- feedback: 600 1800 3600 5400 7200: median 3600; p90 -> 7200.

By community: hx-qingyuan (1-4) response 3/4, resolution 2/3, satisfaction
2/3; hx-liushu (5-8) response 2/3 (#5 pending), resolution 1/1,
satisfaction 0/1.
By department: city_management (3, 8) response 1/2, resolution 2/2,
satisfaction 1/1; municipal (1, 2, 7) response 3/3, resolution 1/2,
satisfaction 1/3; none (4, 5, 6) response 1/2, resolution and satisfaction
0/0 -> null.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shequ_services.grid import rates
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.rates import Facts, Ratio, Spread

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
ACK_LIMIT = 14400
CLOCKS = ("acknowledge", "dispatch", "sign_for", "resolve", "feedback")


def clock(name: str, ran: int | None, started: datetime = T0, limit: int = 86400) -> Clock:
    """A clock started at ``started`` that ran ``ran`` seconds (None: still running)."""
    deadline = started + timedelta(seconds=limit)
    return Clock(
        name=name,
        started=started,
        deadline=deadline,
        warn_at=started + (deadline - started) * 0.8,
        stopped_at=None if ran is None else started + timedelta(seconds=ran),
    )


def stages(ack: int | None, *rest: int | None, ack_started: datetime = T0) -> dict[str, Clock]:
    clocks = {"acknowledge": clock("acknowledge", ack, ack_started, ACK_LIMIT)}
    clocks.update({name: clock(name, ran) for name, ran in zip(CLOCKS[1:], rest, strict=False)})
    return clocks


QY, LS = "hx-qingyuan", "hx-liushu"
FIXTURE = [
    Facts(QY, "facility", "municipal", "closed_resolved", T0,
          stages(600, 1800, 3600, 86400, 7200), 5),
    Facts(QY, "facility", "municipal", "closed_unresolved", T0,
          stages(3000, 600, 7200, 172800, 3600), 2),
    Facts(QY, "alley", "city_management", "closed_resolved", T0,
          stages(20000, 1200, 1800, 43200, 1800), 4),
    Facts(QY, "facility", None, "rejected", T0, stages(1200)),
    Facts(LS, "alley", None, "reported", T0,
          stages(None, ack_started=NOW - timedelta(hours=1))),
    Facts(LS, "facility", None, "reported", T0,
          stages(None, ack_started=NOW - timedelta(days=2))),
    Facts(LS, "facility", "municipal", "reopened", T0,
          stages(900, None, 5400, 259200, 600), 1),
    Facts(LS, "alley", "city_management", "closed_resolved", T0,
          stages(1800, 3000, 900, 21600, 5400)),
]  # fmt: skip


def summary(facts: list[Facts] = FIXTURE, group_by: str | None = None) -> list[rates.Group]:
    return rates.summarise(facts, now=NOW, clocks=CLOCKS, tz=SHANGHAI, group_by=group_by)


def test_the_three_rates_of_the_whole_fixture_match_the_hand_count() -> None:
    (group,) = summary()
    assert group.key == {}
    assert group.incidents == 8
    assert group.response_rate == Ratio(5, 7)
    assert group.resolution_rate == Ratio(3, 4)
    assert group.satisfaction_rate == Ratio(2, 4)
    assert group.resolution_rate.value == 0.75


def test_median_and_p90_of_each_clock_match_the_hand_count() -> None:
    (group,) = summary()
    assert group.stage_seconds == {
        "acknowledge": Spread(6, 1500, 20000),
        "dispatch": Spread(4, 1500, 3000),
        "sign_for": Spread(5, 3600, 7200),
        "resolve": Spread(5, 86400, 259200),
        "feedback": Spread(5, 3600, 7200),
    }


def test_by_community_each_group_has_its_own_counts() -> None:
    groups = {g.key["community"]: g for g in summary(group_by="community")}
    assert list(groups) == [LS, QY]
    assert (groups[QY].response_rate, groups[QY].resolution_rate) == (Ratio(3, 4), Ratio(2, 3))
    assert groups[QY].satisfaction_rate == Ratio(2, 3)
    assert (groups[LS].response_rate, groups[LS].resolution_rate) == (Ratio(2, 3), Ratio(1, 1))
    assert groups[LS].satisfaction_rate == Ratio(0, 1)


def test_by_department_undispatched_incidents_come_last_with_null_rates() -> None:
    groups = summary(group_by="department")
    assert [g.key["department"] for g in groups] == ["city_management", "municipal", None]
    city, municipal, none = groups
    assert (city.response_rate, city.resolution_rate, city.satisfaction_rate) == (
        Ratio(1, 2), Ratio(2, 2), Ratio(1, 1),
    )  # fmt: skip
    assert (municipal.response_rate, municipal.resolution_rate) == (Ratio(3, 3), Ratio(1, 2))
    assert municipal.satisfaction_rate == Ratio(1, 3)
    assert none.incidents == 3
    assert none.response_rate == Ratio(1, 2)
    assert none.resolution_rate.value is None
    assert none.satisfaction_rate.value is None
    assert none.stage_seconds["resolve"] == Spread(0, None, None)


def test_closed_but_unresolved_does_not_count_as_resolved() -> None:
    unresolved = [f for f in FIXTURE if f.status == "closed_unresolved"]
    assert rates.resolution(unresolved) == Ratio(0, 1)
    assert rates.resolution(unresolved).value == 0.0


def test_an_empty_period_has_one_group_with_null_rates_not_zero() -> None:
    (group,) = summary([])
    assert group.incidents == 0
    assert [group.response_rate.value, group.resolution_rate.value] == [None, None]
    assert group.satisfaction_rate.value is None
    assert group.stage_seconds["acknowledge"] == Spread(0, None, None)


def test_an_unanswered_report_counts_against_the_response_rate_only_once_late() -> None:
    ack_started = NOW - timedelta(seconds=ACK_LIMIT)
    at_deadline = Facts(QY, "alley", None, "reported", T0, stages(None, ack_started=ack_started))
    assert rates.response([at_deadline], NOW) == Ratio(0, 0)
    assert rates.response([at_deadline], NOW + timedelta(microseconds=1)) == Ratio(0, 1)


def test_an_answer_exactly_at_the_deadline_is_in_time() -> None:
    answered = Facts(QY, "alley", None, "accepted", T0, stages(ACK_LIMIT))
    assert rates.response([answered], NOW) == Ratio(1, 1)


def test_by_day_uses_the_local_day_of_the_report() -> None:
    last_second = datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai
    first_second = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # 00:00 the next day
    facts = [
        Facts(QY, "alley", None, "reported", last_second),
        Facts(QY, "alley", None, "reported", first_second),
    ]
    assert [g.key["day"] for g in summary(facts, group_by="day")] == ["2026-11-20", "2026-11-21"]
    assert [g.key["month"] for g in summary(facts, group_by="month")] == ["2026-11"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([7.0], 7.0), ([1.0, 2.0], 2.0), ([5.0, 1.0, 3.0], 5.0),
     ([float(v) for v in range(1, 11)], 9.0), ([float(v) for v in range(1, 21)], 18.0)],
)  # fmt: skip
def test_p90_is_the_nearest_rank(values: list[float], expected: float) -> None:
    assert rates.nearest_rank(values, 90) == expected


def test_a_period_is_whole_local_days_both_ends_included() -> None:
    november = rates.period(date(2026, 11, 1), date(2026, 11, 30), today=NOW.date(), tz=SHANGHAI)
    assert november.bounds() == (
        datetime(2026, 10, 31, 16, 0, tzinfo=UTC),
        datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
    )


def test_the_default_period_is_the_thirty_days_ending_today() -> None:
    default = rates.period(None, None, today=date(2026, 11, 23), tz=SHANGHAI)
    assert (default.first, default.last) == (date(2026, 10, 25), date(2026, 11, 23))


def test_a_reversed_or_overlong_period_is_refused() -> None:
    with pytest.raises(rates.InvalidPeriod):
        rates.period(date(2026, 11, 2), date(2026, 11, 1), today=NOW.date(), tz=SHANGHAI)
    with pytest.raises(rates.InvalidPeriod):
        rates.period(date(2025, 1, 1), date(2026, 11, 1), today=NOW.date(), tz=SHANGHAI)


def test_admins_and_auditors_read_every_community() -> None:
    assert rates.readable_communities(frozenset({"auditor"}), (), None) is None
    assert rates.readable_communities(frozenset({"admin"}), (), QY) == (QY,)


def test_community_staff_read_their_own_communities_only() -> None:
    staff = frozenset({"community_staff"})
    assert rates.readable_communities(staff, (QY, LS), None) == (QY, LS)
    assert rates.readable_communities(staff, (QY,), QY) == (QY,)
    with pytest.raises(rates.NotAllowed):
        rates.readable_communities(staff, (QY,), LS)


@pytest.mark.parametrize("role", ["resident", "grid_worker", "department", "bureau"])
def test_other_roles_do_not_read_the_rates(role: str) -> None:
    with pytest.raises(rates.NotAllowed):
        rates.readable_communities(frozenset({role}), (QY,), None)
