"""Notify's HTTP schemas, and the sample payloads templates are checked against."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import marshmallow
from marshmallow import ValidationError, fields, validate, validates

from shequ.contracts import EventSpec
from shequ.http import QueryList
from shequ.pagination import MAX_CURSOR_LENGTH
from shequ_services.notify.domain import AUDIENCES, LANGUAGES, URGENCIES

ID = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", error="letters, digits, _ . : - only")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def sample_payload(schema: marshmallow.Schema) -> dict[str, Any]:
    """A payload with every declared field filled, as a template will see it (JSON form)."""
    return {name: _sample(name, field) for name, field in schema.fields.items()}


def _sample(name: str, field: fields.Field) -> Any:
    if isinstance(field, fields.Nested):
        nested = field.schema
        return sample_payload(nested)
    if isinstance(field, fields.List):
        return [_sample(name, field.inner)]
    if isinstance(field, fields.Boolean):
        return True
    if isinstance(field, fields.Integer | fields.Float | fields.Decimal):
        return 1
    if isinstance(field, fields.DateTime):
        return "2026-01-01T08:00:00+08:00"
    if isinstance(field, fields.Date):
        return "2026-01-01"
    if isinstance(field, fields.Dict):
        return {}
    return f"sample-{name}"


def sample_context(spec: EventSpec) -> dict[str, Any]:
    return {
        **sample_payload(spec.schema()),
        "event": {
            "id": "00000000-0000-0000-0000-000000000000",
            "type": spec.type,
            "subject": "sample-subject",
            "time": "2026-01-01T08:00:00+08:00",
        },
    }


class NotificationQuerySchema(marshmallow.Schema):
    subject_ref = fields.String(required=True, validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class DeliverySchema(marshmallow.Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "notification, subscription or digest"})
    event_id = fields.String()
    event_type = fields.String()
    subject_ref = fields.String()
    recipient = fields.String(metadata={"description": "a recipient id, never contact data"})
    audience = fields.String()
    rule = fields.String(allow_none=True)
    template = fields.String(allow_none=True)
    urgency = fields.String()
    status = fields.String(
        metadata={"description": "pending, held, sent, digested, paused, skipped or dead"}
    )
    channel = fields.String(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    waiting_for = fields.String(allow_none=True)
    subscription = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    due_at = fields.AwareDateTime(allow_none=True)
    sent_at = fields.AwareDateTime(allow_none=True)


class DeliveryListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(DeliverySchema))


def _cursor() -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH),
        metadata={"description": "next_cursor of the previous page, with the same filters"},
    )


NEXT_CURSOR = {"description": "null on the last page"}


class DeliveryPageSchema(DeliveryListSchema):
    next_cursor = fields.String(allow_none=True, metadata=NEXT_CURSOR)


class DeliveryQuerySchema(marshmallow.Schema):
    event_id = fields.String(validate=validate.Length(min=1, max=128))
    recipient = fields.String(validate=validate.Length(min=1, max=160))
    status = QueryList(
        fields.String(
            validate=validate.OneOf(
                ["pending", "held", "sent", "digested", "paused", "skipped", "dead"]
            )
        )
    )
    kind = fields.String(validate=validate.OneOf(["notification", "subscription", "digest"]))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = _cursor()


class AttemptSchema(marshmallow.Schema):
    id = fields.String()
    delivery_id = fields.String()
    attempt = fields.Integer(metadata={"description": "counts from 1 per delivery"})
    event_id = fields.String()
    event_type = fields.String()
    kind = fields.String()
    subscription = fields.String(allow_none=True)
    recipient = fields.String()
    channel = fields.String()
    outcome = fields.String(metadata={"description": "sent, failed, fallback or dead"})
    latency_ms = fields.Float()
    error = fields.String(allow_none=True)
    at = fields.AwareDateTime()


class AttemptPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(AttemptSchema))
    next_cursor = fields.String(allow_none=True, metadata=NEXT_CURSOR)


class AttemptQuerySchema(marshmallow.Schema):
    event_id = fields.String(validate=validate.Length(min=1, max=128))
    recipient = fields.String(validate=validate.Length(min=1, max=160))
    delivery_id = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = _cursor()

    @marshmallow.validates_schema
    def one_filter(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not {"event_id", "recipient", "delivery_id"} & set(data):
            raise ValidationError("give event_id, recipient or delivery_id", "_schema")


class RuleBodySchema(marshmallow.Schema):
    event_type = fields.String(required=True, validate=validate.Length(min=1, max=128))
    audiences = fields.List(
        fields.String(validate=validate.OneOf(AUDIENCES)),
        required=True,
        validate=validate.Length(min=1, max=len(AUDIENCES)),
    )
    template = fields.String(required=True, validate=ID)
    urgency = fields.String(load_default="normal", validate=validate.OneOf(URGENCIES))
    fallback = fields.Boolean(load_default=True)
    enabled = fields.Boolean(load_default=True)


class RuleSchema(RuleBodySchema):
    id = fields.String()


class RuleListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(RuleSchema))


def _texts() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.OneOf(LANGUAGES)),
        values=fields.String(validate=validate.Length(min=1, max=4000)),
    )


class TemplateBodySchema(marshmallow.Schema):
    body = _texts()
    subject = _texts()

    @marshmallow.validates_schema
    def some_text(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("body"):
            raise ValidationError("give the text in zh-CN, en or both", "body")


class TemplateSchema(marshmallow.Schema):
    id = fields.String()
    body = fields.Dict(keys=fields.String(), values=fields.String())
    subject = fields.Dict(keys=fields.String(), values=fields.String())


class TemplateListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(TemplateSchema))


class ContactChannelSchema(marshmallow.Schema):
    kind = fields.String(required=True, validate=validate.Length(min=1, max=32))
    address = fields.String(load_default="", validate=validate.Length(max=500))


class QuietHoursSchema(marshmallow.Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)

    @validates("start")
    def check_start(self, value: str, **kwargs: Any) -> None:
        if not HHMM.match(value):
            raise ValidationError("HH:MM, 00:00 to 23:59")

    @validates("end")
    def check_end(self, value: str, **kwargs: Any) -> None:
        if not HHMM.match(value):
            raise ValidationError("HH:MM, 00:00 to 23:59")


class ContactBodySchema(marshmallow.Schema):
    channels = fields.List(
        fields.Nested(ContactChannelSchema), required=True, validate=validate.Length(max=5)
    )
    language = fields.String(load_default="zh-CN", validate=validate.OneOf(LANGUAGES))
    timezone = fields.String(load_default="Asia/Shanghai")
    quiet_hours = fields.Nested(QuietHoursSchema, load_default=None, allow_none=True)
    digest = fields.Boolean(load_default=False)

    @validates("timezone")
    def check_timezone(self, value: str, **kwargs: Any) -> None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError("not a known IANA time zone") from exc


class ContactSchema(marshmallow.Schema):
    recipient = fields.String()
    channels = fields.List(fields.Nested(ContactChannelSchema))
    language = fields.String()
    timezone = fields.String()
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True)
    digest = fields.Boolean()
    updated_at = fields.AwareDateTime()


class SubscriptionBodySchema(marshmallow.Schema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=500))
    event_types = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        required=True,
        validate=validate.Length(min=1, max=50),
    )


class SubscriptionSchema(marshmallow.Schema):
    id = fields.String()
    url = fields.String()
    event_types = fields.List(fields.String())
    status = fields.String(metadata={"description": "active, paused or deleted"})
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class SubscriptionCreatedSchema(SubscriptionSchema):
    secret = fields.String(metadata={"description": "shown once; signs every delivery"})


class SubscriptionListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(SubscriptionSchema))


class SecretSchema(marshmallow.Schema):
    id = fields.String()
    secret = fields.String()
