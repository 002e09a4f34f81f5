"""The public notice board's views: what a resident reads, built without I/O.

The board is server-rendered so it works without JavaScript and on any
phone; this module turns log entries, checkpoints and proofs into view
models (plain data the templates only lay out), draws the monthly figures as
inline SVG, and writes the Atom feed. It reads no database and imports no
framework beyond the template engine, so every view is unit-tested.

Everything shown comes from the log itself: entries passed the personal-data
guard before they were appended, and a view never adds data the entry does
not hold. Markup is escaped twice over: Jinja2 autoescapes every template,
and SVG and Atom are built with ``xml.etree``, which escapes text and
attributes itself.
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from shequ_services.disclosure import domain, merkle

PREFIX = "/board"
API = "/api/v1/disclosure"
PAGE_SIZE = 20

#: China has had no daylight saving since 1991: a fixed offset needs no tz database.
CHINA_TIME = timezone(timedelta(hours=8), "北京时间")

KIND_LABELS: Mapping[str, str] = domain.KINDS
CADENCE_LABELS: Mapping[str, str] = domain.CADENCES

#: Chinese labels for body keys the producers use; an unknown key is shown as is.
FIELD_LABELS: dict[str, str] = {
    "category": "类别",
    "urgency": "紧急程度",
    "outcome": "结果",
    "answered_in_time": "按时响应",
    "score": "评分",
    "figures": "数据格式版本",
    "received": "受理事项（按类别）",
    "concluded": "办结事项（按结果）",
    "response_rate": "响应率",
    "resolution_rate": "解决率",
    "satisfaction_rate": "满意率",
    "numerator": "分子",
    "denominator": "分母",
    "permille": "千分比",
    "mediation_closed": "调解结案（按结果）",
    "mediation_agreement_rate": "调解成功率",
    "volunteer_minutes": "志愿服务时长（分钟）",
    "volunteer_records": "志愿服务记录数",
    "source": "来源",
    "closed": "结案（按结果）",
    "minutes": "时长（分钟）",
    "records": "记录数",
    "summary": "摘要",
    "amount": "金额",
    "currency": "币种",
    "reason": "理由",
    "decided_on": "决定日期",
    "total": "合计",
    "count": "数量",
}

#: Codes a body holds as keys or as values of ``CODED_FIELDS``, in Chinese.
#: Category names are not here: they are the grid's data, and the service
#: passes the ones the log has seen.
CODE_LABELS: dict[str, str] = {
    **domain.CONCLUSIONS,
    domain.PERSONAL_CATEGORY: "个人事项（内容不予公开）",
    "urgent": "紧急",
    "simple": "简单",
    "ordinary": "一般",
    "complex": "复杂",
    "agreed": "达成调解协议",
    "failed": "调解不成",
    "referred": "转入诉讼",
    "withdrawn": "撤回",
    "events": "业务事件统计",
}
CODED_FIELDS = frozenset({"category", "outcome", "urgency", "source"})

_PERIOD_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_PERIOD_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_PERIOD_YEAR = re.compile(r"^(\d{4})$")
_QUARTERS = {"1": "第一季度", "2": "第二季度", "3": "第三季度", "4": "第四季度"}

#: Characters XML 1.0 cannot carry at all, even escaped (§2.2); a feed with one is not XML.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

ATOM_NS = "http://www.w3.org/2005/Atom"
SVG_NS = "http://www.w3.org/2000/svg"
XML_NS = "http://www.w3.org/XML/1998/namespace"


class EntryLike(Protocol):
    """The fields of a log entry the board reads (``domain.Entry`` has them)."""

    index: int
    kind: str
    cadence: str
    community: str
    period: str
    title: str
    body: Mapping[str, Any]
    references: Sequence[str]
    supersedes: int | None
    published_at: datetime
    leaf: bytes


class CheckpointLike(Protocol):
    """The fields of a signed checkpoint the board reads."""

    origin: str
    size: int
    root_hash: bytes
    signature: bytes
    signed_at: datetime
    cosignatures: Sequence[Any]


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def cadence_label(cadence: str) -> str:
    return CADENCE_LABELS.get(cadence, cadence)


def period_label(period: str) -> str:
    """``2026-03`` → 2026年3月, ``2026-Q1`` → 2026年第一季度, ``2026`` → 2026年."""
    if match := _PERIOD_MONTH.match(period):
        return f"{match[1]}年{int(match[2])}月"
    if match := _PERIOD_QUARTER.match(period):
        return f"{match[1]}年{_QUARTERS[match[2]]}"
    if match := _PERIOD_YEAR.match(period):
        return f"{match[1]}年"
    return period


def china_time(moment: datetime) -> str:
    """A moment as residents read it: Beijing time to the minute."""
    if moment.tzinfo is None:  # the store reads naive UTC unless told otherwise
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class BodyItem:
    """One line of an entry's body as a definition: a label and a value or sub-items."""

    label: str
    value: str = ""
    children: tuple[BodyItem, ...] = ()


def body_items(
    body: Mapping[str, Any], codes: Mapping[str, str] = CODE_LABELS
) -> tuple[BodyItem, ...]:
    """An entry's body as nested definitions, in the body's own key order.

    Keys read through ``FIELD_LABELS``, then ``codes`` (a nested mapping's
    keys are often codes: categories, outcomes); a code in a field of
    ``CODED_FIELDS`` reads through ``codes``. Anything unknown shows as is.
    """
    return tuple(_item(str(key), value, codes) for key, value in body.items())


def _item(key: str, value: Any, codes: Mapping[str, str]) -> BodyItem:
    label = FIELD_LABELS.get(key) or codes.get(key, key)
    if isinstance(value, Mapping):
        return BodyItem(label, children=body_items(value, codes))
    if key in CODED_FIELDS and isinstance(value, str):
        return BodyItem(label, value=codes.get(value, value))
    return BodyItem(label, value=display_value(value))


def display_value(value: Any) -> str:
    """A body value as text: withheld values say so rather than showing ``null``."""
    if value is None:
        return "（不予公开）"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "、".join(display_value(item) for item in value) or "（无）"
    return str(value)


def body_text(body: Mapping[str, Any], codes: Mapping[str, str] = CODE_LABELS) -> str:
    """The body as indented ``label：value`` lines (the Atom feed's plain-text content)."""
    lines: list[str] = []

    def walk(items: Iterable[BodyItem], depth: int) -> None:
        for item in items:
            indent = "  " * depth
            if item.children:
                lines.append(f"{indent}{item.label}：")
                walk(item.children, depth + 1)
            else:
                lines.append(f"{indent}{item.label}：{item.value}")

    walk(body_items(body, codes), 0)
    return "\n".join(lines)


def entry_url(index: int) -> str:
    return f"{PREFIX}/entries/{index}"


@dataclass(frozen=True)
class EntryView:
    index: int
    kind: str
    kind_label: str
    cadence_label: str
    community: str
    period: str
    period_label: str
    title: str
    body: tuple[BodyItem, ...]
    references: tuple[str, ...]
    supersedes: int | None
    corrected_by: tuple[int, ...]
    published: str
    published_iso: str
    url: str
    matches_leaf: bool
    figures_url: str | None = None

    @property
    def is_correction(self) -> bool:
        return self.supersedes is not None


def entry_view(
    entry: EntryLike, corrected_by: Iterable[int] = (), codes: Mapping[str, str] = CODE_LABELS
) -> EntryView:
    """An entry for display; ``corrected_by`` are the entries that supersede it.

    The page shows the stored fields, while the proof covers the stored leaf
    bytes; ``matches_leaf`` says whether the two agree, so an edit of the
    fields alone (which no proof would catch) is flagged on the page itself.
    """
    return EntryView(
        index=entry.index,
        kind=entry.kind,
        kind_label=kind_label(entry.kind),
        cadence_label=cadence_label(entry.cadence),
        community=entry.community,
        period=entry.period,
        period_label=period_label(entry.period),
        title=entry.title,
        body=body_items(entry.body, codes),
        references=tuple(entry.references),
        supersedes=entry.supersedes,
        corrected_by=tuple(sorted(corrected_by)),
        published=china_time(entry.published_at),
        published_iso=_iso(entry.published_at),
        url=entry_url(entry.index),
        matches_leaf=domain.fields_match_leaf(entry),  # type: ignore[arg-type]
        figures_url=(
            f"{PREFIX}/figures?{urlencode({'community': entry.community, 'month': entry.period})}"
            if domain.is_figures(entry)  # type: ignore[arg-type]
            else None
        ),
    )


@dataclass(frozen=True)
class CheckpointView:
    origin: str
    size: int
    root_hash: str
    signature: str
    signed: str
    witnesses: int


def checkpoint_view(checkpoint: CheckpointLike | None) -> CheckpointView | None:
    if checkpoint is None:
        return None
    return CheckpointView(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root_hash=b64(checkpoint.root_hash),
        signature=b64(checkpoint.signature),
        signed=china_time(checkpoint.signed_at),
        witnesses=len(checkpoint.cosignatures),
    )


@dataclass(frozen=True)
class ProofView:
    """An entry's inclusion proof against a checkpoint, or why there is none yet.

    ``covered`` is false while the entry is newer than the latest signed
    checkpoint; the next checkpoint will cover it. ``holds`` is the server's
    own check of the proof against the checkpoint's root: shown so that a
    failure is visible, never a substitute for the resident's own check.
    """

    leaf_hash: str
    leaf_hash_hex: str
    covered: bool
    tree_size: int = 0
    audit_path: tuple[str, ...] = ()
    holds: bool = False
    api_proof_url: str = ""
    api_entry_url: str = ""
    api_checkpoint_url: str = f"{API}/checkpoint"
    api_public_key_url: str = f"{API}/public-key"
    api_entries_url: str = ""


def proof_view(
    entry: EntryLike, checkpoint: CheckpointLike | None, audit_path: Sequence[bytes] = ()
) -> ProofView:
    leaf = merkle.leaf_hash(entry.leaf)
    common = {
        "leaf_hash": b64(leaf),
        "leaf_hash_hex": leaf.hex(),
        "api_entry_url": f"{API}/entries/{entry.index}",
    }
    if checkpoint is None or entry.index >= checkpoint.size:
        return ProofView(covered=False, **common)
    size = checkpoint.size
    return ProofView(
        covered=True,
        tree_size=size,
        audit_path=tuple(b64(node) for node in audit_path),
        holds=merkle.verify_inclusion(
            leaf, entry.index, size, list(audit_path), checkpoint.root_hash
        ),
        api_proof_url=f"{API}/entries/{entry.index}/proof?size={size}",
        api_entries_url=f"{API}/entries?start=0&end={size}",
        **common,
    )


@dataclass(frozen=True)
class Filters:
    """The board's filters as the GET form sends them; empty means "all"."""

    community: str = ""
    kind: str = ""
    month: str = ""

    def query(self, **extra: Any) -> str:
        """The query string for these filters and ``extra`` (empty values left out)."""
        pairs = {"community": self.community, "kind": self.kind, "month": self.month, **extra}
        kept = {key: value for key, value in pairs.items() if value not in ("", None)}
        return f"?{urlencode(kept)}" if kept else ""


@dataclass(frozen=True)
class Pager:
    """Links to older and newer entries of the same filtered list.

    The list is keyed by index, not by page number: an append-only log only
    grows at the new end, so "older than entry N" names the same entries
    tomorrow, while "page 3" would shift each time something is published.
    """

    older_url: str | None
    newer_url: str | None


def pager(filters: Filters, shown: Sequence[int], *, has_older: bool, has_newer: bool) -> Pager:
    if not shown:
        return Pager(None, None)
    return Pager(
        older_url=f"{PREFIX}/{filters.query(before=min(shown))}" if has_older else None,
        newer_url=f"{PREFIX}/{filters.query(after=max(shown))}" if has_newer else None,
    )


def kind_options() -> list[tuple[str, str]]:
    return list(KIND_LABELS.items())


# ---------------------------------------------------------------- SVG charts


@dataclass(frozen=True)
class Chart:
    """A figure as a labelled bar chart and the same numbers as a table."""

    chart_id: str
    title: str
    rows: tuple[tuple[str, str], ...]  # (label, formatted value) for the table
    svg: Markup
    unit: str = ""


def number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def percent(value: float) -> str:
    """A rate held as a fraction (0.875) shown as a percentage (87.5%)."""
    return f"{value * 100:.1f}%"


def bar_chart(
    data: Mapping[str, float | None],
    *,
    chart_id: str,
    title: str,
    description: str = "",
    maximum: float | None = None,
    fmt: Callable[[float], str] = number,
) -> Markup:
    """Horizontal bars for ``{label: value}``, as an accessible inline SVG.

    ``role="img"`` with the chart's ``<title>`` and ``<desc>`` gives a screen
    reader the chart's name and numbers; the page shows the same numbers in
    a table next to it, so the SVG holds nothing a resident could only see.
    Bars scale to ``maximum`` (1 for rates held as fractions) or the largest
    value; a negative value draws no bar, and ``None`` (a rate of nothing)
    draws none and reads 无数据.
    """
    rows = [(str(label), None if value is None else float(value)) for label, value in data.items()]
    label_width = min(16 + 15 * max((len(label) for label, _ in rows), default=4), 320)
    value_width = 90
    width = 640
    bar_space = width - label_width - value_width
    row_height = 30
    height = row_height * max(len(rows), 1) + 10
    top = max((value for _, value in rows if value is not None), default=0.0)
    scale = maximum if maximum is not None else top
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "role": "img",
            "class": "chart",
            "viewBox": f"0 0 {width} {height}",
            "width": str(width),
            "height": str(height),
            "aria-labelledby": f"{title_id} {desc_id}",
        },
    )
    ET.SubElement(svg, "title", {"id": title_id}).text = _xml_text(title)
    shown = [(label, _shown(value, fmt)) for label, value in rows]
    summary = description or "；".join(f"{label}：{text}" for label, text in shown)
    ET.SubElement(svg, "desc", {"id": desc_id}).text = _xml_text(summary or NO_DATA)
    if not rows:
        ET.SubElement(svg, "text", {"x": "8", "y": "24", "class": "chart-label"}).text = NO_DATA
    for position, ((label, value), (_, text)) in enumerate(zip(rows, shown, strict=True)):
        y = 5 + position * row_height
        length = 0.0
        if value is not None and value > 0 and scale > 0:
            length = min(value / scale, 1.0) * bar_space
        middle = str(y + 19)
        label_text = ET.SubElement(
            svg,
            "text",
            {"x": str(label_width - 8), "y": middle, "class": "chart-label", "text-anchor": "end"},
        )
        label_text.text = _xml_text(label)
        ET.SubElement(
            svg,
            "rect",
            {
                "x": str(label_width),
                "y": str(y + 4),
                "width": f"{length:.1f}",
                "height": "20",
                "class": "chart-bar",
            },
        )
        value_text = ET.SubElement(
            svg,
            "text",
            {"x": f"{label_width + length + 6:.1f}", "y": middle, "class": "chart-value"},
        )
        value_text.text = text
    return Markup(ET.tostring(svg, encoding="unicode"))  # noqa: S704 (ElementTree escaped it)


NO_DATA = "无数据"


def _shown(value: float | None, fmt: Callable[[float], str]) -> str:
    return NO_DATA if value is None else fmt(value)


def chart(
    data: Mapping[str, float | None],
    *,
    chart_id: str,
    title: str,
    maximum: float | None = None,
    fmt: Callable[[float], str] = number,
    rows: Sequence[tuple[str, str]] | None = None,
) -> Chart:
    """A chart and its table; ``rows`` replaces the table's default ``label, value`` rows."""
    return Chart(
        chart_id=chart_id,
        title=title,
        rows=tuple(rows)
        if rows is not None
        else tuple(
            (str(label), _shown(None if value is None else float(value), fmt))
            for label, value in data.items()
        ),
        svg=bar_chart(data, chart_id=chart_id, title=title, maximum=maximum, fmt=fmt),
    )


RATES = (
    ("response_rate", "响应率"),
    ("resolution_rate", "解决率"),
    ("satisfaction_rate", "满意率"),
)


@dataclass(frozen=True)
class Figures:
    """A month's published figures, as charts with tables and the remaining numbers."""

    charts: tuple[Chart, ...]
    others: tuple[tuple[str, str], ...]


def figures_view(body: Mapping[str, Any], codes: Mapping[str, str] = CODE_LABELS) -> Figures:
    """The charts of a monthly-figures entry's body (``domain.monthly_figures``'s shape).

    Rates are stored as counts and an integer per mille (canonical JSON has
    no floats); a chart shows them as percentages, the table adds the counts
    they come from, so a resident sees "80.0%（4 / 5）" rather than a bare
    percentage of an unknown base.
    """

    def by_code(counts: Mapping[str, int]) -> dict[str, float | None]:
        return {codes.get(code, code): count for code, count in counts.items()}

    charts = [
        chart(by_code(body.get("received", {})), chart_id="received", title="受理事项（按类别）"),
        chart(by_code(body.get("concluded", {})), chart_id="concluded", title="办结事项（按结果）"),
    ]
    rates = {label: _rate(body.get(key)) for key, label in RATES}
    charts.append(
        chart(
            rates,
            chart_id="rates",
            title="三项比率",
            maximum=1.0,
            fmt=percent,
            rows=[(label, ratio_text(body.get(key))) for key, label in RATES],
        )
    )
    mediation = body.get("mediation_closed") or {}
    if mediation:
        charts.append(
            chart(by_code(mediation), chart_id="mediation", title="人民调解结案（按结果）")
        )
    others = [("调解成功率", ratio_text(body.get("mediation_agreement_rate")))]
    minutes = body.get("volunteer_minutes")
    if isinstance(minutes, int):
        others.append(("志愿服务时长", f"{number(minutes / 60)} 小时（{minutes} 分钟）"))
    records = body.get("volunteer_records")
    if isinstance(records, int):
        others.append(("志愿服务记录数", number(records)))
    return Figures(charts=tuple(charts), others=tuple(others))


def _rate(ratio: Any) -> float | None:
    if isinstance(ratio, Mapping) and isinstance(ratio.get("permille"), int):
        return ratio["permille"] / 1000
    return None


def ratio_text(ratio: Any) -> str:
    """``{"numerator": 4, "denominator": 5, "permille": 800}`` → 80.0%（4 / 5）."""
    rate = _rate(ratio)
    if rate is None or not isinstance(ratio, Mapping):
        return f"{NO_DATA}（没有可计算的事项）"
    return f"{percent(rate)}（{ratio.get('numerator')} / {ratio.get('denominator')}）"


# ---------------------------------------------------------------- Atom


def atom_feed(
    entries: Sequence[EntryLike],
    *,
    origin: str,
    title: str,
    updated: datetime,
    self_href: str = f"{PREFIX}/feed.atom",
    alternate_href: str = f"{PREFIX}/",
    codes: Mapping[str, str] = CODE_LABELS,
) -> bytes:
    """The entries as an Atom feed (RFC 4287), newest first as given.

    Ids are ``urn:uuid`` names derived from the log's origin and the entry's
    index: an entry's place in the log never changes, so neither does its
    id, and no host name is baked into it (the board is served under
    whatever name a district gives it). Links are relative references,
    which RFC 4287 §4.2.7 allows and readers resolve against the feed's own
    address. ``updated`` is the publication time: entries are never edited
    (a correction is a new entry with its own id).
    """
    feed = ET.Element("feed", {"xmlns": ATOM_NS, f"{{{XML_NS}}}lang": "zh-CN"})
    _atom(feed, "id", _atom_id(origin, "board"))
    _atom(feed, "title", title)
    _atom(feed, "updated", _iso(updated))
    author = ET.SubElement(feed, "author")
    _atom(author, "name", title)
    ET.SubElement(feed, "link", {"rel": "self", "href": self_href})
    ET.SubElement(feed, "link", {"rel": "alternate", "type": "text/html", "href": alternate_href})
    for entry in entries:
        item = ET.SubElement(feed, "entry")
        _atom(item, "id", _atom_id(origin, f"entry/{entry.index}"))
        heading = f"[{kind_label(entry.kind)}] {entry.title}"
        if entry.supersedes is not None:
            heading = f"【更正】{heading}"
        _atom(item, "title", heading)
        _atom(item, "updated", _iso(entry.published_at))
        _atom(item, "published", _iso(entry.published_at))
        ET.SubElement(
            item,
            "link",
            {"rel": "alternate", "type": "text/html", "href": entry_url(entry.index)},
        )
        ET.SubElement(item, "category", {"term": entry.kind, "label": kind_label(entry.kind)})
        _atom(item, "content", _atom_content(entry, codes), type="text")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _atom_content(entry: EntryLike, codes: Mapping[str, str]) -> str:
    lines = [
        f"第 {entry.index} 条 · {entry.community} · {period_label(entry.period)}"
        f" · {cadence_label(entry.cadence)}",
    ]
    if entry.supersedes is not None:
        lines.append(f"本条更正第 {entry.supersedes} 条（原条目仍然公开）。")
    text = body_text(entry.body, codes)
    if text:
        lines.append(text)
    if entry.references:
        lines.append("相关编号：" + "、".join(entry.references))
    return "\n".join(lines)


def _atom(parent: ET.Element, tag: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = _xml_text(text)
    return element


def _atom_id(origin: str, name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{origin}#{name}").urn


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- templates


_ENVIRONMENT = Environment(
    loader=PackageLoader("shequ_services.disclosure", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    """A board template rendered with ``context`` (autoescaped; undefined names fail)."""
    return _ENVIRONMENT.get_template(template).render(
        prefix=PREFIX, api=API, kind_labels=KIND_LABELS, **context
    )
