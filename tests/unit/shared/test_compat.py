"""The compatibility comparator, on synthetic schemas: it must fail on every breaking change."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from shequ.compat import breaking_changes

KEY = "shequ.test.thing.done@1"


def released() -> dict[str, Any]:
    return {
        "format": 1,
        "events": {
            KEY: {
                "type": "object",
                "properties": {
                    "thing_id": {"type": "string", "maxLength": 64},
                    "count": {"type": "integer", "minimum": 1},
                    "note": {"type": ["string", "null"]},
                    "outcome": {"type": "string", "enum": ["ok", "failed"]},
                    "at": {"type": "string", "format": "date-time"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "place": {
                        "type": "object",
                        "properties": {"cell": {"type": "string"}},
                        "required": ["cell"],
                    },
                },
                "required": ["thing_id", "count", "outcome", "at", "place"],
            }
        },
    }


def changed(edit: Callable[[dict[str, Any]], Any]) -> list[str]:
    current = copy.deepcopy(released())
    edit(current["events"][KEY])
    return breaking_changes(released(), current)


def test_an_unchanged_catalogue_has_no_breaking_change() -> None:
    assert breaking_changes(released(), released()) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].update(extra={"type": "string"}), None),
        (lambda s: s["properties"]["thing_id"].update(maxLength=128), None),
        (lambda s: s["properties"]["count"].pop("minimum"), None),
        (lambda s: s["properties"]["place"]["properties"].update(block={"type": "string"}), None),
    ],
    ids=["an optional field added", "a limit loosened", "a limit dropped", "a nested field added"],
)
def test_additive_changes_are_allowed(edit: Callable[[dict[str, Any]], Any], expected: Any) -> None:
    assert changed(edit) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].pop("note"), "field note was removed"),
        (lambda s: s["properties"]["count"].update(type="string"), "count changed type"),
        (
            lambda s: s["properties"]["thing_id"].update(type=["string", "null"]),
            "thing_id changed type",
        ),
        (
            lambda s: (
                s["properties"].update(extra={"type": "string"}),
                s["required"].append("extra"),
            ),
            "field extra was added as required",
        ),
        (lambda s: s["required"].append("note"), "field note became required"),
        (lambda s: s["required"].remove("count"), "field count is no longer always present"),
        (
            lambda s: s["properties"]["outcome"].update(enum=["ok", "failed", "partial"]),
            "outcome changed its allowed values",
        ),
        (lambda s: s["properties"]["thing_id"].update(maxLength=32), "tighter maxLength"),
        (lambda s: s["properties"]["at"].update(format="date"), "at changed format"),
        (lambda s: s["properties"]["tags"]["items"].update(type="integer"), "tags[] changed type"),
        (
            lambda s: s["properties"]["place"]["properties"].pop("cell"),
            "field place.cell was removed",
        ),
    ],
    ids=[
        "removed field",
        "type change",
        "became nullable",
        "new required field",
        "optional became required",
        "required became optional",
        "enum widened",
        "limit tightened",
        "format changed",
        "list item type",
        "nested field removed",
    ],
)
def test_breaking_changes_are_caught(edit: Callable[[dict[str, Any]], Any], expected: str) -> None:
    problems = changed(edit)
    assert problems and all(p.startswith(f"{KEY}: ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_a_removed_event_version_is_breaking() -> None:
    assert breaking_changes(released(), {"format": 1, "events": {}}) == [
        f"{KEY}: the event version was removed"
    ]


def test_a_new_version_beside_the_old_one_is_not_breaking() -> None:
    current = released()
    v2 = copy.deepcopy(current["events"][KEY])
    v2["properties"].pop("note")
    current["events"]["shequ.test.thing.done@2"] = v2
    assert breaking_changes(released(), current) == []
