"""Mediation rules: cases, parties and their masking, time limits, agreements, confirmation.

Plain Python: no framework, no database. Personal data exists here only in
the clear, as the parties' own words; sealing it at rest is the store's job
(``sealing``); who may see it unmasked is the service's authorisation table
(``access.yaml``: ``mediation.case.read_parties``).

The lifecycle table is in ``workflow``, the roster and recusal rules in
``roster``.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shequ.masking import mask_address, mask_id_number, mask_name, mask_phone

PARTY_ROLES = ("applicant", "respondent", "third_party")
#: The person-data fields of a party: sealed at rest, masked for most readers.
PARTY_FIELDS = ("name", "phone", "id_number", "address", "building")
#: States in which mediation is still running: the time limit counts only here.
RUNNING = ("intake", "assigned", "in_session")


class MediationError(Exception):
    """Base of the domain's refusals."""


class InvalidCase(MediationError):
    """Input breaks a rule; ``errors`` maps fields to messages (422)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


@dataclass(frozen=True)
class Policy:
    """Time limits as policy data (``policy.yaml``), not code."""

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    time_limit_months: int = 1
    warn_days_before: int = 5
    max_extension_days: int = 30
    confirmation_window_days: int = 30

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        return cls(
            timezone=ZoneInfo(str(data.get("timezone", "Asia/Shanghai"))),
            time_limit_months=int(data.get("time_limit_months", 1)),
            warn_days_before=int(data.get("warn_days_before", 5)),
            max_extension_days=int(data.get("max_extension_days", 30)),
            confirmation_window_days=int(data.get("confirmation_window_days", 30)),
        )


@dataclass(frozen=True)
class Party:
    id: str
    role: str
    name: str
    phone: str | None = None
    id_number: str | None = None
    address: str | None = None
    #: The building's registry id (e.g. ``qy-01-b02``), for the same-building recusal rule.
    building: str | None = None


@dataclass(frozen=True)
class Clock:
    """The case's time limit: one deadline, a warning before it, each alert raised once."""

    deadline: datetime
    warn_at: datetime
    warned_at: datetime | None = None
    overdue_at: datetime | None = None
    stopped_at: datetime | None = None

    def next_due(self) -> datetime | None:
        if self.stopped_at is not None:
            return None
        if self.warned_at is None and self.warn_at < self.deadline:
            return self.warn_at
        if self.overdue_at is None:
            return self.deadline
        return None


@dataclass(frozen=True)
class Case:
    id: str
    incident_id: str | None
    community: str
    dispute_type: str
    status: str
    opened_at: datetime
    clock: Clock
    version: int = 1
    event_seq: int = 1
    source: str = "incident"
    facts: str | None = None
    parties: list[Party] = field(default_factory=list)
    mediator_id: str | None = None
    recusal: dict[str, Any] | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    agreement: dict[str, Any] | None = None
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    confirmation: dict[str, Any] | None = None
    referral: dict[str, Any] | None = None
    extensions: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    closed_at: datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def new_case_id(community: str, now: datetime, tz: ZoneInfo) -> str:
    """The case number: community and year (local), then a random part that cannot collide."""
    return f"MED-{community}-{now.astimezone(tz):%Y}-{uuid.uuid4().hex[:8]}"


def new_clock(opened_at: datetime, policy: Policy) -> Clock:
    """The time limit: end of the local day ``time_limit_months`` after opening."""
    local = opened_at.astimezone(policy.timezone).date()
    deadline = end_of_day(add_months(local, policy.time_limit_months), policy.timezone)
    return Clock(deadline=deadline, warn_at=deadline - timedelta(days=policy.warn_days_before))


def case_for_incident(
    *,
    incident_id: str,
    category: str,
    opens_mediation: bool,
    community: str,
    now: datetime,
    policy: Policy | None = None,
) -> Case | None:
    """A new case for a dispute incident, or None when the category is not a dispute."""
    if not opens_mediation:
        return None
    policy = policy or Policy()
    return Case(
        id=new_case_id(community, now, policy.timezone),
        incident_id=incident_id,
        community=community,
        dispute_type=category,
        status="intake",
        opened_at=now,
        clock=new_clock(now, policy),
        source="incident",
    )


def walk_in_case(
    *,
    community: str,
    dispute_type: str,
    facts: str,
    parties: Iterable[Mapping[str, Any]],
    now: datetime,
    policy: Policy,
    incident_id: str | None = None,
) -> Case:
    """A case opened directly by staff or a mediator (a walk-in, 来访)."""
    numbered = number_parties([], parties)
    check_parties(numbered)
    return Case(
        id=new_case_id(community, now, policy.timezone),
        incident_id=incident_id,
        community=community,
        dispute_type=dispute_type,
        status="intake",
        opened_at=now,
        clock=new_clock(now, policy),
        source="walk_in",
        facts=facts,
        parties=numbered,
    )


def number_parties(existing: list[Party], new: Iterable[Mapping[str, Any]]) -> list[Party]:
    """Append parties with ids P1, P2, ... that never repeat within a case."""
    used = [int(p.id[1:]) for p in existing if p.id[1:].isdigit()]
    next_no = max(used, default=0) + 1
    added = []
    for offset, values in enumerate(new):
        kept = {k: values.get(k) for k in ("role", *PARTY_FIELDS)}
        added.append(Party(id=f"P{next_no + offset}", **kept))
    return [*existing, *added]


_PHONE = re.compile(r"^\+?[0-9][0-9 -]{5,19}$")
_ID_NUMBER = re.compile(r"^[0-9]{17}[0-9Xx]$")


def check_parties(parties: list[Party]) -> None:
    """The fields a party must have, and the formats a phone and an ID number take."""
    errors: dict[str, list[str]] = {}
    for index, party in enumerate(parties):
        where = f"parties.{index}"
        if party.role not in PARTY_ROLES:
            errors.setdefault(f"{where}.role", []).append(f"one of {', '.join(PARTY_ROLES)}")
        if not (party.name or "").strip():
            errors.setdefault(f"{where}.name", []).append("a party needs a name")
        if party.phone and not _PHONE.match(party.phone):
            errors.setdefault(f"{where}.phone", []).append("not a phone number")
        if party.id_number and not _ID_NUMBER.match(party.id_number):
            errors.setdefault(f"{where}.id_number", []).append(
                "a resident ID number has 17 digits and a digit or X"
            )
    if errors:
        raise InvalidCase(errors)


class StaleCase(MediationError):
    """The case changed since the caller read it (409 with ``current_version``)."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(f"case is at version {actual}, the request expected {expected}")


class CaseNotRunning(MediationError):
    """Parties change only while mediation runs (409)."""


def add_parties(
    case: Case,
    new: Iterable[Mapping[str, Any]],
    *,
    facts: str | None,
    expected_version: int,
    actor: str,
    at: datetime,
) -> Case:
    """The case with more parties (and the facts, if given), and a history entry naming them."""
    if expected_version != case.version:
        raise StaleCase(expected_version, case.version)
    if case.status not in RUNNING:
        raise CaseNotRunning(f"parties cannot change on a case in state {case.status!r}")
    parties = number_parties(case.parties, new)
    check_parties(parties)
    entry = {
        "at": at,
        "actor": actor,
        "action": "add_parties",
        "from": case.status,
        "to": case.status,
        "fields": {"party_ids": [p.id for p in parties[len(case.parties) :]]},
    }
    return replace(case, parties=parties, facts=facts or case.facts, history=[*case.history, entry])


# -- who sees what ------------------------------------------------------------------


def masked_party(party: Party) -> dict[str, Any]:
    return {
        "id": party.id,
        "role": party.role,
        "name": mask_name(party.name),
        "phone": mask_phone(party.phone) if party.phone else None,
        "id_number": mask_id_number(party.id_number) if party.id_number else None,
        "address": mask_address(party.address) if party.address else None,
        "building": None,
        "masked": True,
    }


def clear_party(party: Party) -> dict[str, Any]:
    return {
        "id": party.id,
        "role": party.role,
        "name": party.name,
        "phone": party.phone,
        "id_number": party.id_number,
        "address": party.address,
        "building": party.building,
        "masked": False,
    }


# -- time ----------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, or the month's last day if it has none (1-31 → 2-28)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def end_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz) - timedelta(microseconds=1)


def extend_clock(clock: Clock, days: int, policy: Policy) -> Clock:
    """An extension moves the deadline; alerts already raised for the old one are re-armed."""
    deadline = clock.deadline + timedelta(days=days)
    return Clock(deadline=deadline, warn_at=deadline - timedelta(days=policy.warn_days_before))


def stop_clock(clock: Clock, at: datetime) -> Clock:
    return Clock(clock.deadline, clock.warn_at, clock.warned_at, clock.overdue_at, stopped_at=at)


def due_alerts(clock: Clock, now: datetime) -> list[str]:
    """The alerts due at ``now``, each once: ``warned`` then ``overdue``."""
    if clock.stopped_at is not None:
        return []
    due = []
    if clock.warned_at is None and clock.warn_at <= now:
        due.append("warned")
    if clock.overdue_at is None and clock.deadline <= now:
        due.append("overdue")
    return due


def mark_raised(clock: Clock, alerts: list[str], now: datetime) -> Clock:
    return Clock(
        clock.deadline,
        clock.warn_at,
        now if "warned" in alerts else clock.warned_at,
        now if "overdue" in alerts else clock.overdue_at,
        clock.stopped_at,
    )


# -- agreement and judicial confirmation ---------------------------------------------


def check_agreement(case: Case, agreement: Mapping[str, Any], today: date) -> dict[str, Any]:
    """The statutory contents of an agreement (人民调解法 art. 29), or ``InvalidCase``.

    Parties (those on the case, at least an applicant and a respondent), the
    main facts and the issues, each agreed obligation with who performs it,
    how and by when, and every party's and the mediator's signature. The
    agreement takes effect on ``signed_on`` (the day the last signature was
    given), which cannot be in the future.
    """
    errors: dict[str, list[str]] = {}
    roles = {p.role for p in case.parties}
    if not {"applicant", "respondent"} <= roles:
        errors.setdefault("parties", []).append(
            "an agreement needs an applicant and a respondent on the case"
        )
    ids = {p.id for p in case.parties}
    for index, obligation in enumerate(agreement.get("obligations") or []):
        if obligation.get("party_id") not in ids:
            errors.setdefault(f"agreement.obligations.{index}.party_id", []).append(
                "not a party of this case"
            )
    signed = {s.get("party_id") for s in agreement.get("signatures") or [] if s.get("signed")}
    if ids and not ids <= signed:
        errors.setdefault("agreement.signatures", []).append(
            "every party signs: missing " + ", ".join(sorted(ids - signed))
        )
    if not agreement.get("mediator_signed"):
        errors.setdefault("agreement.mediator_signed", []).append("the mediator signs too")
    signed_on = agreement.get("signed_on")
    if isinstance(signed_on, date) and signed_on > today:
        errors.setdefault("agreement.signed_on", []).append("cannot be in the future")
    if errors:
        raise InvalidCase(errors)
    return dict(agreement)


def confirmation_deadline(effective_on: date, policy: Policy) -> date:
    """The last day to apply jointly for judicial confirmation (人民调解法 art. 33: 30 days)."""
    return effective_on + timedelta(days=policy.confirmation_window_days)


def check_filing(case: Case, filed_on: date, today: date) -> None:
    """A filing within the window, not before the agreement nor in the future."""
    confirmation = case.confirmation or {}
    if confirmation.get("status") in ("filed", "confirmed", "rejected"):
        raise InvalidCase({"filed_on": [f"confirmation was already {confirmation['status']}"]})
    deadline = date.fromisoformat(confirmation["deadline"])
    effective_on = date.fromisoformat(case.agreement["signed_on"])  # type: ignore[index]
    if filed_on > today:
        raise InvalidCase({"filed_on": ["cannot be in the future"]})
    if filed_on < effective_on:
        raise InvalidCase({"filed_on": ["before the agreement took effect"]})
    if filed_on > deadline:
        raise ConfirmationWindowClosed(deadline)


class ConfirmationWindowClosed(MediationError):
    """Filing after the 30-day window: the court would not accept it (409)."""

    def __init__(self, deadline: date) -> None:
        self.deadline = deadline
        super().__init__(
            f"the window for judicial confirmation ended on {deadline.isoformat()}; "
            "the parties may still sue on the agreement"
        )


# -- referral to litigation (诉非对接) ------------------------------------------------


def referral_packet(case: Case) -> dict[str, Any]:
    """What the court needs to take over a failed case, and nothing more.

    The parties as the court identifies them (role, name, ID number, address,
    phone), the dispute type and the facts as recorded, when mediation ran,
    how many sessions were held and why it failed. Not the session notes, the
    recusal record, the mediator's relatives or anyone's building.
    """
    failed = next((h for h in reversed(case.history) if h["action"] == "fail"), None)
    return {
        "case_id": case.id,
        "community": case.community,
        "dispute_type": case.dispute_type,
        "facts": case.facts,
        "parties": [
            {k: v for k, v in clear_party(p).items() if k not in ("building", "masked")}
            for p in case.parties
        ],
        "mediation_opened_at": case.opened_at,
        "mediation_failed_at": failed["at"] if failed else None,
        "failure_reason": (failed or {}).get("fields", {}).get("reason"),
        "sessions_held": sum(1 for s in case.sessions if s.get("held")),
        "mediator_id": case.mediator_id,
        "court": (case.referral or {}).get("court"),
    }


def agreement_rate(counts: Mapping[str, int]) -> float | None:
    """Agreed cases over all closed ones; None when nothing closed (not 0: nothing to rate)."""
    closed = sum(counts.values())
    return round(counts.get("agreed", 0) / closed, 4) if closed else None
