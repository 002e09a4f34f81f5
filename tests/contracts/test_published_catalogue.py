"""The committed AsyncAPI document and catalogue page are current and valid."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shequ.catalogue import asyncapi_document, asyncapi_yaml, catalogue_markdown, example_event
from shequ.contracts import REGISTRY, parse_event

ROOT = Path(__file__).resolve().parents[2]
#: The official AsyncAPI 3.0.0 JSON Schema, vendored unchanged from the AsyncAPI
#: Initiative's spec-json-schemas repository (schemas/3.0.0-without-$id.json,
#: Apache-2.0), https://github.com/asyncapi/spec-json-schemas
ASYNCAPI_SCHEMA = Path(__file__).with_name("asyncapi-3.0.0.schema.json")
REGENERATE = "the contracts changed: run `make catalogue` and commit docs/"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8")))


def test_the_committed_asyncapi_document_is_what_the_registry_generates() -> None:
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed == asyncapi_yaml(), REGENERATE


def test_the_committed_catalogue_page_is_what_the_registry_generates() -> None:
    committed = (ROOT / "docs" / "event-catalogue.md").read_text(encoding="utf-8")
    assert committed == catalogue_markdown(), REGENERATE


def test_the_committed_asyncapi_document_is_valid_asyncapi_3(
    validator: jsonschema.Draft7Validator,
) -> None:
    document = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda doc: doc.pop("info"),
        lambda doc: doc.update(asyncapi="2.6.0"),
        lambda doc: doc["channels"]["grid.incident.reported"].update(address=42),
        lambda doc: doc["operations"]["publish.grid.incident.reported"].update(action="emit"),
    ],
    ids=["no info", "wrong version", "bad address", "bad action"],
)
def test_the_validator_rejects_a_broken_document(
    validator: jsonschema.Draft7Validator, breakage: Any
) -> None:
    document = copy.deepcopy(asyncapi_document())
    breakage(document)
    assert list(validator.iter_errors(document))


def test_every_event_version_has_a_channel_message_and_operation() -> None:
    document = asyncapi_document()
    for spec in REGISTRY.published():
        channel = document["channels"][f"{spec.service}.{spec.name}"]
        assert channel["address"] == spec.name
        assert channel["bindings"]["amqp"]["exchange"]["name"] == f"{spec.service}.events"
        assert f"{spec.service}.{spec.name}.v{spec.version}" in channel["messages"]
        assert document["operations"][f"publish.{spec.service}.{spec.name}"]["action"] == "send"


@pytest.mark.parametrize("spec", REGISTRY.published(), ids=lambda s: f"{s.type}@{s.version}")
def test_each_published_example_is_an_event_the_platform_accepts(spec: Any) -> None:
    event = parse_event(example_event(spec))
    assert event.spec == spec


@pytest.mark.parametrize("spec", REGISTRY.published(), ids=lambda s: f"{s.type}@{s.version}")
def test_each_published_example_matches_its_published_schema(spec: Any) -> None:
    document = asyncapi_document()
    message = document["components"]["messages"][f"{spec.service}.{spec.name}.v{spec.version}"]
    schema = {"components": document["components"], **message["payload"]}
    jsonschema.Draft202012Validator(schema).validate(message["examples"][0]["payload"])


def test_a_registration_outside_the_contract_modules_is_not_published() -> None:
    from tests.support.flaky import THING_HAPPENED_V1

    assert THING_HAPPENED_V1 in REGISTRY.all()
    assert THING_HAPPENED_V1 not in REGISTRY.published()
