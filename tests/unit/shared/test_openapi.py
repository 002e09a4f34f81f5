"""The OpenAPI builder, and every registered service's document."""

from __future__ import annotations

from typing import Any

import marshmallow
import pytest
from marshmallow import fields
from openapi_spec_validator import validate
from werkzeug.wrappers import Request

from shequ.discovery import discover_services
from shequ.http import route
from shequ.openapi import build_spec, openapi_path, routes_of
from shequ.service import PlatformService

SERVICES = sorted(discover_services())


class ThingSchema(marshmallow.Schema):
    name = fields.String(required=True)


class ThingQuerySchema(marshmallow.Schema):
    colour = fields.String()


class ToyService(PlatformService):
    """A toy service for the builder's tests."""

    name = "toy"

    @route(
        "POST",
        "/api/v1/toy/things",
        summary="Make a thing",
        body=ThingSchema,
        response=ThingSchema,
        status=201,
        errors=(409,),
    )
    def make(self, request: Request) -> Any:
        """Things are unique by name."""

    @route("GET", "/api/v1/toy/things", summary="Things", query=ThingQuerySchema, public=True)
    def things(self, request: Request) -> Any: ...

    @route(
        "POST",
        "/api/v1/toy/forms",
        summary="A form",
        body=ThingSchema,
        body_media_type="application/x-www-form-urlencoded",
        response={"type": "string"},
        media_type="text/xml",
    )
    def form(self, request: Request) -> Any: ...

    @route("GET", "/api/v1/toy/things/<int:number>")
    def undocumented(self, request: Request, number: int) -> Any: ...


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [ref for value in node.values() for ref in refs(value)] + (
            [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        )
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_a_werkzeug_rule_becomes_an_openapi_path_with_typed_parameters() -> None:
    path, parameters = openapi_path("/a/<int:number>/b/<string(length=3):code>/<name>")
    assert path == "/a/{number}/b/{code}/{name}"
    assert [(p["name"], p["schema"]["type"]) for p in parameters] == [
        ("number", "integer"), ("code", "string"), ("name", "string"),
    ]  # fmt: skip


def test_the_toy_document_is_valid_openapi_3() -> None:
    validate(build_spec(ToyService))


def test_an_operation_has_its_schemas_and_the_platforms_problem_responses() -> None:
    make = build_spec(ToyService)["paths"]["/api/v1/toy/things"]["post"]
    assert make["operationId"] == "make"
    assert make["description"] == "Things are unique by name."
    body = make["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Thing"}
    assert make["responses"]["201"]["content"]["application/json"]["schema"] == body
    assert set(make["responses"]) == {"201", "400", "401", "409", "413", "422"}
    assert make["responses"]["409"] == {"$ref": "#/components/responses/Conflict"}


def test_problem_responses_are_defined_once_as_problem_json() -> None:
    document = build_spec(ToyService)
    conflict = document["components"]["responses"]["Conflict"]
    assert conflict["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }


def test_a_route_marked_public_but_not_on_the_allow_list_still_needs_a_token() -> None:
    things = build_spec(ToyService)["paths"]["/api/v1/toy/things"]["get"]
    assert "security" not in things
    assert "401" in things["responses"]


def test_a_query_schema_is_expanded_into_parameters() -> None:
    things = build_spec(ToyService)["paths"]["/api/v1/toy/things"]["get"]
    assert [(p["in"], p["name"]) for p in things["parameters"]] == [("query", "colour")]


def test_a_caller_authenticates_with_a_bearer_token_or_a_bureau_key() -> None:
    document = build_spec(ToyService)
    assert document["security"] == [{"bearer": []}, {"bureauKey": []}]
    key = document["components"]["securitySchemes"]["bureauKey"]
    assert (key["type"], key["in"], key["name"]) == ("apiKey", "header", "Authorization")


def test_an_allow_listed_route_needs_no_token() -> None:
    metrics = build_spec(ToyService)["paths"]["/metrics"]["get"]
    assert metrics["security"] == []
    assert "401" not in metrics["responses"]


def test_a_route_without_metadata_is_listed_with_its_path_parameters() -> None:
    undocumented = build_spec(ToyService)["paths"]["/api/v1/toy/things/{number}"]["get"]
    assert undocumented["summary"] == "undocumented"
    assert set(undocumented["responses"]) == {"200", "401", "404"}


def test_a_route_may_take_and_give_other_media_types() -> None:
    form = build_spec(ToyService)["paths"]["/api/v1/toy/forms"]["post"]
    assert list(form["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
    assert form["responses"]["200"]["content"] == {"text/xml": {"schema": {"type": "string"}}}


def test_every_service_serves_its_document_under_its_own_prefix() -> None:
    paths = build_spec(ToyService)["paths"]
    assert {"/api/v1/toy/openapi.json", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert paths["/api/v1/toy/openapi.json"]["get"]["security"] == []


@pytest.mark.parametrize("service", SERVICES)
def test_each_services_document_is_valid_openapi_3(service: str) -> None:
    validate(build_spec(discover_services()[service].load()))


@pytest.mark.parametrize("service", SERVICES)
def test_each_route_of_each_service_is_documented(service: str) -> None:
    """A route added without ``summary``, or without its response schema, fails here."""
    service_cls = discover_services()[service].load()
    document = build_spec(service_cls)
    undocumented = []
    for method_name, entrypoint in routes_of(service_cls):
        path, _ = openapi_path(entrypoint.rule_for(service))
        for verb in entrypoint.method.split(","):
            operation = document["paths"].get(path, {}).get(verb.lower())
            if operation is None or not entrypoint.summary:
                undocumented.append(f"{verb} {path} ({method_name})")
            elif entrypoint.response is None and entrypoint.media_type == "application/json":
                undocumented.append(f"{verb} {path} ({method_name}): no response schema")
    assert not undocumented, "routes without OpenAPI metadata: " + ", ".join(undocumented)


@pytest.mark.parametrize("service", SERVICES)
def test_each_reference_in_each_services_document_resolves(service: str) -> None:
    document = build_spec(discover_services()[service].load())
    for ref in refs(document):
        assert resolve(document, ref), ref
