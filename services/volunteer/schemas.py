"""The volunteer service's HTTP schemas."""

import marshmallow
from marshmallow import fields, validate


class TaskQuerySchema(marshmallow.Schema):
    incident_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class TaskSchema(marshmallow.Schema):
    id = fields.String()
    incident_id = fields.String(allow_none=True)
    kind = fields.String()
    community = fields.String()
    grid_cell = fields.String()
    status = fields.String()
    created_at = fields.AwareDateTime()


class TaskListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(TaskSchema))
