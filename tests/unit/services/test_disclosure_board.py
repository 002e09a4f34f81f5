"""The public board's views: SVG charts, the Atom feed, and the view models."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from shequ.openapi import build_spec
from shequ_services.disclosure import board, domain, merkle
from shequ_services.disclosure.service import DisclosureService

ATOM = "{http://www.w3.org/2005/Atom}"
SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class FakeEntry:
    """An entry with the fields the board reads (``domain.Entry`` has the same)."""

    index: int
    title: str = "受理事项：公共设施损坏"
    kind: str = "incident_summary"
    cadence: str = "ad_hoc"
    community: str = "hx-qingyuan"
    period: str = "2026-03"
    body: dict[str, Any] = field(default_factory=lambda: {"category": "facility"})
    references: tuple[str, ...] = ()
    supersedes: int | None = None
    published_at: datetime = datetime(2026, 3, 31, 16, 30, tzinfo=UTC)
    origin: str = "events"

    @property
    def leaf(self) -> bytes:
        draft = domain.EntryDraft(
            self.kind, self.cadence, self.community, self.period, self.title, self.body,
            self.references, self.supersedes, self.origin,
        )  # fmt: skip
        return domain.canonical_bytes(domain.leaf_content(self.index, draft, self.published_at))


@dataclass(frozen=True)
class FakeCheckpoint:
    size: int
    root_hash: bytes
    origin: str = "example.org/disclosure"
    signature: bytes = b"\x01" * 64
    signed_at: datetime = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    cosignatures: tuple[Any, ...] = ("w1", "w2")


def tree(entries: list[FakeEntry]) -> dict[merkle.NodeKey, bytes]:
    """All stored nodes of the tree over ``entries``, built through merkle.append."""
    frontier: list[bytes] = []
    nodes: dict[merkle.NodeKey, bytes] = {}
    for size, entry in enumerate(entries):
        frontier, completed = merkle.append(frontier, size, entry.leaf)
        nodes.update(completed)
    return nodes


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    ("period", "label"),
    [("2026-03", "2026年3月"), ("2026-Q4", "2026年第四季度"), ("2026", "2026年"), ("x", "x")],
)
def test_a_period_reads_in_chinese(period: str, label: str) -> None:
    assert board.period_label(period) == label


def test_an_unknown_kind_or_cadence_shows_its_code_rather_than_nothing() -> None:
    assert board.kind_label("finance") == "财务公开"
    assert board.kind_label("later_kind") == "later_kind"
    assert board.cadence_label("ad_hoc") == "即时公开"


def test_a_moment_is_shown_in_beijing_time() -> None:
    assert board.china_time(datetime(2026, 3, 31, 16, 30, tzinfo=UTC)) == "2026-04-01 00:30"


# ------------------------------------------------------------------ view models


def test_a_body_becomes_nested_definitions_with_chinese_labels_in_body_order() -> None:
    items = board.body_items(
        {"urgency": "urgent", "received": {"personal": 3}, "category": None, "flag": True}
    )
    assert [item.label for item in items] == ["紧急程度", "受理事项（按类别）", "类别", "flag"]
    assert items[0].value == "紧急"
    assert items[1].children == (board.BodyItem("个人事项（内容不予公开）", "3"),)
    assert items[2].value == "（不予公开）"
    assert items[3].value == "是"


def test_codes_read_through_the_names_given_and_free_text_is_left_alone() -> None:
    codes = {**board.CODE_LABELS, "facility_damaged": "公共设施损坏"}
    items = board.body_items(
        {"category": "facility_damaged", "outcome": "closed_resolved", "note": "agreed"}, codes
    )
    assert [item.value for item in items] == ["公共设施损坏", "已办结", "agreed"]


def test_a_correction_points_to_what_it_supersedes_and_the_original_to_its_corrections() -> None:
    original = board.entry_view(FakeEntry(3), corrected_by=[9, 7])
    correction = board.entry_view(FakeEntry(7, supersedes=3))
    assert original.corrected_by == (7, 9) and not original.is_correction
    assert correction.is_correction and correction.supersedes == 3
    assert correction.url == "/board/entries/7"


def test_a_figures_entry_links_to_its_charts_and_other_entries_do_not() -> None:
    figures = FakeEntry(6, cadence="periodic", body={"figures": 1}, community="c 1")
    assert board.entry_view(figures).figures_url == "/board/figures?community=c+1&month=2026-03"
    assert board.entry_view(FakeEntry(6, body={"figures": 1})).figures_url is None


def test_an_entry_whose_fields_no_longer_say_what_its_leaf_says_is_flagged() -> None:
    genuine = FakeEntry(2)
    assert board.entry_view(genuine).matches_leaf

    @dataclass(frozen=True)
    class EditedFields(FakeEntry):
        @property
        def leaf(self) -> bytes:
            return genuine.leaf

    assert not board.entry_view(EditedFields(2, title="悄悄改过")).matches_leaf


def test_a_checkpoint_view_counts_its_witnesses_and_shows_hashes_in_base64() -> None:
    view = board.checkpoint_view(FakeCheckpoint(size=5, root_hash=b"\xff" * 32))
    assert view is not None
    assert view.witnesses == 2 and view.size == 5
    assert view.root_hash == "/" * 42 + "8="
    assert board.checkpoint_view(None) is None


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_a_proof_view_holds_for_a_true_audit_path(size: int) -> None:
    entries = [FakeEntry(index) for index in range(size)]
    nodes = tree(entries)
    checkpoint = FakeCheckpoint(size=size, root_hash=merkle.root(size, nodes))
    for entry in entries:
        path = merkle.inclusion_proof(entry.index, size, nodes)
        view = board.proof_view(entry, checkpoint, path)
        assert view.covered and view.holds
        assert view.tree_size == size and len(view.audit_path) == len(path)
        assert view.api_proof_url == f"/api/v1/disclosure/entries/{entry.index}/proof?size={size}"


def test_a_proof_view_says_when_the_audit_path_does_not_reach_the_signed_root() -> None:
    entries = [FakeEntry(index) for index in range(4)]
    nodes = tree(entries)
    checkpoint = FakeCheckpoint(size=4, root_hash=merkle.root(4, nodes))
    path = merkle.inclusion_proof(1, 4, nodes)
    altered = FakeEntry(1, title="改过的标题")
    assert not board.proof_view(altered, checkpoint, path).holds


def test_an_entry_newer_than_the_checkpoint_has_no_proof_yet() -> None:
    view = board.proof_view(FakeEntry(4), FakeCheckpoint(size=4, root_hash=b"\0" * 32))
    assert not view.covered and view.audit_path == () and view.api_proof_url == ""
    assert not board.proof_view(FakeEntry(0), None).covered


def test_the_pager_links_by_index_and_keeps_the_filters() -> None:
    filters = board.Filters(community="hx-qingyuan", kind="", month="2026-03")
    links = board.pager(filters, [30, 29, 28], has_older=True, has_newer=True)
    assert links.older_url == "/board/?community=hx-qingyuan&month=2026-03&before=28"
    assert links.newer_url == "/board/?community=hx-qingyuan&month=2026-03&after=30"
    assert board.pager(filters, [], has_older=True, has_newer=True) == board.Pager(None, None)
    assert board.pager(board.Filters(), [5], has_older=False, has_newer=False) == board.Pager(
        None, None
    )


# ------------------------------------------------------------------ SVG


def parse_svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # noqa: S314 (our own output)


def test_a_bar_chart_is_an_accessible_image_with_a_bar_per_label() -> None:
    svg = parse_svg(board.bar_chart({"公共设施": 4, "环境卫生": 2}, chart_id="c", title="按类别"))
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "c-title c-desc"
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == "按类别" and title.get("id") == "c-title"
    desc = svg.find(f"{SVG}desc")
    assert desc is not None and desc.text == "公共设施：4；环境卫生：2"
    widths = [float(rect.get("width", "")) for rect in svg.iter(f"{SVG}rect")]
    assert len(widths) == 2 and widths[0] == pytest.approx(2 * widths[1])
    texts = [text.text for text in svg.iter(f"{SVG}text")]
    assert texts == ["公共设施", "4", "环境卫生", "2"]


def test_rates_scale_to_one_and_read_as_percentages() -> None:
    svg = parse_svg(
        board.bar_chart(
            {"响应率": 1.0, "解决率": 0.5},
            chart_id="r",
            title="比率",
            maximum=1.0,
            fmt=board.percent,
        )
    )
    full, half = (float(rect.get("width", "")) for rect in svg.iter(f"{SVG}rect"))
    assert half == pytest.approx(full / 2)
    assert [text.text for text in svg.iter(f"{SVG}text")][1::2] == ["100.0%", "50.0%"]


def test_a_chart_of_nothing_says_so_and_draws_no_bar() -> None:
    svg = parse_svg(board.bar_chart({}, chart_id="e", title="空"))
    assert list(svg.iter(f"{SVG}rect")) == []
    assert "无数据" in [text.text for text in svg.iter(f"{SVG}text")]


def test_zero_and_negative_values_draw_empty_bars() -> None:
    svg = parse_svg(board.bar_chart({"a": 0, "b": -3}, chart_id="z", title="零"))
    assert [rect.get("width") for rect in svg.iter(f"{SVG}rect")] == ["0.0", "0.0"]


def test_labels_with_markup_are_escaped_in_the_svg() -> None:
    markup = board.bar_chart({"<script>x</script>&": 1}, chart_id="x", title='"<b>"')
    assert "<script>" not in markup and "<b>" not in markup
    svg = parse_svg(markup)
    assert [text.text for text in svg.iter(f"{SVG}text")][0] == "<script>x</script>&"


def test_a_chart_has_the_same_numbers_as_its_table() -> None:
    figure = board.chart({"已解决": 3, "挂账": 1.5}, chart_id="o", title="按结果")
    assert figure.rows == (("已解决", "3"), ("挂账", "1.5"))
    assert "已解决：3；挂账：1.5" in figure.svg


def test_a_rate_of_nothing_draws_no_bar_and_says_so() -> None:
    svg = parse_svg(board.bar_chart({"满意率": None}, chart_id="n", title="比率", maximum=1.0))
    assert [rect.get("width") for rect in svg.iter(f"{SVG}rect")] == ["0.0"]
    assert [text.text for text in svg.iter(f"{SVG}text")] == ["满意率", "无数据"]


def figures_body() -> dict[str, Any]:
    """A body in the shape ``domain.monthly_figures`` returns."""
    return {
        "figures": 1,
        "received": {"facility_damaged": 3, "personal": 1},
        "concluded": {"closed_resolved": 2, "rejected": 1},
        "response_rate": {"numerator": 2, "denominator": 3, "permille": 667},
        "resolution_rate": {"numerator": 2, "denominator": 2, "permille": 1000},
        "satisfaction_rate": {"numerator": 0, "denominator": 0, "permille": None},
        "mediation_closed": {"agreed": 1},
        "mediation_agreement_rate": {"numerator": 1, "denominator": 1, "permille": 1000},
        "volunteer_minutes": 90,
        "volunteer_records": 2,
    }


def test_monthly_figures_become_charts_with_tables_of_the_same_numbers() -> None:
    codes = {**board.CODE_LABELS, "facility_damaged": "公共设施损坏"}
    figures = board.figures_view(figures_body(), codes)
    charts = {chart.chart_id: chart for chart in figures.charts}
    assert list(charts) == ["received", "concluded", "rates", "mediation"]
    assert charts["received"].rows == (("公共设施损坏", "3"), ("个人事项（内容不予公开）", "1"))
    assert charts["concluded"].rows == (("已办结", "2"), ("不予受理", "1"))
    assert charts["rates"].rows == (
        ("响应率", "66.7%（2 / 3）"),
        ("解决率", "100.0%（2 / 2）"),
        ("满意率", "无数据（没有可计算的事项）"),
    )
    rates = parse_svg(charts["rates"].svg)
    response, resolution, satisfaction = (
        float(rect.get("width", "")) for rect in rates.iter(f"{SVG}rect")
    )
    assert response == pytest.approx(0.667 * resolution, abs=0.1) and satisfaction == 0
    assert dict(figures.others) == {
        "调解成功率": "100.0%（1 / 1）",
        "志愿服务时长": "1.5 小时（90 分钟）",
        "志愿服务记录数": "2",
    }


def test_figures_without_mediation_leave_its_chart_out() -> None:
    body = {**figures_body(), "mediation_closed": {}}
    assert [chart.chart_id for chart in board.figures_view(body).charts] == [
        "received",
        "concluded",
        "rates",
    ]


# ------------------------------------------------------------------ Atom


def parse_feed(raw: bytes) -> ET.Element:
    return ET.fromstring(raw)  # noqa: S314 (our own output)


def feed_of(entries: list[FakeEntry]) -> ET.Element:
    return parse_feed(
        board.atom_feed(
            entries,
            origin="example.org/disclosure",
            title="居务公开栏",
            updated=datetime(2026, 4, 1, 8, 0, tzinfo=UTC),
        )
    )


def text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    assert found is not None, path
    return found.text or ""


def test_the_feed_has_the_elements_rfc_4287_requires() -> None:
    feed = feed_of([FakeEntry(2), FakeEntry(1)])
    assert feed.tag == f"{ATOM}feed"
    assert feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "zh-CN"
    assert text(feed, f"{ATOM}id").startswith("urn:uuid:")
    assert text(feed, f"{ATOM}title") == "居务公开栏"
    assert text(feed, f"{ATOM}updated") == "2026-04-01T08:00:00Z"
    assert text(feed, f"{ATOM}author/{ATOM}name")
    links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert links == {"self": "/board/feed.atom", "alternate": "/board/"}
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 2
    for entry in entries:
        for child in ("id", "title", "updated", "content"):
            assert text(entry, f"{ATOM}{child}"), child
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None


def test_feed_entries_keep_the_given_order_link_to_their_page_and_hold_the_body() -> None:
    feed = feed_of([FakeEntry(5, body={"urgency": "high"}, references=("INC-1",)), FakeEntry(4)])
    first, second = feed.findall(f"{ATOM}entry")
    link = first.find(f"{ATOM}link")
    assert link is not None and link.get("href") == "/board/entries/5"
    assert text(first, f"{ATOM}title") == "[事项受理] 受理事项：公共设施损坏"
    assert text(first, f"{ATOM}updated") == "2026-03-31T16:30:00Z"
    content = first.find(f"{ATOM}content")
    assert content is not None and content.get("type") == "text"
    assert "紧急程度：high" in (content.text or "") and "INC-1" in (content.text or "")
    assert text(second, f"{ATOM}id") != text(first, f"{ATOM}id")


def test_an_entry_id_is_stable_and_depends_only_on_the_origin_and_index() -> None:
    once = text(feed_of([FakeEntry(5)]), f"{ATOM}entry/{ATOM}id")
    again = text(feed_of([FakeEntry(5, title="其他")]), f"{ATOM}entry/{ATOM}id")
    other_log = board.atom_feed(
        [FakeEntry(5)], origin="other.example/log", title="t", updated=datetime.now(UTC)
    )
    assert once == again
    assert text(parse_feed(other_log), f"{ATOM}entry/{ATOM}id") != once


def test_a_correction_is_marked_in_the_feed() -> None:
    feed = feed_of([FakeEntry(8, supersedes=3)])
    assert text(feed, f"{ATOM}entry/{ATOM}title").startswith("【更正】")
    assert "本条更正第 3 条" in text(feed, f"{ATOM}entry/{ATOM}content")


def test_markup_and_characters_xml_cannot_carry_still_make_a_valid_feed() -> None:
    nasty = FakeEntry(1, title="<b>&\x00\x1f</b>", body={"note": "]]> <!-- \x0b"})
    raw = board.atom_feed(
        [nasty], origin="o", title="t & <t>", updated=datetime(2026, 1, 1, tzinfo=UTC)
    )
    feed = parse_feed(raw)
    assert text(feed, f"{ATOM}title") == "t & <t>"
    assert text(feed, f"{ATOM}entry/{ATOM}title") == "[事项受理] <b>&\ufffd\ufffd</b>"
    assert "]]> <!-- \ufffd" in text(feed, f"{ATOM}entry/{ATOM}content")


# ------------------------------------------------------------------ templates


def test_a_rendered_entry_escapes_its_text_and_shows_its_body_as_definitions() -> None:
    entry = board.entry_view(FakeEntry(1, title="<script>alert(1)</script>", body={"a": "<i>"}))
    html = board.render(
        "index.html",
        title="居务公开",
        checkpoint=None,
        filters=board.Filters(),
        entries=[entry],
        pager=board.Pager(None, None),
        communities=["hx-qingyuan"],
    )
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<dt>a</dt>" in html and "<dd>&lt;i&gt;</dd>" in html
    assert html.count("<h1>") == 1 and 'lang="zh-CN"' in html
    assert "<script" not in html and "style=" not in html


# ------------------------------------------------------------------ OpenAPI


def test_the_boards_routes_are_documented_as_public_pages_tagged_board() -> None:
    paths = build_spec(DisclosureService)["paths"]
    media = {
        "/board/": "text/html",
        "/board/entries/{index}": "text/html",
        "/board/figures": "text/html",
        "/board/feed.atom": "application/atom+xml",
        "/board/entries.json": "application/json",
    }
    for path, media_type in media.items():
        operation = paths[path]["get"]
        assert operation["tags"] == ["board"] and operation["security"] == []
        assert list(operation["responses"]["200"]["content"]) == [media_type]
    assert paths["/board/"]["get"]["responses"]["422"]["description"].startswith("the filters")
    assert "content" not in paths["/board/entries/{index}"]["get"]["responses"]["404"]
