"""Mediation's HTTP schemas."""

import marshmallow
from marshmallow import fields, validate


class CaseQuerySchema(marshmallow.Schema):
    incident_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class CaseSchema(marshmallow.Schema):
    id = fields.String()
    incident_id = fields.String(allow_none=True)
    community = fields.String()
    dispute_type = fields.String()
    status = fields.String()
    opened_at = fields.AwareDateTime()


class CaseListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(CaseSchema))
