"""The ops SLA board's pure logic: who reads it, order, words for time, counts, series, SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shequ_services.grid import rates, sla
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.domain import ReaderClaims, open_deadline
from shequ_services.grid.rates import Facts

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
SVG = "{http://www.w3.org/2000/svg}"


def running(name: str, deadline: datetime, started: datetime | None = None, **kw: object) -> Clock:
    begun = started or deadline - timedelta(hours=4)
    return Clock(name=name, started=begun, deadline=deadline, warn_at=begun, **kw)  # type: ignore[arg-type]


def record(
    incident_id: str, *clocks: Clock, keys: tuple[str, ...] = (), **kw: object
) -> sla.SlaRecord:
    named = dict(zip(keys or [c.name for c in clocks], clocks, strict=True))
    fields = {
        "category": "facility_damaged",
        "community": "hx-qingyuan",
        "department": None,
        "status": "reported",
        "reported_at": NOW - timedelta(days=1),
        **kw,
    }
    return sla.SlaRecord(id=incident_id, clocks=named, **fields)  # type: ignore[arg-type]


# -- who reads the board --------------------------------------------------------------


def reader(*roles: str, **claims: object) -> ReaderClaims:
    return ReaderClaims("s-1", frozenset(roles), **claims)  # type: ignore[arg-type]


def test_residents_volunteers_and_mediators_do_not_read_the_board() -> None:
    for role in ("resident", "volunteer", "mediator", "bureau"):
        with pytest.raises(sla.NotAReader):
            sla.board_grants(reader(role))


def test_staff_see_their_communities_and_not_what_they_reported_elsewhere() -> None:
    grants = sla.board_grants(reader("community_staff", communities=("hx-qingyuan",)))
    assert [(g.field, g.values) for g in grants] == [("community", ("hx-qingyuan",))]
    assert (grants[0].ordinary, grants[0].sensitive) == ("full", "hidden")


def test_a_department_sees_its_own_and_co_handled_incidents() -> None:
    grants = sla.board_grants(reader("department", department="health"))
    assert {(g.field, g.values) for g in grants} == {
        ("department", ("health",)),
        ("subtasks.department", ("health",)),
    }


def test_admins_and_auditors_see_everything_with_grids_sensitivity_rules() -> None:
    auditor = sla.board_grants(reader("auditor"))
    admin = sla.board_grants(reader("admin"))
    assert [(g.field, g.sensitive) for g in auditor] == [(None, "redacted")]
    assert [(g.field, g.sensitive) for g in admin] == [(None, "redacted")]


def test_staff_without_communities_are_granted_nothing_rather_than_everything() -> None:
    assert sla.board_grants(reader("community_staff")) == []


# -- order ----------------------------------------------------------------------------


def test_overdue_first_most_overdue_first_then_by_time_left_then_no_clock_last() -> None:
    soon = record("INC-b", running("resolve", NOW + timedelta(hours=2)))
    later = record("INC-a", running("acknowledge", NOW + timedelta(days=3)))
    late = record("INC-c", running("acknowledge", NOW - timedelta(minutes=5)))
    very_late = record("INC-d", running("dispatch", NOW - timedelta(days=2)))
    idle = record("INC-e", status="accepted")
    ordered = sla.order([soon, idle, later, late, very_late])
    assert [r.id for r in ordered] == ["INC-d", "INC-c", "INC-b", "INC-a", "INC-e"]


def test_the_earliest_running_clock_decides_and_stopped_clocks_do_not() -> None:
    stopped = running("acknowledge", NOW - timedelta(days=5), stopped_at=NOW - timedelta(days=6))
    resolve = running("resolve", NOW + timedelta(days=2))
    sign_for = running("sign_for", NOW + timedelta(hours=1))
    found = sla.next_clock({"acknowledge": stopped, "resolve": resolve, "sign_for": sign_for})
    assert found == ("sign_for", sign_for)
    assert sla.next_clock({"acknowledge": stopped}) is None


def test_equal_deadlines_order_by_id_so_pages_are_stable() -> None:
    deadline = NOW + timedelta(hours=1)
    ordered = sla.order([record(i, running("resolve", deadline)) for i in ("c", "a", "b")])
    assert [r.id for r in ordered] == ["a", "b", "c"]


def test_only_open_incidents_keep_a_deadline_to_sort_by() -> None:
    clocks = {"feedback": running("feedback", NOW + timedelta(hours=2))}
    assert open_deadline("handled", clocks) == NOW + timedelta(hours=2)
    for status in ("closed_resolved", "closed_unresolved", "rejected", "merged"):
        assert open_deadline(status, clocks) is None, "a policy may leave a clock running"
    assert open_deadline("accepted", {}) is None


# -- time in words --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=59), "不到1分钟"),
        (timedelta(minutes=8, seconds=59), "8分钟"),
        (timedelta(hours=1), "1小时"),
        (timedelta(hours=5, minutes=12, seconds=40), "5小时12分钟"),
        (timedelta(minutes=59, seconds=59), "59分钟"),
        (timedelta(days=2, hours=3, minutes=4), "2天3小时"),
        (timedelta(days=2, minutes=4), "2天"),
        (timedelta(days=1, hours=0, minutes=30), "1天"),
        (timedelta(days=400), "400天"),
    ],
)
def test_a_span_reads_as_its_two_largest_units_rounded_down(span: timedelta, text: str) -> None:
    assert sla.duration_text(span) == text


def test_time_left_and_time_overdue_say_which_they_are() -> None:
    assert sla.remaining_text(NOW + timedelta(hours=3), NOW) == "剩余 3小时"
    assert sla.remaining_text(NOW - timedelta(days=1, hours=2), NOW) == "已超时 1天2小时"
    assert sla.remaining_text(NOW, NOW) == "剩余 不到1分钟"


def test_clock_names_read_in_chinese_and_a_co_handler_names_its_department() -> None:
    assert sla.clock_label("sign_for") == "签收"
    assert sla.clock_label("resolve") == "办结"
    assert sla.clock_label("co_handling:health") == "协办（health）"
    assert sla.clock_label("a_new_clock") == "a_new_clock"


# -- rows -----------------------------------------------------------------------------

LABELS = sla.Labels(
    categories={"facility_damaged": "公共设施损坏", "new_pregnancy": "发现新增孕妇"},
    communities={"hx-qingyuan": "清源社区"},
    departments={"municipal": "市政所", "health": "卫健办"},
    sensitive=frozenset({"new_pregnancy"}),
)


def test_a_row_shows_codes_by_name_and_the_deadline_in_beijing_time() -> None:
    deadline = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    shown = sla.row(
        record("INC-1", running("resolve", deadline), department="municipal", status="dispatched"),
        now=NOW,
        labels=LABELS,
        tz=SHANGHAI,
    )
    assert (shown.category_label, shown.community_label, shown.department_label) == (
        "公共设施损坏",
        "清源社区",
        "市政所",
    )
    assert (shown.status_label, shown.clock_label) == ("已派遣", "办结")
    assert shown.deadline == "2026-11-23 17:30"
    assert shown.deadline_iso == "2026-11-23T09:30:00Z"
    assert shown.remaining == "剩余 5小时30分钟"
    assert (shown.overdue, shown.due_soon, shown.sensitive) == (False, True, False)


def test_a_row_marks_overdue_sensitive_and_co_handling_clocks() -> None:
    clock = running("co_handling", NOW - timedelta(hours=1), department="health")
    shown = sla.row(
        record("INC-2", clock, keys=("co_handling:health",), category="new_pregnancy"),
        now=NOW,
        labels=LABELS,
        tz=SHANGHAI,
    )
    assert shown.clock_label == "协办（卫健办）"
    assert shown.department_label == sla.NO_DEPARTMENT
    assert (shown.overdue, shown.due_soon, shown.sensitive) == (True, False, True)
    assert shown.remaining == "已超时 1小时"


def test_a_row_without_a_running_clock_says_so() -> None:
    shown = sla.row(record("INC-3", status="accepted"), now=NOW, labels=LABELS, tz=SHANGHAI)
    assert (shown.clock_label, shown.deadline, shown.remaining) == ("—", "—", "无进行中的时限")
    assert not shown.overdue and not shown.due_soon


def test_a_row_has_no_field_for_personal_data() -> None:
    personal = {"reporter", "description", "location", "private", "open311", "history", "ratings"}
    assert not personal & set(sla.Row.__dataclass_fields__)
    assert not personal & set(sla.SlaRecord.__dataclass_fields__)


# -- counts ---------------------------------------------------------------------------


def test_counts_sum_per_community_and_per_department_most_overdue_first() -> None:
    cells = [
        sla.Cell("hx-qingyuan", "municipal", open=5, overdue=1, due_soon=2),
        sla.Cell("hx-qingyuan", None, open=3, overdue=0, due_soon=1),
        sla.Cell("hx-liushu", "municipal", open=2, overdue=2, due_soon=0),
        sla.Cell("hx-liushu", "health", open=1, overdue=0, due_soon=1),
    ]
    by_community = sla.tallies(cells, "community", LABELS)
    assert [(t.key, t.label, t.open, t.overdue, t.due_soon) for t in by_community] == [
        ("hx-liushu", "hx-liushu", 3, 2, 1),
        ("hx-qingyuan", "清源社区", 8, 1, 3),
    ]
    by_department = sla.tallies(cells, "department", LABELS)
    assert [(t.key, t.label, t.open, t.overdue, t.due_soon) for t in by_department] == [
        ("municipal", "市政所", 7, 3, 2),
        (None, sla.NO_DEPARTMENT, 3, 0, 1),
        ("health", "卫健办", 1, 0, 1),
    ]


# -- the last 30 days -----------------------------------------------------------------

TODAY = date(2026, 11, 23)


def history(
    reported: datetime,
    *,
    status: str = "reported",
    clocks: dict[str, Clock] | None = None,
    closures: tuple[datetime, ...] = (),
    score: int | None = None,
) -> sla.HistoryRecord:
    facts = Facts("hx-qingyuan", "facility_damaged", None, status, reported, clocks or {}, score)
    return sla.HistoryRecord(facts=facts, closures=closures)


def local(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=SHANGHAI).astimezone(UTC)


def test_the_window_is_whole_local_days_ending_today() -> None:
    days, start, end = sla.window(TODAY, 3, SHANGHAI)
    assert days == [date(2026, 11, 21), date(2026, 11, 22), TODAY]
    assert start == datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


def test_reports_and_closures_count_on_their_local_day() -> None:
    days, _, _ = sla.window(TODAY, 3, SHANGHAI)
    found = sla.series(
        [
            # 23:30 local on the 21st is 15:30 UTC: it counts on the 21st, not the 22nd's UTC day.
            history(local(21, 23), closures=(local(22, 0), local(23, 9))),
            history(local(22, 7)),
            history(local(1, 7), closures=(local(23, 10),)),  # reported before the window
        ],
        days=days,
        now=NOW,
        tz=SHANGHAI,
        clocks=["acknowledge"],
    )
    assert found.reported == (1, 1, 0)
    assert found.closed == (0, 1, 2)


def test_overdue_counts_clocks_past_their_deadline_at_each_days_end() -> None:
    days, _, _ = sla.window(TODAY, 3, SHANGHAI)
    late_then_stopped = running(
        "acknowledge", local(21, 10), started=local(21, 6), stopped_at=local(22, 9)
    )
    still_late = running("resolve", local(22, 20), started=local(21, 8))
    not_yet = running("resolve", local(23, 18), started=local(21, 8))
    found = sla.series(
        [
            history(local(21, 6), clocks={"acknowledge": late_then_stopped}),
            history(local(21, 8), clocks={"resolve": still_late}),
            history(local(21, 8), clocks={"resolve": not_yet}),
        ],
        days=days,
        now=NOW,  # 12:00 on the 23rd: "not_yet" is due at 18:00, still in time
        tz=SHANGHAI,
        clocks=["acknowledge", "resolve"],
    )
    assert found.overdue == (1, 1, 1)


def test_the_daily_rates_are_the_rates_modules_own_by_day_of_report() -> None:
    days, start, end = sla.window(TODAY, 3, SHANGHAI)
    ack_in_time = running(
        "acknowledge", local(22, 12), started=local(22, 8), stopped_at=local(22, 9)
    )
    ack_late = running("acknowledge", local(22, 12), started=local(22, 8), stopped_at=local(22, 13))
    records = [
        history(
            local(22, 8), status="closed_resolved", clocks={"acknowledge": ack_in_time}, score=5
        ),
        history(
            local(22, 8), status="closed_unresolved", clocks={"acknowledge": ack_late}, score=2
        ),
        history(local(21, 9), status="closed_resolved", score=4),
    ]
    found = sla.series(records, days=days, now=NOW, tz=SHANGHAI, clocks=["acknowledge"])
    expected = rates.summarise(
        [r.facts for r in records], now=NOW, clocks=["acknowledge"], tz=SHANGHAI, group_by="day"
    )
    by_day = {group.key["day"]: group for group in expected}
    assert found.rate_counts[1] == (
        by_day["2026-11-22"].response_rate,
        by_day["2026-11-22"].resolution_rate,
        by_day["2026-11-22"].satisfaction_rate,
    )
    assert found.response_rate == (None, 0.5, None)
    assert found.resolution_rate == (1.0, 0.5, None)
    assert found.satisfaction_rate == (1.0, 0.5, None)


# -- charts ---------------------------------------------------------------------------


def parsed(chart: sla.Chart) -> ET.Element:
    return ET.fromstring(str(chart.svg))  # noqa: S314 (our own output)


def test_the_flow_chart_draws_a_bar_per_day_and_series_and_names_itself() -> None:
    days, _, _ = sla.window(TODAY, 3, SHANGHAI)
    chart = sla.bars_chart(
        days,
        [("报告", "chart-bar-reported", [1, 4, 0]), ("结案", "chart-bar-closed", [0, 2, 3])],
        chart_id="flow",
        title="每日报告与结案",
    )
    svg = parsed(chart)
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "每日报告与结案"  # type: ignore[union-attr]
    assert "报告共5件；结案共5件" in svg.find(f"{SVG}desc").text  # type: ignore[operator,union-attr]
    bars = [r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6
    heights = [
        float(r.get("height") or 0) for r in bars if "chart-bar-reported" in r.get("class", "")
    ]
    assert heights[1] > heights[0] > heights[2] == 0
    assert chart.rows[1] == ("11月22日", "4", "2")


def test_the_rates_chart_breaks_its_line_where_a_day_has_no_data() -> None:
    empty, half = rates.Ratio(0, 0), rates.Ratio(1, 2)
    days = [TODAY - timedelta(days=n) for n in (3, 2, 1, 0)]
    series = sla.Series(
        days=tuple(days),
        reported=(0,) * 4,
        closed=(0,) * 4,
        overdue=(0,) * 4,
        response_rate=(0.5, 0.5, None, 0.5),
        resolution_rate=(None,) * 4,
        satisfaction_rate=(None,) * 4,
        rate_counts=((half, empty, empty),) * 2 + ((empty,) * 3,) + ((half, empty, empty),),
    )
    svg = parsed(sla.rates_chart(series))
    lines = [p for p in svg.iter(f"{SVG}polyline") if "response" in p.get("class", "")]
    assert len(lines) == 1 and len((lines[0].get("points") or "").split()) == 2
    dots = [c for c in svg.iter(f"{SVG}circle") if "response" in c.get("class", "")]
    assert len(dots) == 3
    assert sla.rates_chart(series).rows[2] == ("11月22日", "无数据", "无数据", "无数据")
    assert sla.rates_chart(series).rows[0][1] == "50.0%（1/2）"


def test_chart_text_is_escaped_by_the_xml_writer() -> None:
    chart = sla.bars_chart([TODAY], [("<b>&", "c", [1])], chart_id="x", title="<script>")
    assert "<script>" not in str(chart.svg) and "&lt;script&gt;" in str(chart.svg)


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (12, 20), (450, 500)])
def test_an_axis_ends_at_a_round_number(value: int, top: int) -> None:
    assert sla.nice_ceiling(value) == top


# -- filters and pages ----------------------------------------------------------------


def test_filter_links_keep_the_filters_and_leave_out_empty_ones_and_page_one() -> None:
    filters = sla.Filters(community="hx-qingyuan")
    assert filters.url() == "/sla/?community=hx-qingyuan"
    assert filters.url(page=2) == "/sla/?community=hx-qingyuan&page=2"
    assert sla.Filters().url(page=1) == "/sla/"


def test_pages_of_fifty_with_links_both_ways_and_a_cap() -> None:
    middle = sla.pager(sla.Filters(), page=2, total=120)
    assert (middle.first, middle.last, middle.pages) == (51, 100, 3)
    assert middle.previous_url == "/sla/" and middle.next_url == "/sla/?page=3"
    last = sla.pager(sla.Filters(), page=3, total=120)
    assert (last.first, last.last, last.next_url) == (101, 120, None)
    assert sla.pager(sla.Filters(), page=1, total=0).pages == 1
    huge = sla.pager(sla.Filters(), page=sla.MAX_PAGE, total=10**6)
    assert huge.pages == sla.MAX_PAGE and huge.next_url is None


def test_templates_escape_what_they_show() -> None:
    html = sla.render(
        "sla_error.html",
        title="t",
        heading="<img src=x>",
        message="m",
        errors=[],
        signed_in=False,
        who="",
        csrf="c",
        refresh=0,
    )
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html


def test_recent_values_are_reused_within_their_interval_per_key() -> None:
    computed: list[str] = []

    def compute(value: str) -> object:
        return lambda: computed.append(value) or value

    recent = sla.Recent(seconds=300, size=2)
    assert recent.get("a", 0.0, compute("a1")) == "a1"
    assert recent.get("a", 299.0, compute("a2")) == "a1"
    assert recent.get("a", 300.0, compute("a3")) == "a3"
    assert recent.get("b", 301.0, compute("b1")) == "b1"
    assert recent.get("c", 302.0, compute("c1")) == "c1"
    assert recent.get("a", 303.0, compute("a4")) == "a4", "the oldest key was dropped"
    assert computed == ["a1", "a3", "b1", "c1", "a4"]


def test_recent_with_no_interval_computes_every_time() -> None:
    calls = iter(range(10))
    recent = sla.Recent(seconds=0)
    assert [recent.get("k", 0.0, lambda: next(calls)) for _ in range(3)] == [0, 1, 2]


def test_the_lists_length_comes_from_the_counts_under_the_same_filters() -> None:
    cells = [
        sla.Cell("hx-qingyuan", "municipal", open=5, overdue=1, due_soon=2),
        sla.Cell("hx-qingyuan", None, open=3, overdue=0, due_soon=1),
        sla.Cell("hx-liushu", "municipal", open=2, overdue=2, due_soon=0),
    ]
    assert sla.total_of(cells, {}) == 10
    assert sla.total_of(cells, {"community": "hx-qingyuan"}) == 8
    assert sla.total_of(cells, {"department": "municipal"}) == 7
    assert sla.total_of(cells, {"community": "hx-liushu", "department": "municipal"}) == 2
    assert sla.total_of(cells, {"community": "hx-guihua"}) == 0
