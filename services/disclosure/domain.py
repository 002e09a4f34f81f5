"""Disclosure rules: what a public entry is, what it says, and the monthly figures.

An entry is appended once and never edited: a correction is a new entry that
names the one it supersedes, and both stay on the board. What the log hashes
is the entry's *canonical bytes* (``canonical_bytes``): JSON with sorted keys,
no insignificant whitespace, UTF-8, and only strings, integers, booleans,
null, lists and objects (a float has no single spelling, so none is
allowed). Anyone can re-derive those bytes from the fields, or hash the bytes
the API hands out as they are.

Event-fed entries are built only from event fields that carry no personal
data, and a sensitive category (pregnancy, hospitalisation, rentals,
migrants, family matters) is published without its category and without a
reference: the board says that a personal matter was received or concluded,
nothing that links it to a person or a case.

Monthly figures are computed from the log's own entries (``monthly_figures``),
so anyone holding a copy of the log can recompute them; mediation and
volunteer figures come as counts only (no per-case entries), as the parties
of a small community's mediation would be recognisable from them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from shequ_services.disclosure import guard

KINDS = {
    "incident_summary": "事项受理",
    "incident_closed": "事项办结",
    "mediation_statistics": "人民调解统计",
    "volunteer_hours": "志愿服务时长",
    "finance": "财务公开",
    "decision": "决策公开",
    "notice": "通知公告",
    "staff_evaluation": "评议",
}
CADENCES = {
    "permanent": "长期公开",
    "periodic": "定期公开",
    "quarterly": "季度公开",
    "ad_hoc": "即时公开",
}
#: The kinds staff write through the API; the rest come from events and figures.
STAFF_KINDS = ("finance", "decision", "notice", "staff_evaluation", "mediation_statistics",
               "volunteer_hours")  # fmt: skip
PERIOD_PATTERN = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])|-Q[1-4])?$")
LOCAL_TIME = ZoneInfo("Asia/Shanghai")

SENSITIVE_RECEIVED = "受理个人事项一件（内容依法不予公开）"
SENSITIVE_CLOSED = "办结个人事项一件（内容依法不予公开）"
SENSITIVE_RATED = "个人事项评价一件（内容依法不予公开）"
PERSONAL_CATEGORY = "personal"

#: How each conclusion of an incident reads on the board.
CONCLUSIONS = {
    "closed_resolved": "已办结",
    "closed_unresolved": "已办结（未解决）",
    "rejected": "不予受理",
    "merged": "合并办理",
}
MEDIATION_OUTCOMES = ("agreed", "failed", "referred", "withdrawn")
SATISFIED_SCORES = frozenset({4, 5})
FIGURES_VERSION = 1


class DisclosureError(Exception):
    pass


class InvalidEntry(DisclosureError):
    """A draft breaks a rule of the log; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class EntryDraft:
    kind: str
    cadence: str
    community: str
    period: str
    title: str
    body: Mapping[str, Any]
    references: tuple[str, ...] = ()
    supersedes: int | None = None
    #: ``events`` for what the platform wrote from events, ``staff`` for what a
    #: person published: the monthly figures count only the former.
    origin: str = "events"


@dataclass(frozen=True)
class Entry:
    index: int
    kind: str
    cadence: str
    community: str
    period: str
    title: str
    body: Mapping[str, Any]
    references: tuple[str, ...]
    supersedes: int | None
    published_at: datetime
    leaf: bytes = field(repr=False)
    origin: str = "events"


def canonical_bytes(value: Any) -> bytes:
    _refuse_floats(value, "entry")
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def leaf_content(entry_index: int, draft: EntryDraft, published_at: datetime) -> dict[str, Any]:
    """Everything an entry says, as the log hashes it (its index and time included)."""
    return {
        "v": 1,
        "index": entry_index,
        "kind": draft.kind,
        "cadence": draft.cadence,
        "community": draft.community,
        "period": draft.period,
        "title": draft.title,
        "body": dict(draft.body),
        "references": list(draft.references),
        "supersedes": draft.supersedes,
        "origin": draft.origin,
        "published_at": published_at.isoformat(timespec="milliseconds"),
    }


def seal(draft: EntryDraft, *, index: int, published_at: datetime) -> Entry:
    """Give a checked draft its place in the log and the bytes the tree hashes."""
    check(draft, size=index)
    leaf = canonical_bytes(leaf_content(index, draft, published_at))
    return Entry(
        index=index,
        kind=draft.kind,
        cadence=draft.cadence,
        community=draft.community,
        period=draft.period,
        title=draft.title,
        body=dict(draft.body),
        references=tuple(draft.references),
        supersedes=draft.supersedes,
        published_at=published_at,
        leaf=leaf,
        origin=draft.origin,
    )


def check(draft: EntryDraft, *, size: int) -> None:
    """The rules every entry keeps, whoever wrote it; ``size`` is the log's current size."""
    if draft.kind not in KINDS:
        raise InvalidEntry("kind", f"unknown kind {draft.kind!r}; one of {', '.join(KINDS)}")
    if draft.origin not in ("events", "staff"):
        raise InvalidEntry("origin", f"unknown origin {draft.origin!r}")
    if draft.cadence not in CADENCES:
        raise InvalidEntry(
            "cadence", f"unknown cadence {draft.cadence!r}; one of {', '.join(CADENCES)}"
        )
    if not PERIOD_PATTERN.match(draft.period):
        raise InvalidEntry("period", "a period is a month (2026-11), a quarter (2026-Q4) or a year")
    if draft.supersedes is not None and not 0 <= draft.supersedes < size:
        raise InvalidEntry("supersedes", f"there is no entry {draft.supersedes} to correct")
    _refuse_floats(draft.body, "body")


def guarded(draft: EntryDraft) -> tuple[EntryDraft, Mapping[str, int]]:
    """An event-fed draft minus any personal data, and what was removed, by kind.

    Event-fed entries are built from codes and counts, so this should find
    nothing; it runs anyway, because a category name or a future field is
    text someone else wrote.
    """
    redacted, found = guard.redact_fields({"title": draft.title, "body": dict(draft.body)})
    return replace(draft, title=redacted["title"], body=redacted["body"]), found


def parse_leaf(leaf: bytes) -> dict[str, Any]:
    """The content a leaf's bytes hold; raises ValueError if they are not an entry."""
    content = json.loads(leaf.decode("utf-8"))
    if not isinstance(content, dict) or content.get("v") != 1:
        raise ValueError("not a version 1 disclosure entry")
    return content


def fields_match_leaf(entry: Entry) -> bool:
    """Do the fields shown beside an entry say what its hashed bytes say?"""
    return entry.leaf == canonical_bytes(
        leaf_content(
            entry.index,
            EntryDraft(
                entry.kind,
                entry.cadence,
                entry.community,
                entry.period,
                entry.title,
                entry.body,
                entry.references,
                entry.supersedes,
                entry.origin,
            ),
            entry.published_at,
        )
    )


def month_of(moment: datetime) -> str:
    return moment.astimezone(LOCAL_TIME).strftime("%Y-%m")


def previous_month(today: date) -> str:
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{month:02d}"


# Entries fed by grid events (件件有回应, 事事有着落).


def incident_received(
    *,
    incident_id: str,
    category: str,
    category_name: str,
    sensitive: bool,
    community: str,
    urgency: str,
    reported_at: datetime,
) -> EntryDraft:
    """The public notice that an incident was received."""
    if sensitive:
        return EntryDraft(
            kind="incident_summary",
            cadence="ad_hoc",
            community=community,
            period=month_of(reported_at),
            title=SENSITIVE_RECEIVED,
            body={"category": None, "urgency": None},
        )
    return EntryDraft(
        kind="incident_summary",
        cadence="ad_hoc",
        community=community,
        period=month_of(reported_at),
        title=f"受理事项：{category_name}",
        body={"category": category, "urgency": urgency},
        references=(incident_id,),
    )


def incident_concluded(
    *,
    incident_id: str,
    category: str,
    sensitive: bool,
    community: str,
    outcome: str,
    answered_in_time: bool | None,
    at: datetime,
) -> EntryDraft:
    """The public notice that an incident was closed, rejected or merged."""
    if outcome not in CONCLUSIONS:
        raise InvalidEntry("outcome", f"unknown conclusion {outcome!r}")
    body = {
        "category": None if sensitive else category,
        "outcome": outcome,
        "answered_in_time": answered_in_time,
    }
    if sensitive:
        return EntryDraft("incident_closed", "ad_hoc", community, month_of(at), SENSITIVE_CLOSED,
                          body)  # fmt: skip
    return EntryDraft(
        kind="incident_closed",
        cadence="ad_hoc",
        community=community,
        period=month_of(at),
        title=f"{CONCLUSIONS[outcome]}：{incident_id}",
        body=body,
        references=(incident_id,),
    )


def incident_rated(
    *,
    incident_id: str,
    category: str,
    sensitive: bool,
    community: str,
    outcome: str,
    score: int,
    at: datetime,
) -> EntryDraft:
    """A resident's rating of how a case was handled (群众评议): the score, never the comment."""
    body = {"category": None if sensitive else category, "outcome": outcome, "score": score}
    if sensitive:
        return EntryDraft("staff_evaluation", "ad_hoc", community, month_of(at), SENSITIVE_RATED,
                          body)  # fmt: skip
    return EntryDraft(
        kind="staff_evaluation",
        cadence="ad_hoc",
        community=community,
        period=month_of(at),
        title=f"群众评价：{incident_id} {score} 分",
        body=body,
        references=(incident_id,),
    )


# Monthly figures, computed from the log's own entries.


@dataclass(frozen=True)
class Ratio:
    numerator: int
    denominator: int

    def as_body(self) -> dict[str, Any]:
        """Counts and a rate in per mille as an integer: canonical JSON has no floats."""
        permille = None if not self.denominator else round(1000 * self.numerator / self.denominator)
        return {
            "numerator": self.numerator,
            "denominator": self.denominator,
            "permille": permille,
        }


def monthly_figures(entries: Iterable[Entry], *, community: str, month: str) -> dict[str, Any]:
    """A community's figures for one month, from the entries of that month.

    The definitions (also in docs/disclosure.md), by the month in which each
    thing happened, so a month's figures settle when the month ends:

    * received: incident entries (``incident_summary``, ad hoc) by category,
      sensitive ones as ``personal``;
    * concluded: ``incident_closed`` entries by outcome;
    * response rate: concluded incidents answered by the acknowledge deadline
      / concluded incidents with an acknowledge clock;
    * resolution rate: closed_resolved / (closed_resolved + closed_unresolved);
    * satisfaction rate: ratings of 4 or 5 / ratings, one voice per incident
      (its latest rating in the month; sensitive ratings, which carry no
      reference, each count once);
    * mediation and volunteer figures: the sums of that month's published
      ``mediation_statistics`` and ``volunteer_hours`` count entries.

    Only entries the platform wrote from events count (``origin``): what staff
    publish is shown on the board but cannot move the figures.
    """
    received: Counter[str] = Counter()
    concluded: Counter[str] = Counter()
    answered = answered_in_time = 0
    latest_score: dict[str, int] = {}
    unlinked_scores: list[int] = []
    mediation: Counter[str] = Counter()
    volunteer_minutes = volunteer_records = 0
    month_entries = [e for e in entries if e.community == community and e.period == month]
    corrected = {e.supersedes for e in month_entries if e.supersedes is not None}
    for entry in sorted(month_entries, key=lambda e: e.index):
        # A corrected entry's figures are replaced by its correction's; the
        # figures entries themselves are outputs, never inputs.
        if entry.index in corrected or is_figures(entry) or entry.origin != "events":
            continue
        body = entry.body
        if entry.kind == "incident_summary" and entry.cadence == "ad_hoc":
            received[body.get("category") or PERSONAL_CATEGORY] += 1
        elif entry.kind == "incident_closed":
            concluded[body["outcome"]] += 1
            if body.get("answered_in_time") is not None:
                answered += 1
                answered_in_time += bool(body["answered_in_time"])
        elif entry.kind == "staff_evaluation" and "score" in body:
            if entry.references:
                latest_score[entry.references[0]] = body["score"]
            else:
                unlinked_scores.append(body["score"])
        elif entry.kind == "mediation_statistics" and body.get("source") == "events":
            mediation.update({k: v for k, v in body.get("closed", {}).items()})
        elif entry.kind == "volunteer_hours" and body.get("source") == "events":
            volunteer_minutes += body.get("minutes", 0)
            volunteer_records += body.get("records", 0)
    scores = [*latest_score.values(), *unlinked_scores]
    return {
        "figures": FIGURES_VERSION,
        "received": dict(sorted(received.items())),
        "concluded": dict(sorted(concluded.items())),
        "response_rate": Ratio(answered_in_time, answered).as_body(),
        "resolution_rate": Ratio(
            concluded["closed_resolved"],
            concluded["closed_resolved"] + concluded["closed_unresolved"],
        ).as_body(),
        "satisfaction_rate": Ratio(
            sum(score in SATISFIED_SCORES for score in scores), len(scores)
        ).as_body(),
        "mediation_closed": dict(sorted(mediation.items())),
        "mediation_agreement_rate": Ratio(
            mediation["agreed"], mediation["agreed"] + mediation["failed"] + mediation["referred"]
        ).as_body(),
        "volunteer_minutes": volunteer_minutes,
        "volunteer_records": volunteer_records,
    }


def figures_entry(
    figures: Mapping[str, Any], *, community: str, month: str, supersedes: int | None
) -> EntryDraft:
    title = f"{month} 月度公开数据" + ("（更正）" if supersedes is not None else "")
    return EntryDraft(
        kind="incident_summary",
        cadence="periodic",
        community=community,
        period=month,
        title=title,
        body=dict(figures),
        supersedes=supersedes,
    )


def is_figures(entry: Entry) -> bool:
    periodic = entry.kind == "incident_summary" and entry.cadence == "periodic"
    return periodic and "figures" in entry.body


def mediation_statistics(
    closed: Mapping[str, int], *, community: str, month: str, supersedes: int | None
) -> EntryDraft:
    """The month's mediation cases closed, by outcome: counts only, from events."""
    return EntryDraft(
        kind="mediation_statistics",
        cadence="periodic",
        community=community,
        period=month,
        title=f"{month} 人民调解结案统计" + ("（更正）" if supersedes is not None else ""),
        body={"source": "events", "closed": dict(sorted(closed.items()))},
        supersedes=supersedes,
    )


def volunteer_hours(
    minutes: int, records: int, *, community: str, month: str, supersedes: int | None
) -> EntryDraft:
    """The month's approved volunteer service time: totals only, from events."""
    return EntryDraft(
        kind="volunteer_hours",
        cadence="periodic",
        community=community,
        period=month,
        title=f"{month} 志愿服务时长" + ("（更正）" if supersedes is not None else ""),
        body={"source": "events", "minutes": minutes, "records": records},
        supersedes=supersedes,
    )


def _refuse_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise InvalidEntry(path, "numbers in an entry are integers (write 12.5 as a string)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEntry(path, "object keys are strings")
            _refuse_floats(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            _refuse_floats(item, f"{path}[{position}]")
