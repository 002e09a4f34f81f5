"""Several clocks per incident, as policy data, and the alerts they raise.

Each clock starts when the incident enters one of its start states and stops
when it enters one of its stop states: acknowledge (reported → accepted or
rejected), dispatch (accepted → dispatched), sign-for (dispatched → the
department starts or returns it), resolve (dispatched → handled), feedback
(handled → checked on site). Limits are data: a fixed ``Limit`` or, for the
resolve clock, the one the category's urgency tier gives ("369" or "12345").

The business clock keeps running through reassignment: a returned and
re-dispatched case does not restart a running resolve clock. Only an approved
deferral (挂账, with a target date) moves its deadline. After a clock has
stopped (the case was handled), a reopened case starts it afresh.

Alerts are raised once each, in order: ``warned`` at the warn fraction of
the limit, ``overdue`` at the deadline, ``escalated`` at the deadline plus
the clock's escalation delay. ``next_due`` is what the store indexes so the
timer finds incidents with something due without reading the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any

from shequ_services.grid.clock import (
    TIER_SETS,
    BusinessCalendar,
    Limit,
    add_duration,
    parse_calendar,
)

ALERTS = ("warned", "overdue", "escalated")


@dataclass(frozen=True)
class ClockRule:
    name: str
    starts_on: frozenset[str]
    stops_on: frozenset[str]
    limit: Limit | None  # None: the urgency tier's limit
    escalate_after: Limit | None = None


@dataclass(frozen=True)
class Policy:
    clocks: tuple[ClockRule, ...]
    urgency_limits: Mapping[str, Limit]
    calendar: BusinessCalendar
    warn_fraction: float = 0.8

    def limit_for(self, rule: ClockRule, urgency: str) -> Limit:
        if rule.limit is not None:
            return rule.limit
        try:
            return self.urgency_limits[urgency]
        except KeyError:
            raise ValueError(f"no time limit for urgency {urgency!r} in the policy") from None


@dataclass(frozen=True)
class Clock:
    """One running or stopped clock of one incident."""

    name: str
    started: datetime
    deadline: datetime
    warn_at: datetime
    escalate_at: datetime | None = None
    stopped_at: datetime | None = None
    warned_at: datetime | None = None
    overdue_at: datetime | None = None
    escalated_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def due(self) -> list[tuple[str, datetime]]:
        """The alerts still to raise, with when each falls due, in order."""
        if not self.running:
            return []
        pending = []
        if self.warned_at is None:
            pending.append(("warned", self.warn_at))
        if self.overdue_at is None:
            pending.append(("overdue", self.deadline))
        if self.escalate_at is not None and self.escalated_at is None:
            pending.append(("escalated", self.escalate_at))
        return pending

    def to_document(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Clock:
        return cls(**document)


@dataclass(frozen=True)
class Stopped:
    """A clock that stopped at this step: how long the stage took, and whether late."""

    clock: str
    seconds: float
    breached: bool


def parse_policy(raw: Mapping[str, Any]) -> Policy:
    """Build the policy from its YAML form, with messages that name the bad entry."""
    calendar = parse_calendar(raw.get("calendar") or {})
    urgency_limits = {}
    for urgency, ref in (raw.get("resolve_limits") or {}).items():
        tier_set, tier = ref.get("set"), ref.get("tier")
        if tier_set not in TIER_SETS or tier not in TIER_SETS[tier_set]:
            raise ValueError(f"resolve_limits.{urgency}: no tier {tier!r} in set {tier_set!r}")
        urgency_limits[urgency] = TIER_SETS[tier_set][tier]
    rules = []
    for name, spec in (raw.get("clocks") or {}).items():
        limit = spec.get("limit")
        rules.append(
            ClockRule(
                name=name,
                starts_on=frozenset(spec["starts_on"]),
                stops_on=frozenset(spec["stops_on"]),
                limit=None if limit == "urgency" else Limit(**limit),
                escalate_after=Limit(**spec["escalate_after"])
                if spec.get("escalate_after")
                else None,
            )
        )
    fraction = float(raw.get("warn_fraction", 0.8))
    if not 0 < fraction < 1:
        raise ValueError(f"warn_fraction must be between 0 and 1, got {fraction}")
    return Policy(tuple(rules), urgency_limits, calendar, fraction)


def _start(rule: ClockRule, policy: Policy, urgency: str, at: datetime) -> Clock:
    deadline = add_duration(at, policy.limit_for(rule, urgency), policy.calendar)
    return Clock(
        name=rule.name,
        started=at,
        deadline=deadline,
        warn_at=at + (deadline - at) * policy.warn_fraction,
        escalate_at=(
            add_duration(deadline, rule.escalate_after, policy.calendar)
            if rule.escalate_after
            else None
        ),
    )


def on_state(
    clocks: Mapping[str, Clock],
    policy: Policy,
    *,
    urgency: str,
    to_state: str,
    at: datetime,
    target_date: date | None = None,
) -> tuple[dict[str, Clock], list[Stopped]]:
    """The clocks after the incident entered ``to_state`` at ``at``, and those that stopped."""
    updated = dict(clocks)
    stopped = []
    for rule in policy.clocks:
        clock = updated.get(rule.name)
        if clock is not None and clock.running and to_state in rule.stops_on:
            updated[rule.name] = replace(clock, stopped_at=at)
            stopped.append(
                Stopped(rule.name, (at - clock.started).total_seconds(), at > clock.deadline)
            )
        elif to_state in rule.starts_on and (clock is None or not clock.running):
            updated[rule.name] = _start(rule, policy, urgency, at)
    if to_state == "deferred" and target_date is not None and "resolve" in updated:
        updated["resolve"] = _defer(updated["resolve"], policy, target_date)
    return updated, stopped


def _defer(clock: Clock, policy: Policy, target: date) -> Clock:
    """An approved deferral: the deadline becomes the end of the target date, alerts re-arm."""
    end = datetime.combine(target, time.max, tzinfo=policy.calendar.tz).astimezone(UTC)
    return replace(
        clock,
        deadline=end,
        warn_at=clock.started + (end - clock.started) * policy.warn_fraction,
        escalate_at=None,
        warned_at=None,
        overdue_at=None,
        escalated_at=None,
    )


def due_alerts(clocks: Mapping[str, Clock], now: datetime) -> list[tuple[str, str]]:
    """(clock, alert) pairs that are due at ``now`` and not yet raised."""
    return [
        (name, alert)
        for name, clock in sorted(clocks.items())
        for alert, when in clock.due()
        if when <= now
    ]


def mark_raised(
    clocks: Mapping[str, Clock], alerts: list[tuple[str, str]], now: datetime
) -> dict[str, Clock]:
    updated = dict(clocks)
    for name, alert in alerts:
        updated[name] = replace(updated[name], **{f"{alert}_at": now})
    return updated


def next_due(clocks: Mapping[str, Clock]) -> datetime | None:
    """The earliest moment an alert of any running clock falls due."""
    moments = [when for clock in clocks.values() for _, when in clock.due()]
    return min(moments) if moments else None
