"""Events produced by the volunteer service."""

import marshmallow
from marshmallow import fields

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
