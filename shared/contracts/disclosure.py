"""Events produced by the disclosure service."""

import marshmallow
from marshmallow import fields

from shequ.contracts.registry import register

SERVICE = "disclosure"

ENTRY_PUBLISHED = "entry.published"


class EntryPublishedV1(marshmallow.Schema):
    entry_id = fields.String(required=True)
    seq = fields.Integer(required=True)
    kind = fields.String(required=True)
    community = fields.String(required=True)
    entry_hash = fields.String(required=True)


ENTRY_PUBLISHED_V1 = register(
    SERVICE,
    ENTRY_PUBLISHED,
    1,
    EntryPublishedV1,
    "An entry was appended to the public disclosure log.",
)
