"""The three public rates (响应率、解决率、满意率) and the time each clock took.

Plain Python: the store fetches a few fields of the incidents of a period
(``Facts``) and this module does all the counting, so the definitions below
are the code and the unit tests check them on a hand-computed fixture.
``docs/rates.md`` states the same definitions for readers.

**Cohort.** A period is a range of whole local days (``first`` to ``last``,
both included) in the policy calendar's zone (Asia/Shanghai). An incident
belongs to the period of the local day it was *reported*; its later steps
count there too, so every incident counts in exactly one period and a
period's figures settle as its incidents are closed. Rejected reports
belong to the cohort like any other.

**Response rate (响应率)**, 接诉即办 and 件件有回应 read as "every report is
answered, in time": among the cohort's incidents whose acknowledge clock has
an outcome, the share answered by its deadline.

- numerator: the acknowledge clock stopped (the report was accepted,
  rejected or merged into the case it repeats, each an answer to the
  reporter) at or before its deadline;
- denominator: the acknowledge clock stopped, or is still running past its
  deadline. An unanswered report counts against the rate as soon as it is
  late; one still within its limit is pending and counts nowhere yet.

**Resolution rate (解决率)**: closed_resolved / (closed_resolved +
closed_unresolved), by each incident's current state. "Closed but not
resolved" is in the denominator only, so closing a case cannot inflate the
rate; a reopened case counts nowhere until it is closed again; open,
rejected and merged incidents count nowhere.

**Satisfaction rate (满意率)**: incidents whose latest rating is 4 or 5 /
incidents with at least one rating. One voice per incident: a case rated,
reopened, closed and rated again counts once, with the rating of its latest
closure. Unrated incidents count nowhere (they are not taken as satisfied).

**Stage times**: for each clock (acknowledge, dispatch, sign_for, resolve,
feedback), the seconds from its start to its stop, over the cohort's
incidents whose clock has stopped (a running clock has no duration yet). It
is the time the clock measured: the resolve clock keeps running through 退回
and re-dispatch; a clock restarted after a reopen counts its latest run. The
median is the usual one (the mean of the two middle values for an even
count); p90 is by the nearest-rank method: the smallest measured value that
at least 90 % of the values do not exceed, so it is always a time some
incident really took.

A rate whose denominator is zero is ``None`` (no data), never 0 or 100 %.

**Groups**: by community, category, the lead department the case is
dispatched to (``None`` for incidents never dispatched), or the local day or
month of the report.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shequ_services.grid.access import TABLE
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.domain import GridError, ReaderClaims

RESPONSE_CLOCK = "acknowledge"
SATISFIED_SCORES = frozenset({4, 5})
MAX_PERIOD_DAYS = 366
DEFAULT_PERIOD_DAYS = 30
GROUPINGS = ("community", "category", "department", "day", "month")
#: The action of the grid's access table that says who reads the rates.
READ_ACTION = "grid.rates.read"

#: The one-line definitions the API returns beside the figures.
DEFINITIONS = {
    "response_rate": (
        "acknowledge clock stopped (accepted, rejected or merged) by its deadline / "
        "acknowledge clock stopped or past its deadline"
    ),
    "resolution_rate": "closed_resolved / (closed_resolved + closed_unresolved)",
    "satisfaction_rate": "latest rating 4 or 5 / incidents rated",
    "stage_seconds": ("start to stop of each stopped clock; median, and p90 by nearest rank"),
    "cohort": "incidents reported on the period's days (calendar time zone)",
}


class RatesError(GridError):
    pass


class InvalidPeriod(RatesError):
    """The period's days are reversed or the span is too long to count at once."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class NotAllowed(RatesError):
    """The caller may not read the rates, or not those of the community asked for."""


@dataclass(frozen=True)
class Facts:
    """What the rates read of one incident; the store fetches these fields only."""

    community: str
    category: str
    department: str | None
    status: str
    reported_at: datetime
    clocks: Mapping[str, Clock] = field(default_factory=dict)
    score: int | None = None  # the latest rating


@dataclass(frozen=True)
class Period:
    """Whole local days, both ends included."""

    first: date
    last: date
    tz: ZoneInfo

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) in UTC: local midnight of ``first`` to that of the day after ``last``."""
        start = datetime.combine(self.first, time.min, tzinfo=self.tz).astimezone(UTC)
        end = datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=self.tz)
        return start, end.astimezone(UTC)


@dataclass(frozen=True)
class Ratio:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True)
class Spread:
    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class Group:
    key: dict[str, str | None]
    incidents: int
    response_rate: Ratio
    resolution_rate: Ratio
    satisfaction_rate: Ratio
    stage_seconds: dict[str, Spread]


def period(first: date | None, last: date | None, *, today: date, tz: ZoneInfo) -> Period:
    """The period asked for; by default the ``DEFAULT_PERIOD_DAYS`` days ending today."""
    last = last or today
    first = first or last - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if first > last:
        raise InvalidPeriod("from", f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise InvalidPeriod("from", f"a period may span at most {MAX_PERIOD_DAYS} days")
    return Period(first, last, tz)


def readable_communities(
    roles: frozenset[str], own: Sequence[str], asked: str | None
) -> tuple[str, ...] | None:
    """The communities whose rates the caller may read; ``None`` means every one.

    The reach of ``grid.rates.read`` in the grid's access table: admins and
    auditors read every community, community staff their own communities.
    """
    reader = ReaderClaims("", frozenset(roles), tuple(own))
    if not TABLE.permits(reader, READ_ACTION):
        raise NotAllowed(f"the rates are for {TABLE.action(READ_ACTION).describe_roles()}")
    reach = TABLE.reach(reader, READ_ACTION)
    if reach.everything:
        return None if asked is None else (asked,)
    if asked is None:
        return reach.communities
    if asked in reach.communities:
        return (asked,)
    raise NotAllowed(f"community staff read the rates of their own communities, not {asked}")


def response(facts: Iterable[Facts], now: datetime) -> Ratio:
    on_time = decided = 0
    for item in facts:
        clock = item.clocks.get(RESPONSE_CLOCK)
        if clock is None:
            continue
        if clock.stopped_at is not None:
            decided += 1
            on_time += clock.stopped_at <= clock.deadline
        elif now > clock.deadline:
            decided += 1
    return Ratio(on_time, decided)


def resolution(facts: Iterable[Facts]) -> Ratio:
    statuses = [item.status for item in facts]
    resolved = statuses.count("closed_resolved")
    return Ratio(resolved, resolved + statuses.count("closed_unresolved"))


def satisfaction(facts: Iterable[Facts]) -> Ratio:
    scores = [item.score for item in facts if item.score is not None]
    return Ratio(sum(score in SATISFIED_SCORES for score in scores), len(scores))


def nearest_rank(values: Sequence[float], percent: int) -> float:
    """The smallest value with at least ``percent`` % of ``values`` at or below it."""
    ordered = sorted(values)
    rank = (percent * len(ordered) + 99) // 100  # ceil without floating-point error
    return ordered[max(rank, 1) - 1]


def spread(values: Sequence[float]) -> Spread:
    if not values:
        return Spread(0, None, None)
    return Spread(len(values), statistics.median(values), nearest_rank(values, 90))


def stage_seconds(facts: Iterable[Facts], clocks: Sequence[str]) -> dict[str, Spread]:
    """Median and p90 of each clock's measured time, for every clock the policy names."""
    samples: dict[str, list[float]] = {name: [] for name in clocks}
    for item in facts:
        for name, clock in item.clocks.items():
            if name in samples and clock.stopped_at is not None:
                samples[name].append((clock.stopped_at - clock.started).total_seconds())
    return {name: spread(values) for name, values in samples.items()}


def summarise(
    facts: Sequence[Facts],
    *,
    now: datetime,
    clocks: Sequence[str],
    tz: ZoneInfo,
    group_by: str | None = None,
) -> list[Group]:
    """The rates and stage times of ``facts``, as one group or one per ``group_by`` value.

    Without ``group_by`` there is always exactly one group, even an empty one
    (its rates are ``None``); with it, one group per value present, in order
    of the value, incidents with no value (e.g. never dispatched) last.
    """
    if group_by is None:
        return [_group({}, facts, now, clocks)]
    key = _key_function(group_by, tz)
    buckets: dict[str | None, list[Facts]] = {}
    for item in facts:
        buckets.setdefault(key(item), []).append(item)
    ordered = sorted(buckets, key=lambda value: (value is None, value or ""))
    return [_group({group_by: value}, buckets[value], now, clocks) for value in ordered]


def _group(
    key: dict[str, str | None], facts: Sequence[Facts], now: datetime, clocks: Sequence[str]
) -> Group:
    return Group(
        key=key,
        incidents=len(facts),
        response_rate=response(facts, now),
        resolution_rate=resolution(facts),
        satisfaction_rate=satisfaction(facts),
        stage_seconds=stage_seconds(facts, clocks),
    )


def _key_function(group_by: str, tz: ZoneInfo) -> Callable[[Facts], str | None]:
    if group_by == "community":
        return lambda item: item.community
    if group_by == "category":
        return lambda item: item.category
    if group_by == "department":
        return lambda item: item.department
    if group_by == "day":
        return lambda item: item.reported_at.astimezone(tz).date().isoformat()
    if group_by == "month":
        return lambda item: item.reported_at.astimezone(tz).strftime("%Y-%m")
    raise ValueError(f"unknown grouping {group_by!r}; use one of {', '.join(GROUPINGS)}")
