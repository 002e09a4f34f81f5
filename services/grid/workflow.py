"""The incident lifecycle as an explicit state machine.

Plain Python like ``domain``: the whole lifecycle is one table (``RULES``), so
the documentation is generated from the same data the service enforces
(``describe``) and a district reading the docs reads the rules themselves.

``apply`` only decides; it never mutates an incident. It returns a
``Transition`` and the caller stores ``to_state`` with ``version + 1`` in one
conditional write, so a concurrent change is caught twice: here by
``expected_version`` and in the store by the version filter.

Some rules need more than the state: which department leads and which
co-handle (吹哨报到), and whether an extension request (延期) waits. The
caller passes those facts as a ``Case``; ``apply`` stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shequ_services.grid.domain import GridError, Incident

STATES = (
    "reported",
    "accepted",
    "rejected",
    "dispatched",
    "in_progress",
    "handled",
    "closed_resolved",
    "closed_unresolved",
    "reopened",
    "deferred",
    "merged",
)

#: Fields any action may carry besides its required ones; everything else is dropped
#: so that the history keeps only what the rules know about.
OPTIONAL_FIELDS = ("note",)


class WorkflowError(GridError):
    """Base of lifecycle refusals, so the service can map them in one place."""


class IllegalTransition(WorkflowError):
    """The action does not exist from this state; says what would have been possible."""

    def __init__(self, state: str, action: str, allowed: list[str]) -> None:
        self.state = state
        self.action = action
        self.allowed = allowed
        choices = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"action {action!r} is not possible from state {state!r}; allowed: {choices}"
        )


class StaleVersion(WorkflowError):
    """Someone else changed the incident since the caller read it."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"incident is at version {actual}, the request expected {expected}")


class TransitionNotPermitted(WorkflowError):
    """The action exists from this state but this caller may not take it."""


class ReopenWindowClosed(TransitionNotPermitted):
    """A resident asked to reopen a case after the reopen window ended."""


class CaseBlocked(WorkflowError):
    """The action exists from this state but the case is not ready for it (409).

    For example the lead reports the case handled while a co-handler's
    sub-task is still open; ``open_subtasks`` then names those departments.
    """

    def __init__(self, message: str, *, open_subtasks: tuple[str, ...] = ()) -> None:
        self.open_subtasks = open_subtasks
        super().__init__(message)


class MissingField(WorkflowError):
    """A required field of the action is absent or blank."""

    def __init__(self, field: str, action: str = "") -> None:
        self.field = field
        self.action = action
        where = f" for action {action!r}" if action else ""
        super().__init__(f"field {field!r} is required{where}")


class InvalidField(WorkflowError):
    """A required field is present but its value is not one the action accepts."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"field {field!r}: {message}")


@dataclass(frozen=True)
class Rule:
    """One row of the lifecycle table.

    ``to_state`` is fixed for most actions; an action that branches (``check``)
    leaves it ``None`` and names the field (``choice``) whose value picks the
    target from ``outcomes``; an action that records something without moving
    the case (a sub-task report, an extension request) sets ``keeps_state``.

    ``department_scope`` narrows the ``department`` role: ``lead`` means only
    the department the case is dispatched to, ``co_handler`` only a department
    with a sub-task on it. Other roles listed for the action are not narrowed.
    """

    from_states: tuple[str, ...]
    roles: frozenset[str]
    to_state: str | None = None
    requires: tuple[str, ...] = ()
    choice: str | None = None
    outcomes: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    optional: tuple[str, ...] = ()
    keeps_state: bool = False
    department_scope: str | None = None

    def targets(self) -> list[str]:
        """Every state this action can lead to, for docs and table checks."""
        if self.keeps_state:
            return list(self.from_states)
        if self.to_state is not None:
            return [self.to_state]
        return list(self.outcomes.values())


RULES: dict[str, Rule] = {
    "accept": Rule(
        from_states=("reported",),
        to_state="accepted",
        roles=frozenset({"community_staff", "grid_worker", "admin"}),
        summary="受理: the report is a real case for this community",
    ),
    "reject": Rule(
        from_states=("reported",),
        to_state="rejected",
        roles=frozenset({"community_staff", "admin"}),
        requires=("reason",),
        summary="不予受理: not a case; the reason is shown to the reporter",
    ),
    "merge": Rule(
        from_states=("reported", "accepted"),
        to_state="merged",
        roles=frozenset({"community_staff", "admin"}),
        requires=("duplicate_of",),
        summary="合并: a duplicate of another open incident, handled as that one (terminal)",
    ),
    "dispatch": Rule(
        from_states=("accepted", "reopened"),
        to_state="dispatched",
        roles=frozenset({"community_staff", "admin"}),
        requires=("department",),
        optional=("co_departments",),
        summary="派遣: hand the case to a lead department (again after 退回), "
        "optionally with co-handling departments (吹哨报到), each given a sub-task",
    ),
    "return_case": Rule(
        from_states=("dispatched",),
        to_state="accepted",
        roles=frozenset({"department"}),
        requires=("reason",),
        department_scope="lead",
        summary="退回: the department says the case is not its responsibility",
    ),
    "start": Rule(
        from_states=("dispatched",),
        to_state="in_progress",
        roles=frozenset({"department"}),
        department_scope="lead",
        summary="处置: the department starts work",
    ),
    "report_handled": Rule(
        from_states=("in_progress",),
        to_state="handled",
        roles=frozenset({"department"}),
        requires=("feedback",),
        department_scope="lead",
        summary="反馈: the lead department reports what it did; refused while a "
        "co-handler's sub-task is open",
    ),
    "check": Rule(
        from_states=("handled",),
        roles=frozenset({"grid_worker", "community_staff"}),
        requires=("outcome",),
        choice="outcome",
        outcomes={
            "resolved": "closed_resolved",
            "unresolved": "closed_unresolved",
            "reopen": "reopened",
        },
        summary="核查: on-site check closes the case or sends it back",
    ),
    "defer": Rule(
        from_states=("dispatched", "in_progress"),
        to_state="deferred",
        roles=frozenset({"community_staff", "admin"}),
        requires=("reason", "target_date"),
        summary="挂账: cannot be solved now; tracked as backlog with a target date",
    ),
    "resume": Rule(
        from_states=("deferred",),
        to_state="in_progress",
        roles=frozenset({"department", "community_staff"}),
        department_scope="lead",
        summary="销账: work on a backlog case resumes",
    ),
    "reopen": Rule(
        from_states=("closed_resolved", "closed_unresolved"),
        to_state="reopened",
        roles=frozenset({"resident"}),
        requires=("reason",),
        summary="重新打开: the reporter disputes the closure within the reopen window",
    ),
}

# Co-handling (吹哨报到) and extensions (延期): steps that record a decision on
# the case without moving it to another state.
RULES.update(
    {
        "report_subtask": Rule(
            from_states=("dispatched", "in_progress", "deferred"),
            roles=frozenset({"department"}),
            requires=("feedback",),
            keeps_state=True,
            department_scope="co_handler",
            summary="报到反馈: a co-handling department reports its sub-task handled",
        ),
        "request_extension": Rule(
            from_states=("dispatched", "in_progress"),
            roles=frozenset({"department"}),
            requires=("reason", "target_date"),
            keeps_state=True,
            department_scope="lead",
            summary="申请延期: the lead department asks for a later resolve target; "
            "the clock moves only if the community approves",
        ),
        "approve_extension": Rule(
            from_states=("dispatched", "in_progress"),
            roles=frozenset({"community_staff", "admin"}),
            keeps_state=True,
            summary="批准延期: the resolve deadline moves to the end of the requested date",
        ),
        "refuse_extension": Rule(
            from_states=("dispatched", "in_progress"),
            roles=frozenset({"community_staff", "admin"}),
            requires=("reason",),
            keeps_state=True,
            summary="不予延期: the request is refused; the resolve clock is unchanged",
        ),
    }
)


@dataclass(frozen=True)
class Case:
    """The facts about an incident beyond its state that some rules need.

    ``co_handlers`` are all departments with a sub-task on the case,
    ``open_subtasks`` those whose sub-task is not yet reported handled.
    ``resolve_deadline`` is the local date the running resolve clock ends on.
    """

    lead_department: str | None = None
    co_handlers: tuple[str, ...] = ()
    open_subtasks: tuple[str, ...] = ()
    extension_requested: bool = False
    resolve_deadline: date | None = None


@dataclass(frozen=True)
class Transition:
    """The decision ``apply`` made: what the caller stores and appends to the history."""

    action: str
    from_state: str
    to_state: str
    actor: str
    roles_used: frozenset[str]
    at: datetime
    fields: dict[str, Any]


def allowed_actions(state: str) -> list[str]:
    """Actions possible from ``state`` in table order, whatever the caller's roles.

    Role filtering is left to the caller on purpose: a refusal message should say
    what the case can do next, not only what this user can do.
    """
    _known_state(state)
    return [name for name, rule in RULES.items() if state in rule.from_states]


def apply(
    state: str,
    version: int,
    action: str,
    *,
    expected_version: int,
    actor: str,
    roles: frozenset[str],
    fields: Mapping[str, Any],
    at: datetime,
    reopen_window: timedelta = timedelta(days=7),
    closed_at: datetime | None = None,
    reporter: str | None = None,
    actor_department: str | None = None,
    case: Case | None = None,
) -> Transition:
    """Decide one lifecycle step, or raise the first rule it breaks.

    Checks run in a fixed order so the caller's error is stable: version
    (``StaleVersion``), then whether the action exists from ``state``
    (``IllegalTransition``), then role and department scope
    (``TransitionNotPermitted``), then fields (``MissingField``/``InvalidField``),
    then the facts of the case (``CaseBlocked``), then the reopen window.

    A department acting as such must say which department it is
    (``actor_department``); without it a scoped action is refused.

    ``reopen`` is for the reporter only: ``reporter`` is the incident's reporter
    and must equal ``actor``; without it a reopen is refused, so a caller that
    forgets to pass it fails closed. The window is inclusive: a reopen exactly
    ``reopen_window`` after ``closed_at`` is still accepted.
    """
    _known_state(state)
    if expected_version != version:
        raise StaleVersion(expected=expected_version, actual=version)
    rule = RULES.get(action)
    if rule is None or state not in rule.from_states:
        raise IllegalTransition(state, action, allowed_actions(state))
    roles_used = frozenset(roles) & rule.roles
    if not roles_used:
        raise TransitionNotPermitted(
            f"action {action!r} needs one of the roles {', '.join(sorted(rule.roles))}"
        )
    if action == "reopen" and (reporter is None or actor != reporter):
        raise TransitionNotPermitted("only the reporter may reopen a case")
    case = case or Case()
    if rule.department_scope is not None and roles_used == {"department"}:
        _check_department(action, rule.department_scope, actor_department, case)
    kept = _check_fields(action, rule, fields)
    _check_case(action, kept, case, at, actor_department)
    if rule.keeps_state:
        to_state: str | None = state
    elif rule.choice is None:
        to_state = rule.to_state
    else:
        to_state = rule.outcomes[kept[rule.choice]]
    assert to_state is not None  # a table row without to_state always has a choice
    if action == "reopen":
        _check_reopen_window(at, closed_at, reopen_window)
    return Transition(
        action=action,
        from_state=state,
        to_state=to_state,
        actor=actor,
        roles_used=roles_used,
        at=at,
        fields=kept,
    )


def describe() -> list[dict[str, Any]]:
    """The lifecycle table as plain rows, for generated docs and the API's help output."""
    rows = []
    for name, rule in RULES.items():
        rows.append(
            {
                "action": name,
                "from_states": list(rule.from_states),
                "to_states": rule.targets(),
                "roles": sorted(rule.roles),
                "requires": list(rule.requires),
                "optional": [*rule.optional, *OPTIONAL_FIELDS],
                "keeps_state": rule.keeps_state,
                "department_scope": rule.department_scope,
                "choice": rule.choice,
                "outcomes": dict(rule.outcomes),
                "summary": rule.summary,
            }
        )
    return rows


def _known_state(state: str) -> None:
    """An unknown state means corrupt data or a caller bug, not a user error."""
    if state not in STATES:
        raise ValueError(f"unknown incident state {state!r}")


def _check_fields(action: str, rule: Rule, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields the action knows about, normalised, or raise for the first bad one."""
    kept: dict[str, Any] = {}
    for name in rule.requires:
        value = fields.get(name)
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            raise MissingField(name, action)
        kept[name] = value
    for name in (*rule.optional, *OPTIONAL_FIELDS):
        if name in fields and fields[name] is not None:
            kept[name] = fields[name]
    if rule.choice is not None and kept[rule.choice] not in rule.outcomes:
        raise InvalidField(
            rule.choice,
            f"{kept[rule.choice]!r} is not one of {', '.join(rule.outcomes)}",
        )
    if "target_date" in kept:
        kept["target_date"] = _as_date(kept["target_date"])
    return kept


def _check_department(action: str, scope: str, actor_department: str | None, case: Case) -> None:
    """A department may act only on its own part of a case."""
    if scope == "lead":
        if actor_department is None or actor_department != case.lead_department:
            raise TransitionNotPermitted(
                f"action {action!r} is for the lead department of the case only"
            )
    elif actor_department is None or actor_department not in case.co_handlers:
        raise TransitionNotPermitted(
            f"action {action!r} is for a co-handling department of the case only"
        )


def _check_case(
    action: str, kept: dict[str, Any], case: Case, at: datetime, actor_department: str | None
) -> None:
    """The rules that depend on co-handling and on a waiting extension request."""
    if action == "dispatch":
        kept["co_departments"] = _co_departments(kept.get("co_departments", []), kept["department"])
    elif action == "report_handled" and case.open_subtasks:
        raise CaseBlocked(
            "the case cannot be reported handled while co-handling sub-tasks are open: "
            + ", ".join(case.open_subtasks),
            open_subtasks=case.open_subtasks,
        )
    elif action == "report_subtask":
        if actor_department not in case.open_subtasks:
            raise CaseBlocked(f"the sub-task of {actor_department!r} is already reported handled")
        kept["co_department"] = actor_department
    elif action == "request_extension":
        if case.extension_requested:
            raise CaseBlocked("an extension request is already waiting for a decision")
        target = kept["target_date"]
        if target <= at.date():
            raise InvalidField("target_date", "an extension must end after today")
        if case.resolve_deadline is not None and target <= case.resolve_deadline:
            raise InvalidField(
                "target_date",
                f"an extension must end after the current deadline "
                f"({case.resolve_deadline.isoformat()})",
            )
    elif action in ("approve_extension", "refuse_extension") and not case.extension_requested:
        raise CaseBlocked("no extension request is waiting for a decision")


def _co_departments(value: Any, lead: str) -> list[str]:
    """The co-handlers named at dispatch: distinct department ids, none of them the lead."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidField("co_departments", "give a list of department ids")
    names = [v.strip() for v in value]
    if any(not name for name in names):
        raise InvalidField("co_departments", "a department id cannot be blank")
    if len(set(names)) != len(names):
        raise InvalidField("co_departments", "a department is named twice")
    if lead in names:
        raise InvalidField("co_departments", f"{lead!r} leads the case; it cannot co-handle it")
    return names


def _as_date(value: Any) -> date:
    """Accept a ``date`` or an ISO ``YYYY-MM-DD`` string; a datetime is ambiguous across zones."""
    if isinstance(value, datetime):
        raise InvalidField("target_date", "give a calendar date, not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidField("target_date", f"{value!r} is not a date (YYYY-MM-DD)")


def _check_reopen_window(at: datetime, closed_at: datetime | None, window: timedelta) -> None:
    """The window protects departments from cases reopened long after the fact."""
    if closed_at is None:
        raise ValueError("reopen needs closed_at, the time the case was closed")
    if at - closed_at > window:
        raise ReopenWindowClosed(
            f"the case was closed at {closed_at.isoformat()}; reopening is possible "
            f"for {window} after closing"
        )


@dataclass(frozen=True)
class Consequences:
    """What a decided step changes on the incident besides its state and history.

    ``changes`` are stored fields (``department``, ``subtasks``, ``extension``);
    ``resolve_target`` is the date the resolve deadline moves to, if the step
    decided one; ``open_subtasks`` are the co-handlers still owing their part.
    """

    changes: dict[str, Any]
    resolve_target: date | None
    open_subtasks: tuple[str, ...]


def case_of(incident: Incident, resolve_deadline: date | None = None) -> Case:
    """The facts ``apply`` needs about ``incident``."""
    return Case(
        lead_department=incident.department,
        co_handlers=incident.co_handlers(),
        open_subtasks=incident.open_subtasks(),
        extension_requested=bool(incident.extension)
        and incident.extension.get("status") == "requested",
        resolve_deadline=resolve_deadline,
    )


def consequences(
    incident: Incident, step: Transition, actor_department: str | None
) -> Consequences:
    """Derive the field changes of a step; pure, so the store only writes them.

    A dispatch names the co-handlers afresh: a department named again keeps its
    open sub-task (and so its running clock), one not named any more loses it.
    An extension's target date is kept as ISO text, as in the history.
    """
    changes: dict[str, Any] = {}
    subtasks = incident.subtasks
    target: date | None = None
    if step.action == "dispatch":
        changes["department"] = step.fields["department"]
        current = {t["department"]: t for t in incident.subtasks if t["status"] == "open"}
        subtasks = [
            current.get(name)
            or {"department": name, "status": "open", "dispatched_at": step.at, "handled_at": None}
            for name in step.fields.get("co_departments", [])
        ]
        changes["subtasks"] = subtasks
    elif step.action == "report_subtask":
        subtasks = [
            {**t, "status": "handled", "handled_at": step.at}
            if t["department"] == actor_department and t["status"] == "open"
            else t
            for t in incident.subtasks
        ]
        changes["subtasks"] = subtasks
    elif step.action == "request_extension":
        changes["extension"] = {
            "status": "requested",
            "department": actor_department,
            "target_date": step.fields["target_date"].isoformat(),
            "requested_at": step.at,
            "decided_at": None,
        }
    elif step.action in ("approve_extension", "refuse_extension") and incident.extension:
        approved = step.action == "approve_extension"
        changes["extension"] = {
            **incident.extension,
            "status": "approved" if approved else "refused",
            "decided_at": step.at,
        }
        if approved:
            target = date.fromisoformat(incident.extension["target_date"])
    elif step.action == "defer":
        target = step.fields["target_date"]
    elif step.action == "merge":
        changes["merged_into"] = step.fields["duplicate_of"]
    open_now = tuple(t["department"] for t in subtasks if t["status"] == "open")
    return Consequences(changes, target, open_now)
