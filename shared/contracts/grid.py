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
    for alert in ("warned", "overdue", "escalated")
}


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
