"""Compatibility of event schemas with the last released catalogue.

A bureau's consumer, written against a released version, must keep working
for as long as that version is published. So within a version only additive
changes are allowed: a new optional field, a looser limit. Breaking, and so
a new version beside the old one: a removed event version, a removed field,
a field no longer always present, a changed type (becoming nullable too), a
changed format or set of allowed values, a tighter limit, a new required
field (an event published before it would no longer validate).

The comparison works on the JSON Schemas the catalogue publishes
(``shequ.catalogue.snapshot``), references resolved, so it judges exactly
what bureaus were told.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RELEASED = Path(__file__).parent / "contracts" / "released.json"


def load_released(path: Path = RELEASED) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def breaking_changes(released: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Every breaking change from ``released`` to ``current`` (snapshots), as sentences.

    Keys are ``<type>@<version>``. A version that is new in ``current`` is
    never breaking: that is how a breaking change is published.
    """
    problems = []
    old_events, new_events = released["events"], current["events"]
    for key in sorted(old_events):
        if key not in new_events:
            problems.append(f"{key}: the event version was removed")
            continue
        problems += [f"{key}: {p}" for p in _compare(old_events[key], new_events[key], "")]
    return problems


def _compare(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    where = path or "the payload"
    old_types, new_types = _types(old), _types(new)
    if old_types and old_types != new_types:
        yield f"{where} changed type from {_label(old_types)} to {_label(new_types)}"
        return
    if old.get("format") is not None and old.get("format") != new.get("format"):
        yield f"{where} changed format from {old['format']} to {new.get('format')}"
    if _enum(old) != _enum(new):
        yield f"{where} changed its allowed values from {_enum(old)} to {_enum(new)}"
    for key, tighter in (
        ("minimum", _gt),
        ("minLength", _gt),
        ("maximum", _lt),
        ("maxLength", _lt),
    ):
        if key in new and (key not in old or tighter(new[key], old[key])):
            yield f"{where} has a tighter {key} ({old.get(key, 'none')} -> {new[key]})"
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name in old_props:
        field = f"{path}.{name}" if path else name
        if name not in new_props:
            yield f"field {field} was removed"
            continue
        if name in old_required and name not in new_required:
            yield f"field {field} is no longer always present"
        yield from _compare(old_props[name], new_props[name], field)
    for name in sorted(new_required - old_required):
        field = f"{path}.{name}" if path else name
        if name in old_props:
            yield f"field {field} became required"
        else:
            yield f"field {field} was added as required"
    if "items" in old and "items" in new:
        yield from _compare(old["items"], new["items"], f"{path or 'payload'}[]")


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return set()
    return set(kind) if isinstance(kind, list) else {kind}


def _enum(schema: Mapping[str, Any]) -> list[Any] | str:
    return sorted(schema["enum"], key=str) if "enum" in schema else "any"


def _label(types: set[str]) -> str:
    return " or ".join(sorted(types))


def _gt(a: float, b: float) -> bool:
    return a > b


def _lt(a: float, b: float) -> bool:
    return a < b
