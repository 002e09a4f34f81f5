"""The CloudEvents 1.0 envelope (structured JSON mode) every Shequ event travels in.

``id`` is the deduplication key of every consumer; ``sequence`` increases per
subject so a consumer can tell an old state from a newer one when deliveries
arrive out of order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import marshmallow
from marshmallow import fields, validate

from shequ.contracts.registry import REGISTRY, EventSpec

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"


class EnvelopeError(ValueError):
    """A message is not a valid Shequ CloudEvent, or its payload breaks its schema."""


class _EnvelopeSchema(marshmallow.Schema):
    class Meta:
        unknown = marshmallow.EXCLUDE

    specversion = fields.String(required=True, validate=validate.Equal(SPEC_VERSION))
    id = fields.UUID(required=True)
    source = fields.String(required=True, validate=validate.Regexp(r"^/shequ/[^/]+/[a-z_]+$"))
    type = fields.String(required=True, validate=validate.Regexp(r"^shequ\.[a-z_]+\.[a-z_.]+$"))
    subject = fields.String(required=True)
    time = fields.AwareDateTime(required=True)
    datacontenttype = fields.String(required=True, validate=validate.Equal("application/json"))
    dataschema = fields.String(required=True)
    sequence = fields.Integer(required=True, validate=validate.Range(min=0))
    traceparent = fields.String(load_default=None)
    data = fields.Dict(required=True)


@dataclass(frozen=True)
class CloudEvent:
    """A validated event: envelope attributes plus the loaded payload."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    dataschema: str
    sequence: int
    data: dict[str, Any]
    traceparent: str | None = None
    spec: EventSpec | None = field(default=None, compare=False)

    def to_json_dict(self) -> dict[str, Any]:
        """The structured-mode body, ready for ``json.dumps``."""
        body: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "dataschema": self.dataschema,
            "sequence": self.sequence,
            "data": self.data,
        }
        if self.traceparent:
            body["traceparent"] = self.traceparent
        return body


def new_event(
    spec: EventSpec,
    *,
    district: str,
    subject: str,
    sequence: int,
    data: dict[str, Any],
    time: datetime | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """Build an event, validating the payload against its registered schema.

    The payload is dumped through the schema after validation, so only the
    fields the contract names ever leave the service: a stray personal field
    in ``data`` is dropped here rather than published.
    """
    schema = spec.schema()
    payload = schema.dump(data)
    errors = schema.validate(payload)
    if errors:
        raise EnvelopeError(f"{spec.type} payload is invalid: {errors}")
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=f"/shequ/{district}/{spec.service}",
        type=spec.type,
        subject=subject,
        time=time or datetime.now(UTC),
        dataschema=spec.dataschema,
        sequence=sequence,
        data=payload,
        traceparent=traceparent,
        spec=spec,
    )


def parse_event(body: Any) -> CloudEvent:
    """Validate a received structured-mode body and load its payload.

    Unknown payload fields are excluded (a producer may add fields within a
    version); a missing required field or an unknown ``dataschema`` is an
    ``EnvelopeError``, which the runtime treats as poison, not as a retry.
    """
    if not isinstance(body, dict):
        raise EnvelopeError("event body is not a JSON object")
    try:
        envelope = _EnvelopeSchema().load(body)
    except marshmallow.ValidationError as exc:
        raise EnvelopeError(f"invalid CloudEvents envelope: {exc.messages}") from exc
    try:
        spec = REGISTRY.by_dataschema(envelope["dataschema"])
    except KeyError as exc:
        raise EnvelopeError(str(exc)) from exc
    if spec.type != envelope["type"]:
        raise EnvelopeError(f"type {envelope['type']} does not match schema {spec.dataschema}")
    try:
        data = spec.schema(unknown=marshmallow.EXCLUDE).load(envelope["data"])
    except marshmallow.ValidationError as exc:
        raise EnvelopeError(f"{spec.type} payload is invalid: {exc.messages}") from exc
    return CloudEvent(
        id=str(envelope["id"]),
        source=envelope["source"],
        type=envelope["type"],
        subject=envelope["subject"],
        time=envelope["time"],
        dataschema=envelope["dataschema"],
        sequence=envelope["sequence"],
        data=data,
        traceparent=envelope.get("traceparent"),
        spec=spec,
    )
