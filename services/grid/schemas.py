"""The grid's HTTP schemas: what a report may contain and what the API returns."""

import marshmallow
from marshmallow import fields, validate

from shequ_services.grid.domain import CHANNELS
from shequ_services.grid.rates import GROUPINGS
from shequ_services.grid.rating import MAX_COMMENT
from shequ_services.grid.workflow import RULES

MAX_DESCRIPTION = 2000
MAX_CO_DEPARTMENTS = 10


class LocationSchema(marshmallow.Schema):
    lat = fields.Float(required=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(required=True, validate=validate.Range(min=-180, max=180))


class IncidentReportSchema(marshmallow.Schema):
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, load_default=None)
    channel = fields.String(load_default=None, validate=validate.OneOf(CHANNELS))


class SubtaskSchema(marshmallow.Schema):
    """A co-handling department's part of a case (吹哨报到)."""

    department = fields.String()
    status = fields.String()
    dispatched_at = fields.AwareDateTime()
    handled_at = fields.AwareDateTime(allow_none=True)


class ExtensionSchema(marshmallow.Schema):
    """The latest extension request (延期) and its decision."""

    status = fields.String()
    department = fields.String(allow_none=True)
    target_date = fields.String()
    requested_at = fields.AwareDateTime()
    decided_at = fields.AwareDateTime(allow_none=True)


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
    subtasks = fields.List(fields.Nested(SubtaskSchema))
    extension = fields.Nested(ExtensionSchema, allow_none=True)
    ratings = fields.List(fields.Nested(lambda: RatingSchema()))


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
    co_departments = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=MAX_CO_DEPARTMENTS),
    )


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_state = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


class RatingSchema(marshmallow.Schema):
    score = fields.Integer()
    comment = fields.String(allow_none=True)
    at = fields.AwareDateTime()
    closure = fields.Integer()


class RatingRequestSchema(marshmallow.Schema):
    """The reporter's rating of the current closure; not a lifecycle step."""

    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_COMMENT)
    )
    expected_version = fields.Integer(required=True, validate=validate.Range(min=1))


class RatesQuerySchema(marshmallow.Schema):
    """Filters of ``GET rates``; ``from``/``to`` are local calendar days, both included."""

    community = fields.String(validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(min=1, max=64))
    department = fields.String(validate=validate.Length(min=1, max=64))
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    group_by = fields.String(validate=validate.OneOf(GROUPINGS))


class RatioSchema(marshmallow.Schema):
    numerator = fields.Integer()
    denominator = fields.Integer()
    value = fields.Float(allow_none=True)


class SpreadSchema(marshmallow.Schema):
    count = fields.Integer()
    median = fields.Float(allow_none=True)
    p90 = fields.Float(allow_none=True)


class RatesGroupSchema(marshmallow.Schema):
    key = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))
    incidents = fields.Integer()
    response_rate = fields.Nested(RatioSchema)
    resolution_rate = fields.Nested(RatioSchema)
    satisfaction_rate = fields.Nested(RatioSchema)
    stage_seconds = fields.Dict(keys=fields.String(), values=fields.Nested(SpreadSchema))


class PeriodSchema(marshmallow.Schema):
    from_ = fields.Date(data_key="from", attribute="first")
    to = fields.Date(attribute="last")
    timezone = fields.Function(lambda period: period.tz.key)


class RatesSchema(marshmallow.Schema):
    period = fields.Nested(PeriodSchema)
    filters = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))
    group_by = fields.String(allow_none=True)
    definitions = fields.Dict(keys=fields.String(), values=fields.String())
    groups = fields.List(fields.Nested(RatesGroupSchema))
