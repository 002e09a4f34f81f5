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


HOURS_APPROVED_V1 = register(
    SERVICE,
    HOURS_APPROVED,
    1,
    HoursApprovedV1,
    "Volunteer service time was approved in the hours ledger; disclosure totals it monthly.",
)
