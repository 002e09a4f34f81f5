"""The monthly rounds: one visit per household per month, due at the local month's end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shequ_services.volunteer import domain, rounds
from shequ_services.volunteer.rounds import Household

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # already 1 December in Shanghai
HOUSEHOLDS = [
    Household("hh-1", "c1", "a", ("elderly_alone",)),
    Household("hh-2", "c1", "b", ("needy", "disabled")),
    Household("hh-3", "c1", "b", ()),
    Household("hh-4", "c1", "a", ("floating",), active=False),
]


def test_the_month_is_the_local_one() -> None:
    assert rounds.month_of(NOW, TZ) == "2026-12"


def test_one_visit_task_per_listed_active_household_due_at_the_local_month_end() -> None:
    tasks = rounds.round_tasks(HOUSEHOLDS, "2026-12", now=NOW, tz=TZ)
    assert [(t.household_id, t.grid_cell) for t in tasks] == [("hh-1", "a"), ("hh-2", "b")]
    end = datetime(2027, 1, 1, tzinfo=TZ)
    assert all(t.due_at is not None and t.due_at < end <= t.due_at + timedelta(seconds=1)
               for t in tasks)  # fmt: skip
    assert {t.source for t in tasks} == {"round"} and {t.round_month for t in tasks} == {"2026-12"}


def test_generating_twice_gives_the_same_task_ids() -> None:
    first = rounds.round_tasks(HOUSEHOLDS, "2026-12", now=NOW, tz=TZ)
    again = rounds.round_tasks(HOUSEHOLDS, "2026-12", now=NOW + timedelta(hours=5), tz=TZ)
    assert [t.id for t in first] == [t.id for t in again] == ["VT-R202612-hh-1", "VT-R202612-hh-2"]


def test_an_untaken_visit_follows_a_household_that_moves_and_a_taken_one_stays() -> None:
    (visit, *_) = rounds.round_tasks(HOUSEHOLDS, "2026-12", now=NOW, tz=TZ)
    moved = domain.retarget(visit, "b", NOW)
    assert moved is not None and moved.grid_cell == "b" and moved.status == "open"
    taken = domain.assign(visit, "v1", NOW)[0]
    assert domain.retarget(taken, "b", NOW) is None


def test_month_bounds_cross_the_year() -> None:
    assert rounds.month_start("2026-12", TZ) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert rounds.month_end("2026-12", TZ) == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
