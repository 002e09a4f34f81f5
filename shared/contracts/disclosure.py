"""Events produced by the disclosure service."""

import marshmallow
from marshmallow import fields

from shequ.contracts.registry import register

SERVICE = "disclosure"

ENTRY_PUBLISHED = "entry.published"
CHECKPOINT_SIGNED = "checkpoint.signed"


class EntryPublishedV1(marshmallow.Schema):
    """An entry's place in the log and what kind it is; its content is on the board."""

    index = fields.Integer(required=True)
    kind = fields.String(required=True)
    cadence = fields.String(required=True)
    community = fields.String(required=True)
    period = fields.String(required=True)
    #: SHA-256(0x00 ‖ leaf bytes), base64: what the Merkle tree holds for this entry.
    leaf_hash = fields.String(required=True)


ENTRY_PUBLISHED_V1 = register(
    SERVICE,
    ENTRY_PUBLISHED,
    1,
    EntryPublishedV1,
    "An entry was appended to the public disclosure log.",
)


class CheckpointSignedV1(marshmallow.Schema):
    """A signed checkpoint of the log: witnesses and mirrors fetch and check it."""

    origin = fields.String(required=True)
    size = fields.Integer(required=True)
    root_hash = fields.String(required=True)


CHECKPOINT_SIGNED_V1 = register(
    SERVICE,
    CHECKPOINT_SIGNED,
    1,
    CheckpointSignedV1,
    "The district signed a checkpoint (origin, tree size, root hash) of the disclosure log.",
)
