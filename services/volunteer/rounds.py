"""The monthly rounds (六必访): one visit task per household on a care list, per month.

Months are local (Asia/Shanghai by default): a visit due "in November" is due
by the end of November 30th in the community's time, not UTC's.

Generation is a pure function of the households and the month; the task id is
derived from (household, month), and the store keeps a unique index on the
pair, so any number of replicas running the timer any number of times create
one task each. The timer runs all month, not only on the 1st: a household put
on a care list on the 12th is visited that month too, and a service that was
down on the 1st catches up when it comes back.

A household that moves to another cell mid-month keeps its one task for the
month: if nobody has accepted it yet it moves with the household and is
offered to the new cell's volunteers (``domain.retarget``); if a volunteer
has accepted it, it stays with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shequ_services.volunteer.domain import KIND_SKILLS, OPEN, Task

#: The six groups visited every month, with their Chinese names.
CARE_LISTS = {
    "needy": "困难家庭",
    "elderly_alone": "独居老人",
    "disabled": "残疾人家庭",
    "floating": "流动人口",
    "veteran_member": "老党员",
    "assistance": "帮扶对象",
}
ROUND_KIND = "round_visit"
DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class Household:
    """A household on one or more care lists. Its address stays in the registry, not here."""

    id: str
    community: str
    grid_cell: str
    care_lists: tuple[str, ...]
    active: bool = True


def month_of(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m")


def month_end(month: str, tz: ZoneInfo) -> datetime:
    """The first instant after ``month`` (YYYY-MM) ends, local midnight, in UTC."""
    year, number = (int(part) for part in month.split("-"))
    first_next = date(year + number // 12, number % 12 + 1, 1)
    return datetime.combine(first_next, time.min, tzinfo=tz).astimezone(UTC)


def month_start(month: str, tz: ZoneInfo) -> datetime:
    year, number = (int(part) for part in month.split("-"))
    return datetime.combine(date(year, number, 1), time.min, tzinfo=tz).astimezone(UTC)


def round_task_id(household_id: str, month: str) -> str:
    return f"VT-R{month.replace('-', '')}-{household_id}"


def round_tasks(
    households: Iterable[Household], month: str, *, now: datetime, tz: ZoneInfo
) -> list[Task]:
    """One visit task for each active household on a care list, due when the month ends."""
    due = month_end(month, tz) - timedelta(microseconds=1)
    return [
        Task(
            id=round_task_id(household.id, month),
            incident_id=None,
            kind=ROUND_KIND,
            community=household.community,
            grid_cell=household.grid_cell,
            status=OPEN,
            created_at=now,
            source="round",
            skills=KIND_SKILLS[ROUND_KIND],
            household_id=household.id,
            round_month=month,
            due_at=due,
        )
        for household in households
        if household.active and household.care_lists
    ]
