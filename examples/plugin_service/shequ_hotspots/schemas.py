"""The hotspots HTTP schemas."""

import marshmallow
from marshmallow import fields, validate


class CellQuerySchema(marshmallow.Schema):
    community = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class CellSchema(marshmallow.Schema):
    community = fields.String()
    grid_cell = fields.String()
    category = fields.String()
    reports = fields.Integer()
    last_reported_at = fields.AwareDateTime()


class CellListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(CellSchema))
