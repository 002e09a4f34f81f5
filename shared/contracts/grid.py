"""Events produced by the grid service.

Payloads carry ids, codes and coarse places (community, grid cell), never the
reporter, the description or anything else a resident wrote: those stay in
the grid's own database.
"""

import marshmallow
from marshmallow import fields, validate

from shequ.contracts.registry import register

SERVICE = "grid"

INCIDENT_REPORTED = "incident.reported"


class CategoryRefV1(marshmallow.Schema):
    """What consumers need to know about a category without asking grid."""

    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name_zh = fields.String(required=True)
    opens_mediation = fields.Boolean(required=True)
    volunteer_task = fields.Boolean(required=True)
    sensitive = fields.Boolean(required=True)


class IncidentReportedV1(marshmallow.Schema):
    incident_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.Nested(CategoryRefV1, required=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)
    channel = fields.String(required=True)
    urgency = fields.String(required=True)
    reported_at = fields.AwareDateTime(required=True)


INCIDENT_REPORTED_V1 = register(
    SERVICE,
    INCIDENT_REPORTED,
    1,
    IncidentReportedV1,
    "A grid worker or resident reported an incident; emitted once the report is stored.",
)


class IncidentPlaceV1(marshmallow.Schema):
    """Which incident, of what category, where: the part every later grid event shares."""

    incident_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.String(required=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)


class IncidentTransitionV1(IncidentPlaceV1):
    """One lifecycle step: who acted is not published, only the step itself."""

    action = fields.String(required=True)
    from_state = fields.String(required=True)
    to_state = fields.String(required=True)
    department = fields.String(load_default=None, dump_default=None, allow_none=True)
    at = fields.AwareDateTime(required=True)
    #: On ``incident.dispatched`` only: the co-handling departments (吹哨报到).
    co_departments = fields.List(fields.String(), load_default=list)
    #: On the steps that conclude a report (``closed``, ``rejected``, ``merged``):
    #: whether it was answered by its acknowledge deadline; null if it had no such clock.
    answered_in_time = fields.Boolean(load_default=None, dump_default=None, allow_none=True)


#: The event each lifecycle action emits (``check`` emits ``closed`` or ``reopened``).
TRANSITION_EVENTS = {
    "accept": "incident.accepted",
    "reject": "incident.rejected",
    "dispatch": "incident.dispatched",
    "return_case": "incident.returned",
    "start": "incident.started",
    "report_handled": "incident.handled",
    "defer": "incident.deferred",
    "resume": "incident.resumed",
    "reopen": "incident.reopened",
}
INCIDENT_CLOSED = "incident.closed"
INCIDENT_REOPENED = "incident.reopened"

TRANSITION_SPECS = {
    name: register(
        SERVICE,
        name,
        1,
        IncidentTransitionV1,
        f"The incident moved through the lifecycle step {name.split('.')[1]}.",
    )
    for name in sorted({*TRANSITION_EVENTS.values(), INCIDENT_CLOSED})
}


def transition_event(action: str, to_state: str) -> str:
    """The event name for a lifecycle step."""
    if action == "check":
        return INCIDENT_REOPENED if to_state == "reopened" else INCIDENT_CLOSED
    return TRANSITION_EVENTS[action]


class IncidentClockAlertV1(IncidentPlaceV1):
    """A time limit of an incident was nearly reached, passed, or escalated."""

    clock = fields.String(required=True)
    deadline = fields.AwareDateTime(required=True)
    department = fields.String(load_default=None, dump_default=None, allow_none=True)


INCIDENT_WARNED = "incident.warned"
INCIDENT_OVERDUE = "incident.overdue"
INCIDENT_ESCALATED = "incident.escalated"

ALERT_SPECS = {
    alert: register(
        SERVICE,
        f"incident.{alert}",
        1,
        IncidentClockAlertV1,
        f"An incident's time limit was {alert} (acknowledge, dispatch, sign-for, resolve or "
        "feedback clock).",
    )
    for alert in ("warned", "overdue")
}


# Co-handling (吹哨报到), extensions (延期) and escalation levels.


class IncidentSubtaskHandledV1(IncidentTransitionV1):
    """A co-handling department reported its sub-task handled; the state does not change."""

    co_department = fields.String(required=True)


class IncidentExtensionV1(IncidentTransitionV1):
    """An extension was requested, approved or refused; the state does not change."""

    target_date = fields.Date(required=True)


class IncidentEscalatedV1(IncidentClockAlertV1):
    """One escalation level of a clock fell due: ``level`` counts from 1, ``target`` is
    where the case goes up to (for example ``sub_district``, ``district``)."""

    level = fields.Integer(required=True, validate=validate.Range(min=1))
    target = fields.String(required=True)


INCIDENT_SUBTASK_HANDLED = "incident.subtask_handled"
INCIDENT_EXTENSION_REQUESTED = "incident.extension_requested"
INCIDENT_EXTENSION_APPROVED = "incident.extension_approved"
INCIDENT_EXTENSION_REFUSED = "incident.extension_refused"

TRANSITION_EVENTS.update(
    {
        "report_subtask": INCIDENT_SUBTASK_HANDLED,
        "request_extension": INCIDENT_EXTENSION_REQUESTED,
        "approve_extension": INCIDENT_EXTENSION_APPROVED,
        "refuse_extension": INCIDENT_EXTENSION_REFUSED,
    }
)
TRANSITION_SPECS[INCIDENT_SUBTASK_HANDLED] = register(
    SERVICE,
    INCIDENT_SUBTASK_HANDLED,
    1,
    IncidentSubtaskHandledV1,
    "A co-handling department (吹哨报到) reported its sub-task of an incident handled.",
)
TRANSITION_SPECS.update(
    {
        name: register(
            SERVICE, name, 1, IncidentExtensionV1, f"An extension (延期) of an incident was {verb}."
        )
        for name, verb in (
            (INCIDENT_EXTENSION_REQUESTED, "requested by the lead department"),
            (INCIDENT_EXTENSION_APPROVED, "approved: the resolve deadline moved to the target"),
            (INCIDENT_EXTENSION_REFUSED, "refused: the resolve deadline is unchanged"),
        )
    }
)
ALERT_SPECS["escalated"] = register(
    SERVICE,
    INCIDENT_ESCALATED,
    1,
    IncidentEscalatedV1,
    "An incident's clock passed one of its escalation levels; each level is raised once.",
)


class IncidentRatedV1(IncidentPlaceV1):
    """The reporter rated a closure (评): the score only, never the comment or the reporter."""

    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    outcome = fields.String(
        required=True, validate=validate.OneOf(["closed_resolved", "closed_unresolved"])
    )
    department = fields.String(load_default=None, dump_default=None, allow_none=True)
    at = fields.AwareDateTime(required=True)


INCIDENT_RATED = "incident.rated"

INCIDENT_RATED_V1 = register(
    SERVICE,
    INCIDENT_RATED,
    1,
    IncidentRatedV1,
    "The reporter rated a closed incident 1 to 5; counts towards the satisfaction rate.",
)


# Merging a duplicate (合并).


class IncidentMergedV1(IncidentTransitionV1):
    """A duplicate report was merged into an open incident; follow ``merged_into``."""

    merged_into = fields.String(required=True)


INCIDENT_MERGED = "incident.merged"
TRANSITION_EVENTS["merge"] = INCIDENT_MERGED
TRANSITION_SPECS[INCIDENT_MERGED] = register(
    SERVICE,
    INCIDENT_MERGED,
    1,
    IncidentMergedV1,
    "A duplicate incident was merged into the open incident it repeats (terminal).",
)
