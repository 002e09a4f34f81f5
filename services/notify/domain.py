"""Notify's rules: who hears what, when, and what happens when a channel fails.

Everything here is pure: rules and contact points come in as values, time
comes in as an argument (so tests control the clock), and the randomness of
the back-off jitter is a parameter. The service and the delivery worker feed
it from the database and the real clock.

Recipients are ids, never people's data: ``reporter-of:<incident>``,
``grid_worker:<cell>``, ``department:<code>``, ``staff:<community>``,
``mediation_parties:<case>``, ``volunteers:<cell>``, or a user's subject. The
contact points those ids resolve to live only in notify's own database.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

#: An audience names a role relative to the event; each maps to recipient ids
#: built from payload fields, listed here so a rule can be checked against
#: the fields its event type actually has.
AUDIENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "reporter": ("incident_id",),
    "grid_worker": ("grid_cell",),
    "department": ("department",),
    "co_departments": ("co_departments",),
    "staff": ("community",),
    "mediation_parties": ("case_id",),
    "volunteers": ("grid_cell",),
    "volunteer": ("volunteer_id",),
    "mediator": ("mediator_id",),
}
AUDIENCES = tuple(AUDIENCE_FIELDS)

IMMEDIATE = "immediate"
NORMAL = "normal"
DIGEST = "digest"
URGENCIES = (IMMEDIATE, NORMAL, DIGEST)

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"

CHANNEL_KINDS = ("log", "webhook", "email", "sms", "wecom")


@dataclass(frozen=True)
class Rule:
    """When ``event_type`` happens, tell ``audiences`` with ``template``."""

    id: str
    event_type: str
    audiences: tuple[str, ...]
    template: str
    urgency: str = NORMAL
    #: Whether a failing channel may fall back to the recipient's next one.
    fallback: bool = True
    enabled: bool = True


@dataclass(frozen=True)
class Template:
    """A message in zh-CN and/or English; ``subject`` is used where a channel has one."""

    id: str
    body: Mapping[str, str]
    subject: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactChannel:
    kind: str
    address: str


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which non-urgent messages wait; ``start`` > ``end`` spans midnight."""

    start: time
    end: time


@dataclass(frozen=True)
class Contact:
    recipient: str
    channels: tuple[ContactChannel, ...]
    language: str = DEFAULT_LANGUAGE
    timezone: str = "Asia/Shanghai"
    quiet_hours: QuietHours | None = None
    digest: bool = False


@dataclass(frozen=True)
class Planned:
    """One notification the event calls for: one recipient, one rule."""

    key: str
    event_id: str
    event_type: str
    recipient: str
    audience: str
    rule: str
    template: str
    urgency: str
    fallback: bool
    subject_ref: str


class RuleError(ValueError):
    """A rule or template that cannot be stored; ``errors`` maps fields to messages."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(str(errors))
        self.errors = errors


def check_rule(rule: Rule, payload_fields: Iterable[str] | None, templates: set[str]) -> None:
    """Refuse a rule that could never be sent: unknown event, audience or template.

    ``payload_fields`` is the event type's declared payload (None: no such
    event type). An audience must be derivable from those fields, so a rule
    for a ``department`` on an event without one is refused now, not
    silently sent to nobody later.
    """
    errors: dict[str, list[str]] = {}
    if payload_fields is None:
        errors["event_type"] = [f"no event type {rule.event_type!r} is consumed by notify"]
    known = set(payload_fields or ())
    for audience in rule.audiences:
        needs = AUDIENCE_FIELDS.get(audience)
        if needs is None:
            errors.setdefault("audiences", []).append(
                f"unknown audience {audience!r}; one of {', '.join(AUDIENCES)}"
            )
        elif payload_fields is not None and not known.intersection(needs):
            errors.setdefault("audiences", []).append(
                f"{audience!r} needs the payload field {needs[0]!r}, which "
                f"{rule.event_type} does not carry"
            )
    if not rule.audiences:
        errors["audiences"] = ["name at least one audience"]
    if rule.urgency not in URGENCIES:
        errors["urgency"] = [f"must be one of {', '.join(URGENCIES)}"]
    if rule.template not in templates:
        errors["template"] = [f"no template {rule.template!r}"]
    if errors:
        raise RuleError(errors)


def recipients_for(audience: str, data: Mapping[str, Any]) -> list[str]:
    """The recipient ids an audience means for one event's payload."""
    if audience == "reporter":
        return [f"reporter-of:{data['incident_id']}"] if data.get("incident_id") else []
    if audience == "grid_worker":
        return [f"grid_worker:{data['grid_cell']}"] if data.get("grid_cell") else []
    if audience == "department":
        return [f"department:{data['department']}"] if data.get("department") else []
    if audience == "co_departments":
        codes = list(data.get("co_departments") or [])
        if data.get("co_department"):
            codes.append(data["co_department"])
        return [f"department:{code}" for code in dict.fromkeys(codes)]
    if audience == "staff":
        return [f"staff:{data['community']}"] if data.get("community") else []
    if audience == "mediation_parties":
        return [f"mediation_parties:{data['case_id']}"] if data.get("case_id") else []
    if audience == "volunteers":
        return [f"volunteers:{data['grid_cell']}"] if data.get("grid_cell") else []
    if audience == "volunteer":
        # The volunteer's own account: the offer is theirs to answer (token sub).
        return [data["volunteer_id"]] if data.get("volunteer_id") else []
    if audience == "mediator":
        return [data["mediator_id"]] if data.get("mediator_id") else []
    return []


def plan(
    rules: Iterable[Rule], *, event_id: str, event_type: str, subject: str, data: Mapping[str, Any]
) -> list[Planned]:
    """The notifications an event calls for, one per recipient and rule.

    ``key`` is what makes a redelivered event change nothing: the same event,
    recipient and rule always give the same key, whatever the order.
    """
    planned: dict[str, Planned] = {}
    for rule in rules:
        if not rule.enabled or rule.event_type != event_type:
            continue
        for audience in rule.audiences:
            for recipient in recipients_for(audience, data):
                key = f"{event_id}|{recipient}|{rule.id}"
                planned.setdefault(
                    key,
                    Planned(
                        key=key,
                        event_id=event_id,
                        event_type=event_type,
                        recipient=recipient,
                        audience=audience,
                        rule=rule.id,
                        template=rule.template,
                        urgency=rule.urgency,
                        fallback=rule.fallback,
                        subject_ref=subject,
                    ),
                )
    return list(planned.values())


# Timing: back-off, quiet hours, rate limits, digests.


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter, bounded by a horizon after the first attempt."""

    base_seconds: float = 30.0
    factor: float = 2.0
    max_delay_seconds: float = 3600.0
    horizon_seconds: float = 24 * 3600.0


def backoff_seconds(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """The wait after the ``attempt``-th failure (from 1): "equal jitter".

    Half the exponential delay is kept and the other half is random, so
    retries of many deliveries that failed together spread out while each
    one still waits at least half its step.
    """
    step = min(policy.max_delay_seconds, policy.base_seconds * policy.factor ** (attempt - 1))
    return step / 2 + rand() * step / 2


def next_retry(
    *,
    attempt: int,
    first_attempt_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try again after a failure, or None when the horizon has passed."""
    due = now + timedelta(seconds=backoff_seconds(attempt, policy, rand))
    if due - first_attempt_at > timedelta(seconds=policy.horizon_seconds):
        return None
    return due


def quiet_until(now: datetime, contact: Contact) -> datetime | None:
    """The end of the contact's quiet hours if ``now`` falls inside them, else None."""
    quiet = contact.quiet_hours
    if quiet is None or quiet.start == quiet.end:
        return None
    local = now.astimezone(ZoneInfo(contact.timezone))
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, tzinfo=local.tzinfo)
    return end.astimezone(now.tzinfo)


def rate_limited_until(
    sent_at: Sequence[datetime], now: datetime, *, limit: int, window: timedelta
) -> datetime | None:
    """When the recipient may get another non-urgent message, if it has had ``limit`` already.

    ``sent_at`` are the recipient's sends within (at least) the last window.
    """
    recent = sorted(t for t in sent_at if t > now - window)
    if limit <= 0 or len(recent) < limit:
        return None
    return recent[-limit] + window


def can_wait(urgency: str, contact: Contact | None) -> bool:
    """Whether quiet hours or the rate limit can hold a message at all.

    Immediate messages (overdue, escalations) go at once, through quiet hours
    and rate limits alike: that is what makes them immediate. A recipient
    with no contact record has neither. The worker asks first, so it reads
    the recipient's recent sends only when they can matter.
    """
    return urgency != IMMEDIATE and contact is not None


def not_before(
    *, urgency: str, now: datetime, contact: Contact | None, recent_sends: Sequence[datetime],
    rate_limit: int, rate_window: timedelta,
) -> tuple[datetime, str] | None:  # fmt: skip
    """Whether a due message must wait, until when and why; None means send now."""
    if contact is None or not can_wait(urgency, contact):
        return None
    waits = [
        (quiet_until(now, contact), "quiet hours"),
        (rate_limited_until(recent_sends, now, limit=rate_limit, window=rate_window), "rate limit"),
    ]
    later = [(until, why) for until, why in waits if until is not None and until > now]
    return max(later) if later else None


def digest_day(now: datetime, contact: Contact) -> date:
    """The local day a held digest item belongs to."""
    return now.astimezone(ZoneInfo(contact.timezone)).date()


def digest_due(now: datetime, contact: Contact, item_day: date, send_hour: int) -> bool:
    """A day's digest goes out at ``send_hour`` local time on the following day."""
    local = now.astimezone(ZoneInfo(contact.timezone))
    if local.date() > item_day + timedelta(days=1):
        return True
    return local.date() > item_day and local.hour >= send_hour


def compose_digest(day: date, lines: Sequence[str], language: str) -> tuple[str, str]:
    """One message (subject, body) out of a day's held notifications, oldest first."""
    if language == "en":
        subject = f"Daily digest {day.isoformat()}: {len(lines)} notifications"
    else:
        subject = f"{day.isoformat()} 每日汇总：共 {len(lines)} 条通知"
    body = "\n".join([subject, *(f"{n}. {line}" for n, line in enumerate(lines, 1))])
    return subject, body


def audience_role(recipient: str) -> str:
    """The low-cardinality role part of a recipient id (for events and metrics)."""
    prefix = recipient.split(":", 1)[0]
    return "reporter" if prefix == "reporter-of" else prefix if ":" in recipient else "user"


def template_language(template: Template, wanted: str) -> str:
    """The language to render: the wanted one, else zh-CN, else English."""
    for language in (wanted, DEFAULT_LANGUAGE, "en"):
        if language in template.body:
            return language
    raise RuleError({"body": ["the template has no text"]})
