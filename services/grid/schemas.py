"""The grid's HTTP schemas: what a report may contain and what the API returns."""

import marshmallow
from marshmallow import fields, validate

from shequ_services.grid.domain import CHANNELS
from shequ_services.grid.workflow import RULES

MAX_DESCRIPTION = 2000


class LocationSchema(marshmallow.Schema):
    lat = fields.Float(required=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(required=True, validate=validate.Range(min=-180, max=180))


class IncidentReportSchema(marshmallow.Schema):
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, load_default=None)
    channel = fields.String(load_default=None, validate=validate.OneOf(CHANNELS))


class IncidentSchema(marshmallow.Schema):
    id = fields.String()
    category = fields.String()
    grid_cell = fields.String()
    community = fields.String()
    description = fields.String()
    location = fields.Nested(LocationSchema, allow_none=True)
    channel = fields.String()
    urgency = fields.String()
    status = fields.String()
    reported_at = fields.AwareDateTime()
    version = fields.Integer()
    department = fields.String(allow_none=True)


class IncidentListQuerySchema(marshmallow.Schema):
    community = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class CategorySchema(marshmallow.Schema):
    code = fields.String()
    name_zh = fields.String()
    name_en = fields.String()
    urgency = fields.String()
    department = fields.String()
    opens_mediation = fields.Boolean()
    volunteer_task = fields.Boolean()
    sensitive = fields.Boolean()


class TransitionRequestSchema(marshmallow.Schema):
    """One lifecycle step; which of the optional fields are needed depends on the action."""

    action = fields.String(required=True, validate=validate.OneOf(sorted(RULES)))
    expected_version = fields.Integer(required=True, validate=validate.Range(min=1))
    reason = fields.String(validate=validate.Length(min=1, max=1000))
    department = fields.String(validate=validate.Length(min=1, max=64))
    feedback = fields.String(validate=validate.Length(min=1, max=2000))
    outcome = fields.String(validate=validate.Length(min=1, max=32))
    target_date = fields.Date()
    note = fields.String(validate=validate.Length(min=1, max=1000))


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_state = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


class IncidentPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(IncidentSchema))


class HistorySchema(marshmallow.Schema):
    items = fields.List(fields.Nested(HistoryEntrySchema))
