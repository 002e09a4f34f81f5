"""Events produced by the notify service."""

import marshmallow
from marshmallow import fields

from shequ.contracts.registry import register

SERVICE = "notify"

NOTIFICATION_SENT = "notification.sent"


class NotificationSentV1(marshmallow.Schema):
    notification_id = fields.String(required=True)
    template = fields.String(required=True)
    audience = fields.String(required=True)
    channel = fields.String(required=True)
    subject_ref = fields.String(required=True)


NOTIFICATION_SENT_V1 = register(
    SERVICE,
    NOTIFICATION_SENT,
    1,
    NotificationSentV1,
    "A notification was handed to its channel (the recipient is never named).",
)
