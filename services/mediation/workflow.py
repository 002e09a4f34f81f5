"""The mediation case lifecycle as one table (``RULES``) and a pure ``decide``.

    intake ─assign→ assigned ─schedule_session→ in_session ─agree→ agreed ─close→ closed
                        └──────── fail ───────────┴→ failed ─refer→ referred ─close→ closed
    intake/assigned/in_session ─withdraw→ withdrawn ─close→ closed

Judicial confirmation (司法确认) and the follow-up visit (回访) are steps on
an agreed case that keep its state: ``file_confirmation`` (refused after the
30-day window) then ``decide_confirmation`` (confirmed or rejected). A case
with a filing awaiting the court's decision cannot be closed.

``decide`` never mutates: it returns the step and the case as it will be,
and the store writes that with ``version + 1`` only if nobody changed the
case meanwhile (optimistic versioning, as in grid).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from shequ_services.mediation import domain
from shequ_services.mediation.domain import Case, Policy

STATES = ("intake", "assigned", "in_session", "agreed", "failed", "referred", "withdrawn", "closed")
STAFF = frozenset({"mediator", "community_staff", "admin"})
MEDIATOR = frozenset({"mediator", "admin"})


class WorkflowError(domain.MediationError):
    pass


class IllegalTransition(WorkflowError):
    def __init__(self, state: str, action: str, allowed: list[str]) -> None:
        self.state, self.action, self.allowed = state, action, allowed
        super().__init__(
            f"action {action!r} is not possible from state {state!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )


class StaleVersion(WorkflowError):
    def __init__(self, expected: int, actual: int) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(f"case is at version {actual}, the request expected {expected}")


class NotPermitted(WorkflowError):
    """The action exists from this state but this caller may not take it (403)."""


class CaseBlocked(WorkflowError):
    """The action exists from this state but the case is not ready for it (409)."""


@dataclass(frozen=True)
class Rule:
    from_states: tuple[str, ...]
    roles: frozenset[str]
    to_state: str | None = None
    requires: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    #: Only the case's assigned mediator (or an admin) may take the step.
    own_case: bool = False
    summary: str = ""


RULES: dict[str, Rule] = {
    "assign": Rule(
        ("intake", "assigned"), frozenset({"community_staff", "admin"}), "assigned",
        requires=("assignment",),
        summary="指派: a mediator from the roster, after the recusal check (again to reassign)",
    ),
    "schedule_session": Rule(
        ("assigned", "in_session"), MEDIATOR, "in_session", requires=("session_at", "place"),
        own_case=True, summary="安排调解: a session's time and place; the parties are notified",
    ),
    "record_session": Rule(
        ("in_session",), MEDIATOR, requires=("session_id", "attendance"), optional=("notes",),
        own_case=True, summary="调解记录: who attended a session, and the notes",
    ),
    "extend": Rule(
        domain.RUNNING, STAFF, requires=("days", "reason", "parties_consent"),
        summary="延长期限: more time, with the parties' consent and a reason",
    ),
    "agree": Rule(
        ("in_session",), MEDIATOR, "agreed", requires=("agreement",), own_case=True,
        summary="达成协议: a signed agreement with the statutory contents",
    ),
    "fail": Rule(
        ("assigned", "in_session"), MEDIATOR, "failed", requires=("reason",), own_case=True,
        summary="调解不成: mediation failed; the parties are told of other remedies",
    ),
    "withdraw": Rule(
        domain.RUNNING, STAFF, "withdrawn", requires=("reason",),
        summary="撤回: the applicant withdrew",
    ),
    "refer": Rule(
        ("failed",), STAFF, "referred", requires=("court",),
        summary="诉非对接: hand a failed case to the court with its referral packet",
    ),
    "follow_up": Rule(
        ("agreed",), MEDIATOR, requires=("performance",), optional=("notes",), own_case=True,
        summary="回访: a visit on how the agreement is performed",
    ),
    "file_confirmation": Rule(
        ("agreed",), STAFF, requires=("court", "filed_on"),
        summary="申请司法确认: the joint application, within 30 days of the agreement",
    ),
    "decide_confirmation": Rule(
        ("agreed",), STAFF, requires=("decision",),
        summary="司法确认结果: the court confirmed or rejected the agreement",
    ),
    "close": Rule(
        ("agreed", "failed", "referred", "withdrawn"), STAFF, "closed",
        summary="结案: the case ends with its outcome (the state it closes from)",
    ),
}  # fmt: skip

PERFORMANCE = ("performed", "partly_performed", "not_performed")
DECISIONS = ("confirmed", "rejected")


@dataclass(frozen=True)
class Transition:
    action: str
    from_state: str
    to_state: str
    actor: str
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)


def allowed_actions(state: str) -> list[str]:
    if state not in STATES:
        raise ValueError(f"unknown case state {state!r}")
    return [name for name, rule in RULES.items() if state in rule.from_states]


def decide(
    case: Case,
    action: str,
    *,
    expected_version: int,
    actor: str,
    roles: frozenset[str],
    fields: Mapping[str, Any],
    at: datetime,
    policy: Policy,
) -> tuple[Transition, Case]:
    """One step and the case after it, or the first rule it breaks.

    Checks in a stable order: version, whether the action exists from the
    state, the caller's role and whether it is their case, required fields,
    then the step's own rules.
    """
    if expected_version != case.version:
        raise StaleVersion(expected_version, case.version)
    rule = RULES.get(action)
    if rule is None or case.status not in rule.from_states:
        raise IllegalTransition(case.status, action, allowed_actions(case.status))
    if not roles & rule.roles:
        raise NotPermitted(f"action {action!r} needs one of {', '.join(sorted(rule.roles))}")
    if rule.own_case and "admin" not in roles and case.mediator_id != actor:
        raise NotPermitted(f"action {action!r} is for the case's assigned mediator")
    kept = _required(rule, fields)
    to_state = rule.to_state or case.status
    step = Transition(action, case.status, to_state, actor, at, kept)
    changes = _apply(case, step, policy)
    history = {"at": at, "actor": actor, "action": action, "from": case.status, "to": to_state}
    history["fields"] = _history_fields(action, kept)
    updated = replace(case, status=to_state, history=[*case.history, history], **changes)
    if to_state not in domain.RUNNING and updated.clock.stopped_at is None:
        updated = replace(updated, clock=domain.stop_clock(updated.clock, at))
    return step, updated


def _required(rule: Rule, fields: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    missing = []
    for name in rule.requires:
        value = fields.get(name)
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "" or value == []:
            missing.append(name)
        kept[name] = value
    if missing:
        raise domain.InvalidCase({name: ["required for this action"] for name in missing})
    for name in rule.optional:
        if fields.get(name) is not None:
            kept[name] = fields[name]
    return kept


def _local_today(at: datetime, policy: Policy) -> date:
    return at.astimezone(policy.timezone).date()


def _apply(case: Case, step: Transition, policy: Policy) -> dict[str, Any]:
    """The field changes of a step besides state and history."""
    f, at = step.fields, step.at
    today = _local_today(at, policy)
    if step.action == "assign":
        assignment = f["assignment"]
        return {"mediator_id": assignment["mediator_id"], "recusal": assignment}
    if step.action == "schedule_session":
        if f["session_at"] <= at:
            raise domain.InvalidCase({"session_at": ["a session is scheduled in the future"]})
        session = {
            "id": f"S{len(case.sessions) + 1}",
            "session_at": f["session_at"],
            "place": f["place"],
            "held": False,
            "attendance": [],
            "notes": None,
        }
        return {"sessions": [*case.sessions, session]}
    if step.action == "record_session":
        ids = {p.id for p in case.parties}
        unknown = sorted(set(f["attendance"]) - ids)
        if unknown:
            raise domain.InvalidCase({"attendance": [f"not parties: {', '.join(unknown)}"]})
        if not any(s["id"] == f["session_id"] for s in case.sessions):
            raise domain.InvalidCase({"session_id": [f"no session {f['session_id']}"]})
        sessions = [
            {**s, "held": True, "attendance": sorted(f["attendance"]), "notes": f.get("notes")}
            if s["id"] == f["session_id"]
            else s
            for s in case.sessions
        ]
        return {"sessions": sessions}
    if step.action == "extend":
        if f["parties_consent"] is not True:
            raise domain.InvalidCase(
                {"parties_consent": ["an extension needs the parties' consent"]}
            )
        days = f["days"]
        if not isinstance(days, int) or not 1 <= days <= policy.max_extension_days:
            raise domain.InvalidCase({"days": [f"from 1 to {policy.max_extension_days}"]})
        extension = {"at": at, "days": days, "reason": f["reason"], "parties_consent": True}
        return {
            "extensions": [*case.extensions, extension],
            "clock": domain.extend_clock(case.clock, days, policy),
        }
    if step.action == "agree":
        agreement = domain.check_agreement(case, f["agreement"], today)
        signed_on: date = agreement["signed_on"]
        deadline = domain.confirmation_deadline(signed_on, policy)
        stored = {**agreement, "signed_on": signed_on.isoformat(), "obligations": [
            {**o, "due_on": o["due_on"].isoformat() if isinstance(o.get("due_on"), date)
             else o.get("due_on")}
            for o in agreement["obligations"]
        ]}  # fmt: skip
        confirmation = {"status": "none", "deadline": deadline.isoformat(), "court": None}
        return {"agreement": stored, "confirmation": confirmation}
    if step.action == "follow_up":
        if f["performance"] not in PERFORMANCE:
            raise domain.InvalidCase({"performance": [f"one of {', '.join(PERFORMANCE)}"]})
        visit = {"at": at, "performance": f["performance"], "notes": f.get("notes")}
        return {"follow_ups": [*case.follow_ups, visit]}
    if step.action == "file_confirmation":
        domain.check_filing(case, f["filed_on"], today)
        confirmation = {
            **(case.confirmation or {}),
            "status": "filed",
            "court": f["court"],
            "filed_on": f["filed_on"].isoformat(),
        }
        return {"confirmation": confirmation}
    if step.action == "decide_confirmation":
        if f["decision"] not in DECISIONS:
            raise domain.InvalidCase({"decision": [f"one of {', '.join(DECISIONS)}"]})
        if (case.confirmation or {}).get("status") != "filed":
            raise CaseBlocked("no application for judicial confirmation is waiting")
        confirmation = {**(case.confirmation or {}), "status": f["decision"], "decided_at": at}
        return {"confirmation": confirmation}
    if step.action == "refer":
        return {"referral": {"court": f["court"], "referred_at": at, "id": uuid.uuid4().hex[:12]}}
    if step.action == "close":
        if (case.confirmation or {}).get("status") == "filed":
            raise CaseBlocked("judicial confirmation is pending: close after the court decides")
        return {"outcome": case.status, "closed_at": at}
    return {}


#: Free text and structures kept out of the history (they live, sealed, on the case).
_NOT_IN_HISTORY = ("assignment", "agreement", "notes")


def _history_fields(action: str, kept: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in kept.items():
        if name in _NOT_IN_HISTORY:
            continue
        out[name] = value.isoformat() if isinstance(value, date) and not isinstance(
            value, datetime) else value  # fmt: skip
    return out


def describe() -> list[dict[str, Any]]:
    """The table as rows, for the docs and the API."""
    return [
        {
            "action": name,
            "from_states": list(rule.from_states),
            "to_state": rule.to_state,
            "roles": sorted(rule.roles),
            "requires": list(rule.requires),
            "own_case": rule.own_case,
            "summary": rule.summary,
        }
        for name, rule in RULES.items()
    ]
