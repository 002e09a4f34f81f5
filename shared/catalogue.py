"""The published event catalogue: AsyncAPI 3.0 and a readable page, both from the registry.

Other bureaus build on what is published here, so nothing is written by hand:
payload schemas are converted from the marshmallow contracts by apispec's
``MarshmallowPlugin`` (the same converter the HTTP APIs' OpenAPI documents
use), and each example is generated from the schema and loaded back through
it, so a documented example is always a valid payload.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import marshmallow
import yaml
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields, validate

from shequ.contracts import REGISTRY, EventSpec
from shequ.contracts.envelope import CONTENT_TYPE, SPEC_VERSION

ASYNCAPI_VERSION = "3.0.0"
#: Bumped by hand when the catalogue's shape (not an event) changes.
CATALOGUE_VERSION = "1.0.0"
ENVELOPE = "CloudEventEnvelope"
_REF_PREFIX = "#/components/schemas/"
_EXAMPLE_TIME = datetime(2026, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))


def _schema_name(schema: Any) -> str:
    """``grid`` + ``IncidentReportedV1``: contract classes are unique per producing module."""
    cls = schema if isinstance(schema, type) else type(schema)
    module = cls.__module__.rsplit(".", 1)[-1]
    return f"{module.capitalize()}{cls.__name__}"


def payload_schemas() -> tuple[dict[str, str], dict[str, Any]]:
    """JSON Schemas of every registered payload.

    Returns the schema name per ``(type, version)`` key (``"shequ.grid.incident.reported@1"``)
    and the named schemas, nested ones included, referring to each other by
    ``#/components/schemas/<name>`` (the same place in OpenAPI and AsyncAPI).
    OpenAPI 3.1 output is plain JSON Schema (nullable is ``type: [.., "null"]``),
    which is what AsyncAPI's default schema format accepts.
    """
    spec = APISpec(
        title="shequ events",
        version=CATALOGUE_VERSION,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
    )
    names: dict[str, str] = {}
    for event in REGISTRY.published():
        name = _schema_name(event.schema)
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=event.schema)
        names[event_key(event)] = name
    schemas = spec.to_dict()["components"]["schemas"]
    for cls in _schema_classes():
        doc = " ".join((cls.__doc__ or "").split())
        if doc and _schema_name(cls) in schemas:
            schemas[_schema_name(cls)].setdefault("description", doc)
    for schema in schemas.values():
        # The contracts load with unknown fields excluded and producers may add
        # fields within a version: a published schema must not forbid them.
        schema.pop("additionalProperties", None)
    return names, {name: schemas[name] for name in sorted(schemas)}


def _schema_classes() -> list[type[marshmallow.Schema]]:
    """Every payload schema class and the classes nested in them."""
    found: list[type[marshmallow.Schema]] = []
    pending = [event.schema for event in REGISTRY.published()]
    while pending:
        cls = pending.pop()
        if cls in found:
            continue
        found.append(cls)
        for field in cls().fields.values():
            inner = field.inner if isinstance(field, fields.List) else field
            if isinstance(inner, fields.Nested):
                nested = inner.nested
                pending.append(nested if isinstance(nested, type) else type(nested))  # type: ignore[arg-type]
    return found


def event_key(event: EventSpec) -> str:
    return f"{event.type}@{event.version}"


def resolved(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A schema with every ``$ref`` into ``components`` replaced by its target, recursively."""
    if "$ref" in schema:
        return resolved(components[schema["$ref"].removeprefix(_REF_PREFIX)], components)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            out[key] = (
                resolved(value, components)
                if key != "properties"
                else {prop: resolved(sub, components) for prop, sub in value.items()}
            )
        elif isinstance(value, list):
            out[key] = [resolved(v, components) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


# -- examples -----------------------------------------------------------------


def example_payload(schema_cls: type[marshmallow.Schema]) -> dict[str, Any]:
    """A payload with every field set, built from the schema's field types and validators."""
    return {
        field.data_key or name: _example_value(name, field)
        for name, field in schema_cls().dump_fields.items()
    }


def _example_value(name: str, field: fields.Field) -> Any:
    choices = [v for v in _validators(field) if isinstance(v, validate.OneOf)]
    if choices:
        return list(choices[0].choices)[0]
    if isinstance(field, fields.Nested):
        nested = field.nested
        return example_payload(nested if isinstance(nested, type) else type(nested))  # type: ignore[arg-type]
    if isinstance(field, fields.List):
        return [_example_value(name, field.inner)]
    if isinstance(field, fields.Boolean):
        return True
    if isinstance(field, fields.Integer):
        low = [v.min for v in _validators(field) if isinstance(v, validate.Range) and v.min]
        return int(low[0]) if low else 1
    if isinstance(field, fields.DateTime):
        return _EXAMPLE_TIME.isoformat()
    if isinstance(field, fields.Date):
        return date(2026, 5, 31).isoformat()
    if isinstance(field, fields.UUID):
        return "7f1c2e4a-58b2-4d4e-9a39-3c0f6d2b9e10"
    if isinstance(field, fields.Dict):
        return {}
    return f"{name.removesuffix('_id')}-1" if name.endswith("_id") else name.replace("_", "-")


def _validators(field: fields.Field) -> list[Any]:
    return list(getattr(field, "validators", ()) or ())


def example_event(event: EventSpec) -> dict[str, Any]:
    """A whole structured-mode CloudEvent, as it arrives on the queue."""
    return {
        "specversion": SPEC_VERSION,
        "id": "0b9e3c52-6a5d-4f7e-8c11-2d4b7a9e5f30",
        "source": f"/shequ/haidian/{event.service}",
        "type": event.type,
        "subject": "INC-20260501-0001" if event.service == "grid" else f"{event.service}-1",
        "time": _EXAMPLE_TIME.isoformat(),
        "datacontenttype": "application/json",
        "dataschema": event.dataschema,
        "sequence": 1,
        "data": example_payload(event.schema),
    }


# -- AsyncAPI -------------------------------------------------------------------

ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "CloudEvents 1.0 in structured mode: the whole message body is this JSON object "
        f"(content type {CONTENT_TYPE}). Deduplicate on `id`; `sequence` increases per "
        "`subject`, so an older state can be told from a newer one."
    ),
    "required": [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "sequence",
        "data",
    ],
    "properties": {
        "specversion": {"type": "string", "const": SPEC_VERSION},
        "id": {"type": "string", "format": "uuid", "description": "the deduplication key"},
        "source": {"type": "string", "description": "`/shequ/<district>/<service>`"},
        "type": {"type": "string", "description": "`shequ.<service>.<entity>.<verb>`"},
        "subject": {"type": "string", "description": "the id of the entity that changed"},
        "time": {"type": "string", "format": "date-time", "description": "when it committed"},
        "datacontenttype": {"type": "string", "const": "application/json"},
        "dataschema": {
            "type": "string",
            "description": "`urn:shequ:schema:<service>.<entity>.<verb>:v<N>`: the payload version",
        },
        "sequence": {"type": "integer", "minimum": 0},
        "traceparent": {"type": "string", "description": "W3C trace context, when known"},
        "data": {
            "type": "object",
            "description": "the payload; its schema is per type and version",
        },
    },
}


def _message_id(event: EventSpec) -> str:
    return f"{event.service}.{event.name}.v{event.version}"


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every event the platform publishes."""
    names, schemas = payload_schemas()
    components_schemas = {ENVELOPE: ENVELOPE_SCHEMA, **schemas}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_channel: dict[str, list[EventSpec]] = {}
    for event in REGISTRY.published():
        by_channel.setdefault(f"{event.service}.{event.name}", []).append(event)
    for channel_id, events in sorted(by_channel.items()):
        first = events[0]
        channel_messages = {}
        for event in events:
            message_id = _message_id(event)
            messages[message_id] = _message(event, names[event_key(event)])
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        channels[channel_id] = {
            "address": first.name,
            "title": first.type,
            "description": f"Routing key `{first.name}` on the topic exchange `{first.exchange}`.",
            "messages": channel_messages,
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": first.exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish.{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": first.description,
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{_message_id(e)}"} for e in events
            ],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Shequ (社区) events",
            "version": CATALOGUE_VERSION,
            "description": (
                "Every event the platform publishes, for other bureaus to consume. Each is a "
                "CloudEvents 1.0 structured-mode JSON message, published persistent to the "
                "topic exchange `<service>.events` with the routing key `<entity>.<verb>`. "
                "Payloads carry ids, codes and coarse places, never personal data. Within a "
                "version changes are additive only; a breaking change is a new version "
                "published beside the old one for a deprecation period (see docs/bureaus.md)."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "district": {
                "host": "{host}:5671",
                "protocol": "amqps",
                "pathname": "/{vhost}",
                "description": "The district's broker; `shequ bureau add` prints the real URI.",
                "variables": {
                    "host": {"description": "the broker host the district gives you"},
                    "vhost": {"default": "", "description": "empty for the default vhost"},
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components_schemas, "messages": messages},
    }


def _message(event: EventSpec, schema_name: str) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "allOf": [
            {"$ref": f"{_REF_PREFIX}{ENVELOPE}"},
            {
                "type": "object",
                "properties": {
                    "type": {"const": event.type},
                    "dataschema": {"const": event.dataschema},
                    "data": {"$ref": f"{_REF_PREFIX}{schema_name}"},
                },
            },
        ]
    }
    return {
        "name": event.type,
        "title": f"{event.type} v{event.version}",
        "summary": event.description,
        "contentType": CONTENT_TYPE,
        "payload": envelope,
        "bindings": {"amqp": {"contentEncoding": "utf-8", "bindingVersion": "0.3.0"}},
        "examples": [{"name": f"v{event.version}", "payload": example_event(event)}],
    }


def asyncapi_yaml() -> str:
    """The document as YAML, stable for a diff (keys in insertion order)."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)


# -- the readable page --------------------------------------------------------------


def catalogue_markdown() -> str:
    """docs/event-catalogue.md: every type, when, its fields, an example, its versions."""
    names, schemas = payload_schemas()
    lines = [
        "# Event catalogue (generated)",
        "",
        "Generated from `shared/contracts/` by `shequ catalogue`; do not edit by hand",
        "(`tests/contracts` fails when this page is out of date). The machine-readable",
        "form is [asyncapi.yaml](asyncapi.yaml); how to subscribe is in",
        "[bureaus.md](bureaus.md), the envelope and the rules in [events.md](events.md).",
        "",
        "| type | versions | exchange | routing key |",
        "| --- | --- | --- | --- |",
    ]
    grouped: dict[str, list[EventSpec]] = {}
    for event in REGISTRY.published():
        grouped.setdefault(event.type, []).append(event)
    for type_, events in grouped.items():
        versions = ", ".join(f"v{e.version}" for e in events)
        first = events[0]
        anchor = type_.replace(".", "")
        lines.append(
            f"| [`{type_}`](#{anchor}) | {versions} | `{first.exchange}` | `{first.name}` |"
        )
    for type_, events in grouped.items():
        lines += ["", f"## {type_}", ""]
        for event in events:
            schema = resolved(schemas[names[event_key(event)]], schemas)
            lines += [
                f"### v{event.version}",
                "",
                f"{event.description}",
                "",
                f"`dataschema`: `{event.dataschema}`",
                "",
                *([schema["description"], ""] if "description" in schema else []),
                "| field | type | required | notes |",
                "| --- | --- | --- | --- |",
            ]
            lines += _field_rows(schema, "")
            example = json.dumps(example_event(event), ensure_ascii=False, indent=2)
            lines += ["", "```json", example, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _field_rows(schema: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        notes = []
        if "enum" in prop:
            notes.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
        for key, label in (("minimum", "≥"), ("maximum", "≤")):
            if key in prop:
                notes.append(f"{label} {prop[key]}")
        if "maxLength" in prop:
            notes.append(f"at most {prop['maxLength']} characters")
        rows.append(
            f"| `{prefix}{name}` | {_type_label(prop)} | {'yes' if name in required else 'no'} "
            f"| {'; '.join(notes)} |"
        )
        if "properties" in prop:
            rows += _field_rows(prop, f"{prefix}{name}.")
    return rows


def _type_label(prop: dict[str, Any]) -> str:
    kind = prop.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    label = " or ".join(k for k in kinds if k != "null")
    if "format" in prop:
        label += f" ({prop['format']})"
    if "items" in prop:
        label += f" of {_type_label(prop['items'])}"
    if "null" in kinds:
        label += ", nullable"
    return label


def snapshot() -> dict[str, Any]:
    """What a release freezes: each event version's payload schema, references resolved."""
    names, schemas = payload_schemas()
    return {
        "format": 1,
        "events": {
            key: copy.deepcopy(resolved(schemas[name], schemas)) for key, name in names.items()
        },
    }
