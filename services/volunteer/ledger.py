"""The service-hours ledger (志愿服务时长): append-only entries, approved once, totalled.

An entry is never edited or deleted. A check-out writes a ``service`` entry
(pending); a team leader of the volunteer or the community's staff approves
it, which stamps it once and emits ``hours.approved``. A mistake is fixed
by a ``correction`` entry that references the entry it corrects and carries
a signed minute difference; it is approved the same way. An approved
addition is announced as ``hours.approved`` (with ``corrects``), a removal
as ``hours.corrected``, so the disclosure board's monthly sums stay right.

Totals count approved entries only and place every minute in the month the
service was done (the corrected entry's month for a correction).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from shequ_services.volunteer.domain import Change, InvalidRecord

SERVICE, CORRECTION = "service", "correction"
PENDING, APPROVED = "pending", "approved"


class NotAllowed(Exception):
    """The caller may not approve or correct this entry (HTTP 403)."""


class AlreadyApproved(Exception):
    """An entry is approved once (HTTP 409)."""


@dataclass(frozen=True)
class Entry:
    id: str
    kind: str
    volunteer_id: str
    community: str
    teams: tuple[str, ...]
    minutes: int
    served_at: datetime
    recorded_at: datetime
    recorded_by: str
    task_id: str | None = None
    corrects: str | None = None
    reason: str | None = None
    status: str = PENDING
    approved_by: str | None = None
    approved_at: datetime | None = None


def new_entry_id(now: datetime) -> str:
    return f"VH-{now:%Y%m%d}-{uuid.uuid4().hex[:8]}"


def service_entry(
    *,
    volunteer_id: str,
    community: str,
    teams: Sequence[str],
    minutes: int,
    served_at: datetime,
    task_id: str | None,
    recorded_by: str,
    now: datetime,
) -> Entry:
    if minutes < 1:
        raise InvalidRecord("minutes", "service time is at least one minute")
    if served_at > now:
        raise InvalidRecord("served_at", "service time cannot be recorded ahead of time")
    return Entry(
        id=new_entry_id(now),
        kind=SERVICE,
        volunteer_id=volunteer_id,
        community=community,
        teams=tuple(teams),
        minutes=minutes,
        served_at=served_at,
        recorded_at=now,
        recorded_by=recorded_by,
        task_id=task_id,
    )


def correction(
    original: Entry,
    corrections: Iterable[Entry],
    *,
    delta: int,
    reason: str,
    recorded_by: str,
    now: datetime,
) -> Entry:
    """A new entry changing ``original`` by ``delta`` minutes; never below zero in total."""
    if original.kind != SERVICE:
        raise InvalidRecord("corrects", "correct the service entry itself, not a correction")
    if delta == 0:
        raise InvalidRecord("minutes_delta", "a correction changes the time by at least a minute")
    standing = original.minutes + sum(c.minutes for c in corrections if c.corrects == original.id)
    if standing + delta < 0:
        raise InvalidRecord(
            "minutes_delta", f"the entry stands at {standing} minutes; it cannot go below zero"
        )
    return Entry(
        id=new_entry_id(now),
        kind=CORRECTION,
        volunteer_id=original.volunteer_id,
        community=original.community,
        teams=original.teams,
        minutes=delta,
        served_at=original.served_at,
        recorded_at=now,
        recorded_by=recorded_by,
        task_id=original.task_id,
        corrects=original.id,
        reason=reason,
    )


def may_approve(
    entry: Entry,
    *,
    sub: str,
    roles: frozenset[str],
    communities: Sequence[str],
    led_teams: Iterable[str],
) -> bool:
    """Staff of the entry's community, admins, or a leader of one of the volunteer's teams.

    Never the volunteer themself, whatever else they are.
    """
    if sub == entry.volunteer_id:
        return False
    if "admin" in roles or ("community_staff" in roles and entry.community in communities):
        return True
    return "volunteer" in roles and bool(set(led_teams) & set(entry.teams))


def approve(entry: Entry, *, approver: str, now: datetime) -> tuple[Entry, list[Change]]:
    if entry.status == APPROVED:
        raise AlreadyApproved(f"entry {entry.id} was approved at {entry.approved_at}")
    approved = replace(entry, status=APPROVED, approved_by=approver, approved_at=now)
    if entry.minutes > 0:
        data: dict[str, Any] = {
            "ledger_id": entry.id,
            "community": entry.community,
            "minutes": entry.minutes,
            "at": entry.served_at,
        }
        if entry.corrects is not None:
            data["corrects"] = entry.corrects
        return approved, [Change("hours.approved", data)]
    return approved, [
        Change(
            "hours.corrected",
            {
                "ledger_id": entry.id,
                "corrects": entry.corrects,
                "community": entry.community,
                "minutes_removed": -entry.minutes,
                "at": entry.served_at,
            },
        )
    ]


def month_key(entry: Entry, tz: ZoneInfo) -> str:
    return entry.served_at.astimezone(tz).strftime("%Y-%m")


def totals(
    entries: Iterable[Entry], *, by: str, tz: ZoneInfo, month: str | None = None
) -> dict[tuple[str, str], int]:
    """Approved minutes per (group, month); ``by`` is volunteer, team or community.

    A volunteer in two teams counts in full for each team: team totals say what
    each team's members did, and do not add up to the community's.
    """
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        if entry.status != APPROVED:
            continue
        entry_month = month_key(entry, tz)
        if month is not None and entry_month != month:
            continue
        groups: Sequence[str]
        if by == "volunteer":
            groups = (entry.volunteer_id,)
        elif by == "team":
            groups = entry.teams
        else:
            groups = (entry.community,)
        for group in groups:
            sums[(group, entry_month)] += entry.minutes
    return dict(sorted(sums.items()))


CSV_COLUMNS = (
    "ledger_id", "kind", "volunteer_id", "community", "teams", "minutes", "served_at",
    "task_id", "corrects", "status", "approved_by", "approved_at",
)  # fmt: skip


def to_csv(entries: Iterable[Entry]) -> str:
    """The ledger as CSV (UTF-8 with BOM, so spreadsheet programs read the Chinese)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.id,
                e.kind,
                e.volunteer_id,
                e.community,
                " ".join(e.teams),
                e.minutes,
                e.served_at.isoformat(),
                e.task_id or "",
                e.corrects or "",
                e.status,
                e.approved_by or "",
                e.approved_at.isoformat() if e.approved_at else "",
            ]  # fmt: skip
        )
    return out.getvalue()


def certificate_lines(
    entries: Iterable[Entry], *, volunteer_id: str, tz: ZoneInfo
) -> tuple[list[dict[str, Any]], int]:
    """The approved months of one volunteer and the grand total, for the certificate."""
    per_month = totals(
        (e for e in entries if e.volunteer_id == volunteer_id), by="volunteer", tz=tz
    )
    lines = [
        {"month": month, "minutes": minutes, "hours": hours_text(minutes)}
        for (_, month), minutes in per_month.items()
    ]
    return lines, sum(per_month.values())


def hours_text(minutes: int) -> str:
    """``95`` → ``1小时35分钟``: how the certificate and the totals read in Chinese."""
    hours, rest = divmod(minutes, 60)
    return f"{hours}小时{rest}分钟" if hours else f"{rest}分钟"


def by_id(entries: Iterable[Entry]) -> Mapping[str, Entry]:
    return {entry.id: entry for entry in entries}
