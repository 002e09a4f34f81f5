"""Notify's HTTP schemas."""

import marshmallow
from marshmallow import fields, validate


class NotificationQuerySchema(marshmallow.Schema):
    subject_ref = fields.String(required=True, validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class NotificationSchema(marshmallow.Schema):
    id = fields.String()
    template = fields.String()
    audience = fields.String()
    subject_ref = fields.String()
    channel = fields.String()
    status = fields.String()
    text = fields.String()
    created_at = fields.AwareDateTime()
    source_event = fields.String()


class NotificationListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(NotificationSchema))
