"""Time limits (办理时限) as policy data, counted on a business calendar.

Plain Python: limits are data (``TIER_SETS``) and the calendar is data
(``parse_calendar``), because every year's holiday arrangement (放假调休) and
every district's tier set differ, and neither should need a code change.

All returned datetimes are aware and in UTC, so they store and compare
without knowing the calendar; the calendar's zone only decides which local
day a moment falls on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Seconds and minutes exist for drills and tests; districts use the other three.
Unit = Literal["seconds", "minutes", "hours", "calendar_days", "working_days"]
UNITS: tuple[str, ...] = get_args(Unit)
DEFAULT_TIMEZONE = "Asia/Shanghai"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Limit:
    """An amount of time in one unit; refuses zero and unknown units, both config mistakes."""

    amount: int
    unit: Unit

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unknown limit unit {self.unit!r}; use one of {', '.join(UNITS)}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 1:
            raise ValueError(f"a limit needs a positive whole amount, got {self.amount!r}")


@dataclass(frozen=True)
class BusinessCalendar:
    """Which local days are working days.

    ``makeup_workdays`` are the weekend days made working days by 调休; a date
    cannot be both a holiday and a make-up workday.
    """

    holidays: frozenset[date] = frozenset()
    makeup_workdays: frozenset[date] = frozenset()
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))

    def __post_init__(self) -> None:
        both = self.holidays & self.makeup_workdays
        if both:
            listed = ", ".join(d.isoformat() for d in sorted(both))
            raise ValueError(f"listed both as holiday and as make-up workday: {listed}")

    def is_working_day(self, d: date) -> bool:
        """Mon–Fri unless a holiday; Sat/Sun only when a make-up workday."""
        if d in self.holidays:
            return False
        if d.weekday() < 5:
            return True
        return d in self.makeup_workdays


TIER_SETS: dict[str, dict[str, Limit]] = {
    # 369 工作法: simple, ordinary and complex cases within 3, 6 and 9 working days.
    "369": {
        "simple": Limit(3, "working_days"),
        "ordinary": Limit(6, "working_days"),
        "complex": Limit(9, "working_days"),
    },
    # 12345 hotline practice: urgent and utility cases by the hour, the rest by calendar days.
    "12345": {
        "urgent": Limit(2, "hours"),
        "utilities": Limit(24, "hours"),
        "general": Limit(7, "calendar_days"),
        "complex": Limit(15, "calendar_days"),
    },
}


def add_duration(start: datetime, limit: Limit, calendar: BusinessCalendar) -> datetime:
    """The deadline for ``limit`` counted from ``start``, as an aware UTC datetime.

    - ``seconds``, ``minutes``, ``hours``: elapsed time.
    - ``calendar_days``: the same local clock time ``amount`` days later in the
      calendar's zone; holidays and weekends count. In Asia/Shanghai (no DST)
      this is exactly ``start + amount * 24 hours``.
    - ``working_days``: take the local date of ``start`` in the calendar's zone,
      count ``amount`` working days beginning with the day after it, and the
      deadline is the end of the last one (23:59:59.999999 local). The start
      day itself never counts, whatever the hour, so a case reported at 08:00
      and one reported at 23:30 on the same day share a deadline.

    ``start`` must be aware: a naive time is ambiguous across zones.
    """
    _require_aware(start, "start")
    if limit.unit in ("seconds", "minutes", "hours"):
        return start.astimezone(UTC) + timedelta(**{limit.unit: limit.amount})
    local = start.astimezone(calendar.tz)
    if limit.unit == "calendar_days":
        return (local + timedelta(days=limit.amount)).astimezone(UTC)
    day = local.date()
    counted = 0
    while counted < limit.amount:
        day += timedelta(days=1)
        if calendar.is_working_day(day):
            counted += 1
    return datetime.combine(day, time.max, tzinfo=calendar.tz).astimezone(UTC)


def extend(deadline: datetime, extension: Limit, calendar: BusinessCalendar) -> datetime:
    """An approved extension (延期) counts from the old deadline, not from the request."""
    return add_duration(deadline, extension, calendar)


def status(
    deadline: datetime, started: datetime, now: datetime, warn_fraction: float = 0.8
) -> Literal["running", "warned", "overdue"]:
    """Where a clock stands at ``now``.

    ``overdue`` only after the deadline: the deadline itself is the last
    allowed instant (a working-day deadline is the last microsecond of the
    day). ``warned`` once elapsed time reaches ``warn_fraction`` of the total,
    so the handler hears of it while something can still be done.
    """
    for name, value in (("deadline", deadline), ("started", started), ("now", now)):
        _require_aware(value, name)
    if deadline <= started:
        raise ValueError("the deadline must be after the start")
    if not 0 < warn_fraction <= 1:
        raise ValueError(f"warn_fraction must be in (0, 1], got {warn_fraction}")
    if now > deadline:
        return "overdue"
    if now - started >= (deadline - started) * warn_fraction:
        return "warned"
    return "running"


@dataclass(frozen=True)
class ClockState:
    """One running time limit on an incident, with the extensions granted so far."""

    started: datetime
    deadline: datetime
    limit: Limit
    extensions: tuple[Limit, ...] = ()
    warn_fraction: float = 0.8

    @classmethod
    def start(
        cls,
        started: datetime,
        limit: Limit,
        calendar: BusinessCalendar,
        warn_fraction: float = 0.8,
    ) -> ClockState:
        """Start a clock now so the deadline is fixed once, with the calendar of that day."""
        return cls(
            started=started.astimezone(UTC),
            deadline=add_duration(started, limit, calendar),
            limit=limit,
            warn_fraction=warn_fraction,
        )

    def status(self, now: datetime) -> Literal["running", "warned", "overdue"]:
        """The clock's state at ``now``; see the module function ``status``."""
        return status(self.deadline, self.started, now, self.warn_fraction)

    def extended(self, extension: Limit, calendar: BusinessCalendar) -> ClockState:
        """A new state with the deadline moved; the start stays, so the warning re-scales."""
        return replace(
            self,
            deadline=extend(self.deadline, extension, calendar),
            extensions=(*self.extensions, extension),
        )


def parse_calendar(raw: dict[str, Any]) -> BusinessCalendar:
    """Build a calendar from configuration data, saying exactly which entry is wrong.

    ``{"timezone": "Asia/Shanghai", "holidays": [...], "makeup_workdays": [...]}``;
    the timezone defaults to Asia/Shanghai. Dates are ``YYYY-MM-DD`` strings or
    ``date`` values (YAML reads unquoted dates as dates). A make-up workday
    must fall on a weekend: a weekday one is almost always a typo.
    """
    unknown = set(raw) - {"timezone", "holidays", "makeup_workdays"}
    if unknown:
        raise ValueError(f"unknown calendar keys: {', '.join(sorted(unknown))}")
    tz_name = raw.get("timezone", DEFAULT_TIMEZONE)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown timezone {tz_name!r}") from exc
    holidays = _parse_dates(raw, "holidays")
    makeup = _parse_dates(raw, "makeup_workdays")
    for d in sorted(makeup):
        if d.weekday() < 5:
            raise ValueError(f"makeup_workdays: {d.isoformat()} is a {d:%A}, already a working day")
    return BusinessCalendar(holidays=holidays, makeup_workdays=makeup, tz=tz)


def _parse_dates(raw: dict[str, Any], key: str) -> frozenset[date]:
    """Parse one date list, naming the key and position of a bad entry."""
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list of dates")
    parsed = set()
    for index, item in enumerate(items):
        if isinstance(item, date) and not isinstance(item, datetime):
            parsed.add(item)
            continue
        if isinstance(item, str) and _ISO_DATE.fullmatch(item):
            try:
                parsed.add(date.fromisoformat(item))
                continue
            except ValueError:
                pass
        raise ValueError(f"{key}[{index}]: {item!r} is not a date (use YYYY-MM-DD)")
    return frozenset(parsed)


def _require_aware(value: datetime, name: str) -> None:
    """Naive datetimes would silently mean the server's zone; refuse them."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
