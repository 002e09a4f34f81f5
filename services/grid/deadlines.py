"""Several clocks per incident, as policy data, and the alerts they raise.

Each clock starts when the incident enters one of its start states and stops
when it enters one of its stop states: acknowledge (reported → accepted or
rejected), dispatch (accepted → dispatched), sign-for (dispatched → the
department starts or returns it), resolve (dispatched → handled), feedback
(handled → checked on site). Limits are data: a fixed ``Limit`` or, for the
resolve clock, the one the category's urgency tier gives ("369" or "12345").

Co-handling departments (吹哨报到) get one clock each, ``co_handling``, keyed
``co_handling:<department>``: it starts when the department is named at
dispatch and stops when its sub-task is reported handled. Its limit comes from
the policy's ``co_handling`` entry (by default the urgency tier's, like the
lead's resolve clock). A per-co-handler sign-for clock was left out on
purpose: the sub-task deadline is the one the community holds them to.

The business clock keeps running through reassignment: a returned and
re-dispatched case does not restart a running resolve clock. Only a decision
by the community moves its deadline: a deferral (挂账, taken by staff with a
target date) or an approved extension (延期). Both move it the same way, to
the end of the target date, and re-arm its alerts. After a clock has stopped
(the case was handled), a reopened case starts it afresh.

Alerts are raised once each, in order: ``warned`` at the warn fraction of
the limit, ``overdue`` at the deadline, and one ``escalated`` per escalation
level, each counted from the deadline and naming its target (sub-district,
district, ...). ``next_due`` is what the store indexes so the timer finds
incidents with something due without reading the others.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from shequ_services.grid.clock import (
    TIER_SETS,
    BusinessCalendar,
    Limit,
    add_duration,
    parse_calendar,
)

ALERTS = ("warned", "overdue", "escalated")
CO_HANDLING = "co_handling"
#: Where a policy written with the single ``escalate_after`` escalates to.
DEFAULT_ESCALATION_TARGET = "sub_district"


@dataclass(frozen=True)
class EscalationRule:
    """One escalation level: so long after the deadline, the case goes up to ``to``."""

    after: Limit
    to: str


@dataclass(frozen=True)
class ClockRule:
    name: str
    starts_on: frozenset[str]
    stops_on: frozenset[str]
    limit: Limit | None  # None: the urgency tier's limit
    escalations: tuple[EscalationRule, ...] = ()


@dataclass(frozen=True)
class Policy:
    clocks: tuple[ClockRule, ...]
    urgency_limits: Mapping[str, Limit]
    calendar: BusinessCalendar
    warn_fraction: float = 0.8
    co_handling: ClockRule = field(
        default_factory=lambda: ClockRule(CO_HANDLING, frozenset(), frozenset(), None)
    )

    def limit_for(self, rule: ClockRule, urgency: str) -> Limit:
        if rule.limit is not None:
            return rule.limit
        try:
            return self.urgency_limits[urgency]
        except KeyError:
            raise ValueError(f"no time limit for urgency {urgency!r} in the policy") from None

    def rule(self, name: str) -> ClockRule | None:
        """The rule of a clock by name; ``None`` for one the policy no longer has."""
        if name == CO_HANDLING:
            return self.co_handling
        return next((rule for rule in self.clocks if rule.name == name), None)


@dataclass(frozen=True)
class Escalation:
    """One escalation level of one clock: when it falls due, to whom, and whether raised."""

    level: int
    at: datetime
    to: str
    raised_at: datetime | None = None


class Alert(NamedTuple):
    """One alert due on one clock; ``level`` and ``to`` only for ``escalated``."""

    clock: str
    kind: str
    level: int | None = None
    to: str | None = None


@dataclass(frozen=True)
class Clock:
    """One running or stopped clock of one incident.

    ``department`` is set on a co-handler's sub-task clock only: the lead's
    clocks belong to whichever department the incident is dispatched to.
    """

    name: str
    started: datetime
    deadline: datetime
    warn_at: datetime
    escalations: tuple[Escalation, ...] = ()
    stopped_at: datetime | None = None
    warned_at: datetime | None = None
    overdue_at: datetime | None = None
    department: str | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def due(self) -> list[tuple[Alert, datetime]]:
        """The alerts still to raise (the clock's key left blank), with when each falls due."""
        if not self.running:
            return []
        pending = []
        if self.warned_at is None:
            pending.append((Alert("", "warned"), self.warn_at))
        if self.overdue_at is None:
            pending.append((Alert("", "overdue"), self.deadline))
        for level in self.escalations:
            if level.raised_at is None:
                pending.append((Alert("", "escalated", level.level, level.to), level.at))
        return pending

    def to_document(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document["escalations"] = [dict(level.__dict__) for level in self.escalations]
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Clock:
        """Read a stored clock, also one stored before escalation levels (one level then)."""
        values = dict(document)
        levels = [Escalation(**level) for level in values.get("escalations", ())]
        escalate_at = values.pop("escalate_at", None)
        escalated_at = values.pop("escalated_at", None)
        if escalate_at is not None and not levels:
            levels = [Escalation(1, escalate_at, DEFAULT_ESCALATION_TARGET, escalated_at)]
        values["escalations"] = tuple(levels)
        return cls(**values)


@dataclass(frozen=True)
class Stopped:
    """A clock that stopped at this step: how long the stage took, and whether late.

    ``overdue_raised`` says whether the timer already raised (and counted) the
    clock's overdue alert, so a late stop is counted as a breach exactly once.
    """

    clock: str
    seconds: float
    breached: bool
    overdue_raised: bool = False


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
        if name == CO_HANDLING:
            raise ValueError(f"clocks.{CO_HANDLING}: configure it as the top-level co_handling")
        rules.append(
            ClockRule(
                name=name,
                starts_on=frozenset(spec["starts_on"]),
                stops_on=frozenset(spec["stops_on"]),
                limit=_parse_limit(spec.get("limit")),
                escalations=_parse_escalations(f"clocks.{name}", spec),
            )
        )
    co_spec = raw.get("co_handling") or {}
    unknown = set(co_spec) - {"limit", "escalations", "escalate_after"}
    if unknown:
        raise ValueError(f"co_handling: unknown keys {', '.join(sorted(unknown))}")
    co_handling = ClockRule(
        name=CO_HANDLING,
        starts_on=frozenset(),
        stops_on=frozenset(),
        limit=_parse_limit(co_spec.get("limit", "urgency")),
        escalations=_parse_escalations(CO_HANDLING, co_spec),
    )
    fraction = float(raw.get("warn_fraction", 0.8))
    if not 0 < fraction < 1:
        raise ValueError(f"warn_fraction must be between 0 and 1, got {fraction}")
    return Policy(tuple(rules), urgency_limits, calendar, fraction, co_handling)


def _parse_limit(limit: Any) -> Limit | None:
    if limit == "urgency":
        return None
    return Limit(**limit)


def _parse_escalations(where: str, spec: Mapping[str, Any]) -> tuple[EscalationRule, ...]:
    """``escalations: [{after, to}, ...]``, or the older single ``escalate_after`` as one level.

    Both at once would leave it unclear which one the district meant, so that is refused.
    """
    levels = spec.get("escalations")
    single = spec.get("escalate_after")
    if levels is not None and single is not None:
        raise ValueError(f"{where}: give escalations or escalate_after, not both")
    if single is not None:
        return (EscalationRule(Limit(**single), DEFAULT_ESCALATION_TARGET),)
    if levels is None:
        return ()
    if not isinstance(levels, list) or not levels:
        raise ValueError(f"{where}.escalations must be a non-empty list of {{after, to}}")
    parsed = []
    for index, level in enumerate(levels):
        if not isinstance(level, Mapping) or set(level) != {"after", "to"}:
            raise ValueError(f"{where}.escalations[{index}] needs exactly after and to")
        to = level["to"]
        if not isinstance(to, str) or not to.strip():
            raise ValueError(f"{where}.escalations[{index}].to must name a level")
        parsed.append(EscalationRule(Limit(**level["after"]), to.strip()))
    targets = [level.to for level in parsed]
    if len(set(targets)) != len(targets):
        raise ValueError(f"{where}.escalations: each level needs its own target")
    return tuple(parsed)


def _escalations(
    rule: ClockRule, deadline: datetime, calendar: BusinessCalendar
) -> tuple[Escalation, ...]:
    """The levels of ``rule`` for this deadline, numbered in the order they fall due."""
    moments = sorted(
        (add_duration(deadline, level.after, calendar), index, level.to)
        for index, level in enumerate(rule.escalations)
    )
    return tuple(
        Escalation(level=number, at=at, to=to)
        for number, (at, _, to) in enumerate(moments, start=1)
    )


def _start(
    rule: ClockRule, policy: Policy, urgency: str, at: datetime, department: str | None = None
) -> Clock:
    deadline = add_duration(at, policy.limit_for(rule, urgency), policy.calendar)
    return Clock(
        name=rule.name,
        started=at,
        deadline=deadline,
        warn_at=at + (deadline - at) * policy.warn_fraction,
        escalations=_escalations(rule, deadline, policy.calendar),
        department=department,
    )


def co_handling_key(department: str) -> str:
    """The key of a co-handler's sub-task clock among the incident's clocks."""
    return f"{CO_HANDLING}:{department}"


def on_state(
    clocks: Mapping[str, Clock],
    policy: Policy,
    *,
    urgency: str,
    to_state: str,
    at: datetime,
    target_date: date | None = None,
    co_handlers: Collection[str] | None = None,
) -> tuple[dict[str, Clock], list[Stopped]]:
    """The clocks after a step that left the incident in ``to_state`` at ``at``, and those stopped.

    ``target_date`` is a new resolve target the community decided on at this
    step (a deferral or an approved extension). ``co_handlers`` are the
    departments whose sub-task is open after the step; ``None`` leaves the
    sub-task clocks as they are.
    """
    updated = dict(clocks)
    stopped = []
    for rule in policy.clocks:
        clock = updated.get(rule.name)
        if clock is not None and clock.running and to_state in rule.stops_on:
            updated[rule.name] = replace(clock, stopped_at=at)
            stopped.append(
                Stopped(
                    rule.name,
                    (at - clock.started).total_seconds(),
                    at > clock.deadline,
                    clock.overdue_at is not None,
                )
            )
        elif to_state in rule.starts_on and (clock is None or not clock.running):
            updated[rule.name] = _start(rule, policy, urgency, at)
    if target_date is not None and "resolve" in updated and updated["resolve"].running:
        updated["resolve"] = move_to(updated["resolve"], policy, target_date)
    if co_handlers is not None:
        stopped.extend(_reconcile_co_handling(updated, policy, urgency, at, co_handlers))
    return updated, stopped


def _reconcile_co_handling(
    clocks: dict[str, Clock],
    policy: Policy,
    urgency: str,
    at: datetime,
    co_handlers: Collection[str],
) -> list[Stopped]:
    """Start a clock for each open sub-task without one; stop those whose sub-task closed.

    A co-handler named again while its clock runs keeps it: the business clock
    keeps running through reassignment, as the lead's does.
    """
    stopped = []
    for key, clock in list(clocks.items()):
        if clock.name == CO_HANDLING and clock.running and clock.department not in co_handlers:
            clocks[key] = replace(clock, stopped_at=at)
            stopped.append(
                Stopped(
                    CO_HANDLING,
                    (at - clock.started).total_seconds(),
                    at > clock.deadline,
                    clock.overdue_at is not None,
                )
            )
    for department in co_handlers:
        key = co_handling_key(department)
        current = clocks.get(key)
        if current is None or not current.running:
            clocks[key] = _start(policy.co_handling, policy, urgency, at, department)
    return stopped


def move_to(clock: Clock, policy: Policy, target: date) -> Clock:
    """A decided new target: the deadline becomes the end of the target date, alerts re-arm.

    Used alike for a deferral and an approved extension, so the two cannot
    drift apart. The start stays, so the warning point re-scales over the
    whole span; the escalation levels are counted afresh from the new deadline.
    """
    end = datetime.combine(target, time.max, tzinfo=policy.calendar.tz).astimezone(UTC)
    rule = policy.rule(clock.name)
    return replace(
        clock,
        deadline=end,
        warn_at=clock.started + (end - clock.started) * policy.warn_fraction,
        escalations=_escalations(rule, end, policy.calendar) if rule is not None else (),
        warned_at=None,
        overdue_at=None,
    )


def deadline_date(clocks: Mapping[str, Clock], policy: Policy, name: str) -> date | None:
    """The local date a running clock's deadline falls on, for checking a requested target."""
    clock = clocks.get(name)
    if clock is None or not clock.running:
        return None
    return clock.deadline.astimezone(policy.calendar.tz).date()


def due_alerts(clocks: Mapping[str, Clock], now: datetime) -> list[Alert]:
    """The alerts that are due at ``now`` and not yet raised, clock by clock, in order."""
    return [
        alert._replace(clock=name)
        for name, clock in sorted(clocks.items())
        for alert, when in clock.due()
        if when <= now
    ]


def mark_raised(
    clocks: Mapping[str, Clock], alerts: list[Alert], now: datetime
) -> dict[str, Clock]:
    updated = dict(clocks)
    for alert in alerts:
        clock = updated[alert.clock]
        if alert.kind == "escalated":
            levels = tuple(
                replace(level, raised_at=now) if level.level == alert.level else level
                for level in clock.escalations
            )
            updated[alert.clock] = replace(clock, escalations=levels)
        else:
            updated[alert.clock] = replace(clock, **{f"{alert.kind}_at": now})
    return updated


def next_due(clocks: Mapping[str, Clock]) -> datetime | None:
    """The earliest moment an alert of any running clock falls due."""
    moments = [when for clock in clocks.values() for _, when in clock.due()]
    return min(moments) if moments else None


def next_deadline(clocks: Mapping[str, Clock]) -> datetime | None:
    """The earliest deadline of a running clock: what the ops SLA board orders by.

    Unlike ``next_due`` (the next alert, which may be a warning or an
    escalation) this is the deadline itself, and it stays put once passed, so
    an overdue incident keeps sorting before those still within their limit.
    """
    deadlines = [clock.deadline for clock in clocks.values() if clock.running]
    return min(deadlines) if deadlines else None
