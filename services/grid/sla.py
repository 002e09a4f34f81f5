"""The ops SLA board (``/sla/``): what staff on duty read, built without I/O.

The board lists the open incidents a member of staff may see by their next
deadline, overdue first, with counts per community and department and small
charts of the last 30 days. This module holds everything that is not a
query: who may read the board, the order of the list, how long is left in
words, the counts, the daily series and their SVG charts, and the page
templates. It imports no nameko or pymongo, so all of it is unit-tested.

Nothing personal is shown: a row carries the incident's id, category,
community, department, state and clock, never its reporter, description,
location or the Open311 contact fields. Rows are built from ``SlaRecord``,
which has no field for any of those, so a template cannot show them by
mistake. The rates are ``rates.py``'s own functions; this module only
groups the incidents by day before calling them.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from shequ_services.grid import rates
from shequ_services.grid.access import TABLE
from shequ_services.grid.deadlines import CO_HANDLING, Clock
from shequ_services.grid.domain import Grant, Reader, read_grants

PREFIX = "/sla"
PAGE_SIZE = 50
#: Page numbers beyond this are refused: nobody reads the 10,000th most urgent case,
#: and a deep ``skip`` costs the database a walk over everything before it.
MAX_PAGE = 200
CHART_DAYS = 30
DUE_SOON = timedelta(hours=24)
DEFAULT_REFRESH_SECONDS = 60
DEFAULT_CHART_SECONDS = 300
#: Who reads the board: the roles with a rule for ``grid.sla.read`` in the grid's access table.
READER_ROLES = frozenset(TABLE.action("grid.sla.read").roles())
#: ``domain.REACHES`` a board reader may see through; "own" (what the caller reported) is
#: left out, so a member of staff who once reported elsewhere sees only their scope.
BOARD_REACHES = frozenset({"community", "department", "subtasks.department"})

CLOCK_LABELS: Mapping[str, str] = {
    "acknowledge": "受理",
    "dispatch": "派遣",
    "sign_for": "签收",
    "resolve": "办结",
    "feedback": "核查反馈",
    CO_HANDLING: "协办",
}
STATUS_LABELS: Mapping[str, str] = {
    "reported": "待受理",
    "accepted": "已受理",
    "rejected": "不予受理",
    "dispatched": "已派遣",
    "in_progress": "办理中",
    "handled": "已办结待核查",
    "closed_resolved": "已解决结案",
    "closed_unresolved": "未解决结案",
    "reopened": "重新办理",
    "deferred": "挂账",
    "merged": "已合并",
}
NO_DEPARTMENT = "（未派遣）"


class NotAReader(Exception):
    """The caller's roles do not include one that reads the board."""


def board_grants(reader: Reader) -> list[Grant]:
    """The read grants a board reader sees incidents through (``domain.read_grants``).

    The same table as grid's listing, minus the reporter's own reach: a
    community's staff see their communities, a department its incidents
    and co-handled sub-tasks, admins and auditors every incident; sensitive
    categories are hidden, redacted or shown exactly as the listing does.
    """
    if not reader.roles & READER_ROLES:
        raise NotAReader(
            "the SLA board is for community staff, grid workers, departments, auditors and admins"
        )
    return [grant for grant in read_grants(reader) if grant.field in BOARD_REACHES | {None}]


# ---------------------------------------------------------------- the list


@dataclass(frozen=True)
class SlaRecord:
    """What the board reads of one incident; the store projects these fields only."""

    id: str
    category: str
    community: str
    department: str | None
    status: str
    reported_at: datetime
    clocks: Mapping[str, Clock] = field(default_factory=dict)
    co_departments: tuple[str, ...] = ()


def next_clock(clocks: Mapping[str, Clock]) -> tuple[str, Clock] | None:
    """The running clock whose deadline comes first, by key; ``None`` if none runs."""
    running = [(clock.deadline, key, clock) for key, clock in clocks.items() if clock.running]
    if not running:
        return None
    _, key, clock = min(running, key=lambda item: (item[0], item[1]))
    return key, clock


def urgency_key(record: SlaRecord) -> tuple[int, datetime, str]:
    """The board's order: by the next deadline, earliest (most overdue) first, then by id.

    An overdue deadline is earlier than any still to come, so "overdue first,
    then by time remaining" is one ascending sort. An open incident with no
    running clock (a policy without a clock for its state) has nothing due
    and goes last.
    """
    found = next_clock(record.clocks)
    if found is None:
        return (1, datetime.max.replace(tzinfo=UTC), record.id)
    return (0, found[1].deadline, record.id)


def order(records: Iterable[SlaRecord]) -> list[SlaRecord]:
    return sorted(records, key=urgency_key)


def duration_text(span: timedelta) -> str:
    """A span in words, its two largest units: 2天3小时, 5小时12分钟, 8分钟, 不到1分钟.

    Rounded down, so "1小时" is never shown for 59 minutes 59 seconds and an
    operator is not told there is more time than there is.
    """
    minutes = int(abs(span).total_seconds() // 60)
    if minutes < 1:
        return "不到1分钟"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "天"), (hours, "小时"), (minutes, "分钟")]
    first = next(index for index, (amount, _) in enumerate(parts) if amount)
    shown = [f"{amount}{unit}" for amount, unit in parts[first : first + 2] if amount]
    return "".join(shown)


def remaining_text(deadline: datetime, now: datetime) -> str:
    """剩余 2天3小时 while time is left; 已超时 5小时12分钟 once the deadline passed."""
    if deadline < now:
        return f"已超时 {duration_text(now - deadline)}"
    return f"剩余 {duration_text(deadline - now)}"


def local_time(moment: datetime, tz: ZoneInfo) -> str:
    """A moment as staff read it: the calendar's zone (Beijing time), to the minute."""
    if moment.tzinfo is None:  # the store may hand back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def clock_label(key: str) -> str:
    """``resolve`` → 办结; a co-handler's ``co_handling:health`` → 协办（health）."""
    name, _, department = key.partition(":")
    label = CLOCK_LABELS.get(name, name)
    return f"{label}（{department}）" if department else label


@dataclass(frozen=True)
class Row:
    """One line of the board: no field here can hold personal data."""

    id: str
    category: str
    category_label: str
    sensitive: bool
    community: str
    community_label: str
    department_label: str
    status_label: str
    clock_label: str
    deadline: str
    deadline_iso: str
    remaining: str
    overdue: bool
    due_soon: bool


@dataclass(frozen=True)
class Labels:
    """Names to show for codes; a code without a name is shown as it is."""

    categories: Mapping[str, str] = field(default_factory=dict)
    communities: Mapping[str, str] = field(default_factory=dict)
    departments: Mapping[str, str] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()

    def department(self, code: str | None) -> str:
        return NO_DEPARTMENT if code is None else self.departments.get(code, code)


def row(record: SlaRecord, *, now: datetime, labels: Labels, tz: ZoneInfo) -> Row:
    found = next_clock(record.clocks)
    key, clock = found if found is not None else ("", None)
    if clock is not None and clock.department:
        department = labels.department(clock.department)
        clock_name = f"{CLOCK_LABELS.get(CO_HANDLING)}（{department}）"
    else:
        clock_name = clock_label(key) if key else "—"
    deadline = clock.deadline if clock is not None else None
    return Row(
        id=record.id,
        category=record.category,
        category_label=labels.categories.get(record.category, record.category),
        sensitive=record.category in labels.sensitive,
        community=record.community,
        community_label=labels.communities.get(record.community, record.community),
        department_label=labels.department(record.department),
        status_label=STATUS_LABELS.get(record.status, record.status),
        clock_label=clock_name,
        deadline=local_time(deadline, tz) if deadline else "—",
        deadline_iso=_iso(deadline) if deadline else "",
        remaining=remaining_text(deadline, now) if deadline else "无进行中的时限",
        overdue=deadline is not None and deadline < now,
        due_soon=deadline is not None and now <= deadline < now + DUE_SOON,
    )


# ---------------------------------------------------------------- counts


@dataclass(frozen=True)
class Tally:
    """Open incidents of one community or department: all, overdue, due within 24 hours."""

    key: str | None
    label: str
    open: int = 0
    overdue: int = 0
    due_soon: int = 0


@dataclass(frozen=True)
class Cell:
    """Counts of one (community, department) pair, as the store's aggregation returns them."""

    community: str
    department: str | None
    open: int
    overdue: int
    due_soon: int


def tallies(cells: Iterable[Cell], by: str, labels: Labels) -> list[Tally]:
    """Counts per community (``by="community"``) or per department, most overdue first.

    Ties go by open count, then by label, so the table does not reshuffle
    between refreshes when nothing changed.
    """
    sums: dict[str | None, list[int]] = {}
    for cell in cells:
        key = cell.community if by == "community" else cell.department
        total = sums.setdefault(key, [0, 0, 0])
        total[0] += cell.open
        total[1] += cell.overdue
        total[2] += cell.due_soon
    named = labels.communities.get if by == "community" else None
    found = [
        Tally(
            key=key,
            label=(named(key, key) if named and key else labels.department(key)),
            open=counts[0],
            overdue=counts[1],
            due_soon=counts[2],
        )
        for key, counts in sums.items()
    ]
    return sorted(found, key=lambda t: (-t.overdue, -t.open, t.label))


def total_of(cells: Iterable[Cell], filters: Mapping[str, str]) -> int:
    """How many open incidents the list shows under ``filters``, from the unfiltered counts.

    The filters are equalities on the same two fields the counts are grouped
    by, so the list's length needs no query of its own.
    """
    return sum(
        cell.open
        for cell in cells
        if filters.get("community") in (None, cell.community)
        and filters.get("department") in (None, cell.department)
    )


# ---------------------------------------------------------------- the last 30 days


@dataclass(frozen=True)
class HistoryRecord:
    """What the charts read of one incident: ``rates.Facts`` and when it was closed."""

    facts: rates.Facts
    closures: tuple[datetime, ...] = ()


def window(today: date, days: int, tz: ZoneInfo) -> tuple[list[date], datetime, datetime]:
    """The ``days`` local days ending ``today`` and their bounds [start, end) in UTC."""
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time.min, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    return [first + timedelta(days=n) for n in range(days)], start, end


@dataclass(frozen=True)
class Series:
    """Daily figures of the window, one value per day in ``days`` order."""

    days: tuple[date, ...]
    reported: tuple[int, ...]
    closed: tuple[int, ...]
    overdue: tuple[int, ...]
    response_rate: tuple[float | None, ...]
    resolution_rate: tuple[float | None, ...]
    satisfaction_rate: tuple[float | None, ...]
    rate_counts: tuple[tuple[rates.Ratio, rates.Ratio, rates.Ratio], ...]


def overdue_at(clocks: Mapping[str, Clock], moment: datetime) -> bool:
    """Whether some clock had started, passed its deadline and not yet stopped at ``moment``.

    Read from the clocks as they stand: a deadline moved by an extension
    counts from its new date, and a clock restarted after a reopen shows
    only its latest run, so an earlier day's figure can drop afterwards.
    """
    return any(
        clock.started <= moment
        and clock.deadline < moment
        and (clock.stopped_at is None or clock.stopped_at > moment)
        for clock in clocks.values()
    )


def series(
    history: Sequence[HistoryRecord],
    *,
    days: Sequence[date],
    now: datetime,
    tz: ZoneInfo,
    clocks: Sequence[str],
) -> Series:
    """The daily figures the charts draw.

    * reported: incidents reported that local day;
    * closed: closures (to closed_resolved or closed_unresolved) that day; a
      case closed, reopened and closed again counts each time;
    * overdue: incidents with a clock past its deadline at the end of the
      day (at ``now`` for today);
    * the three rates of the incidents reported that day, by
      ``rates.summarise`` grouped by day: the API's own definitions, the
      cohort of the day's reports, as ``GET /api/v1/grid/rates?group_by=day``.
    """
    index = {day: n for n, day in enumerate(days)}
    reported = [0] * len(days)
    closed = [0] * len(days)
    for item in history:
        day = item.facts.reported_at.astimezone(tz).date()
        if day in index:
            reported[index[day]] += 1
        for closure in item.closures:
            closing_day = closure.astimezone(tz).date()
            if closing_day in index:
                closed[index[closing_day]] += 1
    ends = [
        min(now, datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)) for day in days
    ]
    overdue = [sum(overdue_at(item.facts.clocks, end) for item in history) for end in ends]
    cohort = [
        item.facts for item in history if item.facts.reported_at.astimezone(tz).date() in index
    ]
    groups = {
        group.key["day"]: group
        for group in rates.summarise(cohort, now=now, clocks=clocks, tz=tz, group_by="day")
    }
    empty = rates.Ratio(0, 0)
    counts = []
    for day in days:
        group = groups.get(day.isoformat())
        if group is None:
            counts.append((empty, empty, empty))
        else:
            counts.append((group.response_rate, group.resolution_rate, group.satisfaction_rate))
    return Series(
        days=tuple(days),
        reported=tuple(reported),
        closed=tuple(closed),
        overdue=tuple(overdue),
        response_rate=tuple(c[0].value for c in counts),
        resolution_rate=tuple(c[1].value for c in counts),
        satisfaction_rate=tuple(c[2].value for c in counts),
        rate_counts=tuple(counts),
    )


class Recent:
    """Values computed at most once per ``seconds`` per key, in this process.

    The charts of the last 30 days change slowly but cost the most to build
    (they read every incident alive in the window), while the page reloads
    every minute for every reader on duty; readers with the same scope and
    filters share one computation per interval. ``seconds <= 0`` keeps
    nothing. At most ``size`` keys are kept, the oldest dropped first.
    """

    def __init__(self, seconds: float, size: int = 256) -> None:
        self.seconds = seconds
        self.size = size
        self._kept: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, now: float, compute: Callable[[], Any]) -> Any:
        if self.seconds <= 0:
            return compute()
        found = self._kept.get(key)
        if found is not None and now - found[0] < self.seconds:
            return found[1]
        value = compute()
        self._kept.pop(key, None)
        self._kept[key] = (now, value)
        while len(self._kept) > self.size:
            del self._kept[next(iter(self._kept))]
        return value


# ---------------------------------------------------------------- SVG charts

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH, HEIGHT = 620, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 20, 28


@dataclass(frozen=True)
class Chart:
    """A small chart and its numbers as a table (the same figures, readable without sight)."""

    chart_id: str
    title: str
    svg: Markup
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def nice_ceiling(value: float) -> int:
    """The axis top for ``value``: 1, 2 or 5 times a power of ten, at least 1."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover (the loop always returns)


def _frame(chart_id: str, title: str, description: str, top: float, unit: str) -> ET.Element:
    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "role": "img",
            "class": "chart",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "width": str(WIDTH),
            "height": str(HEIGHT),
            "aria-labelledby": f"{chart_id}-title {chart_id}-desc",
        },
    )
    ET.SubElement(svg, "title", {"id": f"{chart_id}-title"}).text = title
    ET.SubElement(svg, "desc", {"id": f"{chart_id}-desc"}).text = description
    bottom = HEIGHT - BOTTOM
    for fraction in (0, 0.5, 1):
        y = bottom - fraction * (bottom - TOP)
        ET.SubElement(
            svg,
            "line",
            {"x1": str(LEFT), "x2": str(WIDTH - RIGHT), "y1": f"{y:.1f}", "y2": f"{y:.1f}",
             "class": "chart-grid"},
        )  # fmt: skip
        label = ET.SubElement(
            svg, "text",
            {"x": str(LEFT - 4), "y": f"{y + 4:.1f}", "text-anchor": "end", "class": "chart-axis"},
        )  # fmt: skip
        amount = top * fraction
        label.text = f"{amount:g}{unit}"
    return svg


def _x(position: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + span * (position + 0.5) / max(count, 1)


def _y(value: float, top: float) -> float:
    bottom = HEIGHT - BOTTOM
    return bottom - (value / top if top else 0) * (bottom - TOP)


def _legend(svg: ET.Element, named: Sequence[tuple[str, str]]) -> None:
    """A key of (label, css class) pairs along the top right, for charts of several series."""
    x = WIDTH - RIGHT - 70 * len(named)
    for label, css in named:
        ET.SubElement(
            svg, "rect", {"x": str(x), "y": "2", "width": "10", "height": "10", "class": css}
        )
        text = ET.SubElement(svg, "text", {"x": str(x + 14), "y": "11", "class": "chart-axis"})
        text.text = label
        x += 70


def _day_ticks(svg: ET.Element, days: Sequence[date]) -> None:
    """The first, middle and last day under the axis, as M/D."""
    if not days:
        return
    for position in sorted({0, len(days) // 2, len(days) - 1}):
        tick = ET.SubElement(
            svg, "text",
            {"x": f"{_x(position, len(days)):.1f}", "y": str(HEIGHT - 8),
             "text-anchor": "middle", "class": "chart-axis"},
        )  # fmt: skip
        tick.text = f"{days[position].month}/{days[position].day}"


def bars_chart(
    days: Sequence[date],
    named: Sequence[tuple[str, str, Sequence[int]]],
    *,
    chart_id: str,
    title: str,
) -> Chart:
    """Side-by-side daily bars of one or more counts: ``named`` is (label, css class, values)."""
    top = nice_ceiling(max((v for _, _, values in named for v in values), default=0))
    totals = "；".join(f"{label}共{sum(values)}件" for label, _, values in named)
    svg = _frame(chart_id, title, f"最近{len(days)}天每天的件数。{totals}。", top, "")
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    width = max(slot * 0.8 / max(len(named), 1), 1.0)
    for position in range(len(days)):
        for offset, (label, css, values) in enumerate(named):
            value = values[position]
            x = _x(position, len(days)) - slot * 0.4 + offset * width
            y = _y(value, top)
            bar = ET.SubElement(
                svg, "rect",
                {"x": f"{x:.1f}", "y": f"{y:.1f}", "width": f"{width:.1f}",
                 "height": f"{HEIGHT - BOTTOM - y:.1f}", "class": css},
            )  # fmt: skip
            ET.SubElement(bar, "title").text = f"{_day_label(days[position])} {label} {value}"
    if len(named) > 1:
        _legend(svg, [(label, css) for label, css, _ in named])
    _day_ticks(svg, days)
    return Chart(
        chart_id=chart_id,
        title=title,
        svg=Markup(ET.tostring(svg, encoding="unicode")),  # noqa: S704 (ElementTree escaped it)
        columns=("日期", *(label for label, _, _ in named)),
        rows=tuple(
            (_day_label(day), *(str(values[n]) for _, _, values in named))
            for n, day in enumerate(days)
        ),
    )


def rates_chart(series: Series, *, chart_id: str = "rates", title: str = "三项比率") -> Chart:
    """The three rates per day as lines on 0–100 %; a day without data breaks the line."""
    named = (
        ("响应率", "chart-line-response", series.response_rate, 0),
        ("解决率", "chart-line-resolution", series.resolution_rate, 1),
        ("满意率", "chart-line-satisfaction", series.satisfaction_rate, 2),
    )
    description = "；".join(
        f"{label}：{_overall(series.rate_counts, n)}" for label, _, _, n in named
    )
    svg = _frame(
        chart_id, title, f"最近{len(series.days)}天每天报告的事项的三项比率。{description}。",
        100, "%",
    )  # fmt: skip
    count = len(series.days)
    for _, css, values, _ in named:
        runs: list[list[tuple[float, float]]] = [[]]
        for position, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            runs[-1].append((_x(position, count), _y(value * 100, 100)))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                ET.SubElement(svg, "polyline", {"points": points, "class": css})
            for x, y in run:
                ET.SubElement(
                    svg, "circle", {"cx": f"{x:.1f}", "cy": f"{y:.1f}", "r": "2.5", "class": css}
                )
    _legend(svg, [(label, css) for label, css, _, _ in named])
    _day_ticks(svg, series.days)
    return Chart(
        chart_id=chart_id,
        title=title,
        svg=Markup(ET.tostring(svg, encoding="unicode")),  # noqa: S704 (ElementTree escaped it)
        columns=("日期", "响应率", "解决率", "满意率"),
        rows=tuple(
            (_day_label(day), *(ratio_text(ratio) for ratio in series.rate_counts[n]))
            for n, day in enumerate(series.days)
        ),
    )


def ratio_text(ratio: rates.Ratio) -> str:
    """``Ratio(4, 5)`` → 80.0%（4/5）; a zero denominator → 无数据, never 0 %."""
    if ratio.value is None:
        return "无数据"
    return f"{ratio.value * 100:.1f}%（{ratio.numerator}/{ratio.denominator}）"


def _overall(counts: Sequence[tuple[rates.Ratio, ...]], which: int) -> str:
    numerator = sum(day[which].numerator for day in counts)
    denominator = sum(day[which].denominator for day in counts)
    return ratio_text(rates.Ratio(numerator, denominator))


def _day_label(day: date) -> str:
    return f"{day.month}月{day.day}日"


def charts(series: Series) -> tuple[Chart, ...]:
    return (
        bars_chart(
            series.days,
            [
                ("报告", "chart-bar-reported", series.reported),
                ("结案", "chart-bar-closed", series.closed),
            ],
            chart_id="flow",
            title="每日报告与结案",
        ),  # fmt: skip
        bars_chart(
            series.days,
            [("超时", "chart-bar-overdue", series.overdue)],
            chart_id="overdue",
            title="每日超时事项数（日终）",
        ),
        rates_chart(series),
    )


# ---------------------------------------------------------------- filters and pages


@dataclass(frozen=True)
class Filters:
    """The board's filters as the GET form sends them; empty means every one in scope."""

    community: str = ""
    department: str = ""

    def query(self, **extra: Any) -> str:
        pairs = {"community": self.community, "department": self.department, **extra}
        kept = {key: value for key, value in pairs.items() if value not in ("", None, 1)}
        return f"?{urlencode(kept)}" if kept else ""

    def url(self, **extra: Any) -> str:
        return f"{PREFIX}/{self.query(**extra)}"


@dataclass(frozen=True)
class Pager:
    page: int
    pages: int
    first: int
    last: int
    total: int
    previous_url: str | None
    next_url: str | None


def pager(filters: Filters, *, page: int, total: int, size: int = PAGE_SIZE) -> Pager:
    """Numbered pages of the ordered list, at most ``MAX_PAGE`` of them."""
    pages = min(max(math.ceil(total / size), 1), MAX_PAGE)
    first = (page - 1) * size + 1 if total else 0
    last = min(page * size, total)
    return Pager(
        page=page,
        pages=pages,
        first=first,
        last=last,
        total=total,
        previous_url=filters.url(page=page - 1) if page > 1 else None,
        next_url=filters.url(page=page + 1) if page < pages else None,
    )


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso(moment: datetime) -> str:
    return _iso(moment)


# ---------------------------------------------------------------- templates

_ENVIRONMENT = Environment(
    loader=PackageLoader("shequ_services.grid", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    """A board template rendered with ``context`` (autoescaped; undefined names fail)."""
    return _ENVIRONMENT.get_template(template).render(prefix=PREFIX, **context)
