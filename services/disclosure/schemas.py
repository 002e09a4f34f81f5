"""Disclosure's HTTP schemas."""

import marshmallow
from marshmallow import fields, validate


class EntryQuerySchema(marshmallow.Schema):
    community = fields.String(validate=validate.Length(min=1, max=64))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class EntrySchema(marshmallow.Schema):
    id = fields.String()
    seq = fields.Integer()
    kind = fields.String()
    cadence = fields.String()
    community = fields.String()
    title = fields.String()
    body = fields.Dict()
    references = fields.List(fields.String())
    published_at = fields.AwareDateTime()
    prev_hash = fields.String()
    entry_hash = fields.String()


class EntryPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(EntrySchema))
