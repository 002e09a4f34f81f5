"""The grid's HTTP schemas: what a report may contain and what the API returns."""

from datetime import UTC
from typing import Any

import marshmallow
from marshmallow import fields, validate, validates_schema

from shequ.http import QueryList
from shequ.pagination import MAX_CURSOR_LENGTH
from shequ_services.grid.domain import CHANNELS, URGENCY_TIERS
from shequ_services.grid.workflow import RULES, STATES

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
    description = fields.String(metadata={"description": "absent from a redacted view"})
    location = fields.Nested(
        LocationSchema, allow_none=True, metadata={"description": "absent from a redacted view"}
    )
    channel = fields.String()
    urgency = fields.String()
    status = fields.String()
    reported_at = fields.AwareDateTime()
    version = fields.Integer()
    department = fields.String(allow_none=True)


class IncidentListQuerySchema(marshmallow.Schema):
    """Listing filters (all must hold) and the page: ``limit`` and the previous page's cursor."""

    community = fields.String(validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(min=1, max=64))
    status = QueryList(
        fields.String(validate=validate.OneOf(STATES)),
        validate=validate.Length(min=1, max=len(STATES)),
        metadata={"description": "one or more states, repeated or comma-separated"},
    )
    department = fields.String(validate=validate.Length(min=1, max=64))
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    urgency = fields.String(validate=validate.OneOf(URGENCY_TIERS))
    reported_from = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "inclusive; UTC if no offset is given"}
    )
    reported_to = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "exclusive; UTC if no offset is given"}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH),
        metadata={"description": "next_cursor of the previous page, with the same filters"},
    )

    @validates_schema
    def _period_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("reported_from"), data.get("reported_to")
        if start is not None and end is not None and start >= end:
            raise marshmallow.ValidationError("must be after reported_from", "reported_to")


class IncidentPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(IncidentSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "null on the last page"})


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


#: What the redacted view of a history leaves out: who acted (the first actor is the
#: reporter) and the steps' free-text fields (reasons, feedback, notes).
REDACTED_HISTORY_FIELDS = ("actor", "fields_")


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_state = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


class HistorySchema(marshmallow.Schema):
    items = fields.List(fields.Nested(HistoryEntrySchema))
