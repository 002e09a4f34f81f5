"""Events produced by the volunteer service."""

import marshmallow
from marshmallow import fields, validate

from shequ.contracts.registry import register

SERVICE = "volunteer"

TASK_CREATED = "task.created"


class TaskCreatedV1(marshmallow.Schema):
    task_id = fields.String(required=True)
    incident_id = fields.String(load_default=None, dump_default=None, allow_none=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)
    kind = fields.String(required=True)


TASK_CREATED_V1 = register(
    SERVICE,
    TASK_CREATED,
    1,
    TaskCreatedV1,
    "A volunteer task was created (from an incident, a visit round or staff).",
)

HOURS_APPROVED = "hours.approved"


class HoursApprovedV1(marshmallow.Schema):
    """A ledger entry of service time was approved; the volunteer is not named."""

    ledger_id = fields.String(required=True)
    community = fields.String(required=True)
    minutes = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    at = fields.AwareDateTime(required=True)
    #: Added within v1: the entry this one corrects upwards (its minutes are the addition).
    corrects = fields.String(load_default=None, dump_default=None, allow_none=True)


HOURS_APPROVED_V1 = register(
    SERVICE,
    HOURS_APPROVED,
    1,
    HoursApprovedV1,
    "Volunteer service time was approved in the hours ledger; disclosure totals it monthly.",
)


# Dispatch: ids and codes only. An offer names the volunteer it went to (an id,
# so notify can reach them through its own address book); no names or phones.


class TaskOfferV1(marshmallow.Schema):
    """One offer of a task to one volunteer, and its answer or lapse."""

    task_id = fields.String(required=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)
    kind = fields.String(required=True)
    volunteer_id = fields.String(required=True)
    at = fields.AwareDateTime(required=True)


class TaskOfferedV1(TaskOfferV1):
    deadline = fields.AwareDateTime(required=True)
    rank = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class TaskStateV1(marshmallow.Schema):
    """A task-level change: which task, where, when."""

    task_id = fields.String(required=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)
    kind = fields.String(required=True)
    source = fields.String(required=True, validate=validate.OneOf(["incident", "round", "staff"]))
    at = fields.AwareDateTime(required=True)


class TaskCompletedV1(TaskStateV1):
    minutes = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class TaskOverdueV1(TaskStateV1):
    due_at = fields.AwareDateTime(required=True)


class TaskEscalatedV1(TaskStateV1):
    reason = fields.String(
        required=True, validate=validate.OneOf(["no_candidates", "candidates_exhausted"])
    )


TASK_OFFERED = "task.offered"
TASK_ACCEPTED = "task.accepted"
TASK_DECLINED = "task.declined"
TASK_EXPIRED = "task.expired"
TASK_COMPLETED = "task.completed"
TASK_OVERDUE = "task.overdue"
TASK_ESCALATED = "task.escalated"

TASK_OFFERED_V1 = register(
    SERVICE,
    TASK_OFFERED,
    1,
    TaskOfferedV1,
    "A task was offered to one volunteer (by id) with a response deadline; notify tells them.",
)
TASK_ACCEPTED_V1 = register(
    SERVICE, TASK_ACCEPTED, 1, TaskOfferV1, "A volunteer accepted an offered task."
)
TASK_DECLINED_V1 = register(
    SERVICE, TASK_DECLINED, 1, TaskOfferV1, "A volunteer declined an offered task."
)
TASK_EXPIRED_V1 = register(
    SERVICE,
    TASK_EXPIRED,
    1,
    TaskOfferV1,
    "An offer lapsed unanswered at its deadline (or was withdrawn when another accepted).",
)
TASK_COMPLETED_V1 = register(
    SERVICE, TASK_COMPLETED, 1, TaskCompletedV1, "The assigned volunteer checked out: task done."
)
TASK_OVERDUE_V1 = register(
    SERVICE,
    TASK_OVERDUE,
    1,
    TaskOverdueV1,
    "A task (a monthly visit, say) passed its due time without being completed.",
)
TASK_ESCALATED_V1 = register(
    SERVICE,
    TASK_ESCALATED,
    1,
    TaskEscalatedV1,
    "Nobody is left to offer a task to: community staff must assign it.",
)

HOURS_CORRECTED = "hours.corrected"


class HoursCorrectedV1(marshmallow.Schema):
    """An approved correction that took time off an earlier entry (additions go as approved)."""

    ledger_id = fields.String(required=True)
    corrects = fields.String(required=True)
    community = fields.String(required=True)
    minutes_removed = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    at = fields.AwareDateTime(required=True)


HOURS_CORRECTED_V1 = register(
    SERVICE,
    HOURS_CORRECTED,
    1,
    HoursCorrectedV1,
    "An approved ledger correction removed service time from an earlier approved entry.",
)
