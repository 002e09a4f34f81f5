"""Disclosure's HTTP schemas. Hashes, signatures and leaf bytes travel as base64."""

from __future__ import annotations

import re
from typing import Any

import marshmallow
from marshmallow import fields, validate

from shequ_services.disclosure.checkpoint import b64
from shequ_services.disclosure.domain import CADENCES, KINDS, PERIOD_PATTERN, STAFF_KINDS
from shequ_services.disclosure.merkle import leaf_hash

MONTH = validate.Regexp(r"^\d{4}-(0[1-9]|1[0-2])$", error="a month is written 2026-11")
PERIOD = validate.Regexp(PERIOD_PATTERN, error="a month (2026-11), a quarter (2026-Q4) or a year")
COMMUNITY = validate.Length(min=1, max=64)
BODY_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_LISTED = 1000


class EntryQuerySchema(marshmallow.Schema):
    start = fields.Integer(load_default=0, validate=validate.Range(min=0))
    end = fields.Integer(validate=validate.Range(min=1))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_LISTED))
    community = fields.String(validate=COMMUNITY)
    kind = fields.String(validate=validate.OneOf(list(KINDS)))
    period = fields.String(validate=PERIOD)
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]))

    @marshmallow.validates_schema
    def end_after_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "end" in data and data["end"] <= data["start"]:
            raise marshmallow.ValidationError("end must be greater than start", "end")


class EntrySchema(marshmallow.Schema):
    index = fields.Integer()
    kind = fields.String()
    cadence = fields.String()
    community = fields.String()
    period = fields.String()
    title = fields.String()
    body = fields.Dict()
    references = fields.List(fields.String())
    supersedes = fields.Integer(allow_none=True)
    origin = fields.String(
        metadata={"description": "events (written by the platform) or staff (by a person)"}
    )
    published_at = fields.AwareDateTime()
    leaf = fields.Function(
        lambda entry: b64(entry.leaf),
        metadata={"description": "base64 of the exact bytes the log hashed for this entry"},
    )
    leaf_hash = fields.Function(
        lambda entry: b64(leaf_hash(entry.leaf)),
        metadata={"description": "base64 SHA-256(0x00 || leaf): the tree's leaf"},
    )


class EntryPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(EntrySchema))


def _body_value(value: Any) -> bool:
    if isinstance(value, bool | int) or value is None:
        return True
    if isinstance(value, str):
        return len(value) <= 4000
    if isinstance(value, list):
        return len(value) <= 100 and all(isinstance(v, str) and len(v) <= 500 for v in value)
    return False


class EntryDraftSchema(marshmallow.Schema):
    """What staff publish. ``parties`` names people the text must not mention; never stored."""

    kind = fields.String(required=True, validate=validate.OneOf(STAFF_KINDS))
    cadence = fields.String(required=True, validate=validate.OneOf(list(CADENCES)))
    community = fields.String(required=True, validate=COMMUNITY)
    period = fields.String(required=True, validate=PERIOD)
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    body = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(BODY_KEY, error="keys are lower_snake_case, up to 40 chars")
        ),
        values=fields.Raw(allow_none=True),
        load_default=dict,
        validate=validate.Length(max=50),
    )
    references = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=list,
        validate=validate.Length(max=20),
    )
    supersedes = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    parties = fields.List(
        fields.String(validate=validate.Length(min=2, max=40)),
        load_default=list,
        load_only=True,
        validate=validate.Length(max=50),
    )

    @marshmallow.validates("body")
    def body_values(self, value: dict[str, Any], **kwargs: Any) -> None:
        bad = sorted(key for key, item in value.items() if not _body_value(item))
        if bad:
            raise marshmallow.ValidationError(
                f"values are text (up to 4000 characters), integers, true/false, null or a "
                f"list of texts: not {', '.join(bad)}"
            )


class ProofQuerySchema(marshmallow.Schema):
    size = fields.Integer(validate=validate.Range(min=1))


class InclusionProofSchema(marshmallow.Schema):
    leaf_index = fields.Integer()
    tree_size = fields.Integer()
    leaf_hash = fields.String()
    audit_path = fields.List(fields.String())


class ConsistencyQuerySchema(marshmallow.Schema):
    first = fields.Integer(required=True, validate=validate.Range(min=1))
    second = fields.Integer(validate=validate.Range(min=1))


class ConsistencyProofSchema(marshmallow.Schema):
    first = fields.Integer()
    second = fields.Integer()
    consistency_path = fields.List(fields.String())


class CosignatureSchema(marshmallow.Schema):
    witness = fields.String(required=True, validate=validate.Length(min=1, max=64))
    timestamp = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    signature = fields.String(required=True, validate=validate.Length(min=1, max=200))


class CheckpointSchema(marshmallow.Schema):
    origin = fields.String()
    size = fields.Integer()
    root_hash = fields.String()
    signature = fields.String()
    key_id = fields.String()
    signed_at = fields.AwareDateTime()
    note = fields.String(metadata={"description": "the signed checkpoint body, as text"})
    cosignatures = fields.List(fields.Nested(CosignatureSchema))


class WitnessKeySchema(marshmallow.Schema):
    name = fields.String()
    public_key = fields.String()


class PublicKeySchema(marshmallow.Schema):
    origin = fields.String()
    algorithm = fields.String()
    public_key = fields.String()
    key_id = fields.String()
    witnesses = fields.List(fields.Nested(WitnessKeySchema))


class FiguresRequestSchema(marshmallow.Schema):
    community = fields.String(required=True, validate=COMMUNITY)
    month = fields.String(required=True, validate=MONTH)


class FiguresResultSchema(marshmallow.Schema):
    community = fields.String()
    month = fields.String()
    figures = fields.Nested(EntrySchema, allow_none=True)
    published = fields.List(fields.Nested(EntrySchema))


# The public board (/board/): its GET forms send every field, empty meaning "all".


class BoardFiltersSchema(marshmallow.Schema):
    """The board's filters; an empty form field is no filter."""

    community = fields.String(validate=COMMUNITY)
    kind = fields.String(validate=validate.OneOf(list(KINDS)))
    month = fields.String(validate=MONTH)

    @marshmallow.pre_load
    def blank_is_absent(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value != ""}


class BoardQuerySchema(BoardFiltersSchema):
    """The filters and where the page starts: entries older than ``before`` or newer than
    ``after`` (indexes, so a page names the same entries however much is published later)."""

    before = fields.Integer(validate=validate.Range(min=1))
    after = fields.Integer(validate=validate.Range(min=0))

    @marshmallow.validates_schema
    def one_direction(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "before" in data and "after" in data:
            raise marshmallow.ValidationError("give before or after, not both", "after")


class BoardFiguresQuerySchema(marshmallow.Schema):
    """The figures page's form: both fields are needed to show a month."""

    community = fields.String(validate=COMMUNITY)
    month = fields.String(validate=MONTH)

    @marshmallow.pre_load
    def blank_is_absent(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value != ""}


class BoardEntrySchema(EntrySchema):
    url = fields.String(metadata={"description": "the entry's page on the board"})
    corrected_by = fields.Integer(
        allow_none=True, metadata={"description": "the latest entry that corrects this one"}
    )


class BoardPageSchema(marshmallow.Schema):
    """The board's list as JSON: the same entries, in the same order, as the HTML page."""

    items = fields.List(fields.Nested(BoardEntrySchema))
    older = fields.String(allow_none=True, metadata={"description": "the next page, older"})
    newer = fields.String(allow_none=True, metadata={"description": "the previous page, newer"})
