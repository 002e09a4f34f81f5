"""The incident lifecycle as an explicit state machine.

Plain Python like ``domain``: the whole lifecycle is one table (``RULES``), so
the documentation is generated from the same data the service enforces
(``describe``) and a district reading the docs reads the rules themselves.

``apply`` only decides; it never mutates an incident. It returns a
``Transition`` and the caller stores ``to_state`` with ``version + 1`` in one
conditional write, so a concurrent change is caught twice: here by
``expected_version`` and in the store by the version filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shequ_services.grid.domain import GridError

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
    target from ``outcomes``.
    """

    from_states: tuple[str, ...]
    roles: frozenset[str]
    to_state: str | None = None
    requires: tuple[str, ...] = ()
    choice: str | None = None
    outcomes: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""

    def targets(self) -> list[str]:
        """Every state this action can lead to, for docs and table checks."""
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
    "dispatch": Rule(
        from_states=("accepted", "reopened"),
        to_state="dispatched",
        roles=frozenset({"community_staff", "admin"}),
        requires=("department",),
        summary="派遣: hand the case to a responsible department (again after 退回)",
    ),
    "return_case": Rule(
        from_states=("dispatched",),
        to_state="accepted",
        roles=frozenset({"department"}),
        requires=("reason",),
        summary="退回: the department says the case is not its responsibility",
    ),
    "start": Rule(
        from_states=("dispatched",),
        to_state="in_progress",
        roles=frozenset({"department"}),
        summary="处置: the department starts work",
    ),
    "report_handled": Rule(
        from_states=("in_progress",),
        to_state="handled",
        roles=frozenset({"department"}),
        requires=("feedback",),
        summary="反馈: the department reports what it did",
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
) -> Transition:
    """Decide one lifecycle step, or raise the first rule it breaks.

    Checks run in a fixed order so the caller's error is stable: version
    (``StaleVersion``), then whether the action exists from ``state``
    (``IllegalTransition``), then role (``TransitionNotPermitted``), then fields
    (``MissingField``/``InvalidField``), then the reopen window.

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
    kept = _check_fields(action, rule, fields)
    to_state = rule.to_state if rule.choice is None else rule.outcomes[kept[rule.choice]]
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
    for name in OPTIONAL_FIELDS:
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
