"""OpenAPI 3 documents built from a service class's routes and their schemas.

Every ``shequ.http.Route`` carries what it takes and returns (the marshmallow
schemas it loads and dumps with); ``build_spec`` walks a service class's
routes and hands those schemas to ``apispec``, so the document describes the
schemas the code enforces. It needs the class only, not a running service:
``shequ openapi SERVICE`` prints the same document that
``GET /api/v1/<service>/openapi.json`` serves.

Errors are documented once: every problem status is a shared response in
``components`` with the ``Problem`` schema (RFC 9457), and each operation
refers to the statuses it can return (429 on public routes that write: the
per-client rate limit).
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping
from functools import cache
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from shequ.http import MAX_PATH_INT, PROBLEM_JSON, WRITE_METHODS, Route

OPENAPI_VERSION = "3.0.3"
OPERATIONS_TAG = "operations"
#: Routes every service has through ``PlatformService``; they are tagged apart.
PLATFORM_ROUTES = frozenset({"healthz", "readyz", "metrics", "openapi"})

_PATH_PARAMETER = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>"
)
_CONVERTER_TYPES = {"int": "integer", "float": "number"}
_FORMAT_SUFFIX = re.compile(r"\.<any\((?P<args>[^)]*)\):\w+>$")
_SUFFIX_TYPES = {"json": "application/json", "xml": "text/xml"}


class ProblemSchema(marshmallow.Schema):
    """``application/problem+json`` (RFC 9457) as every route answers errors."""

    class Meta:
        unknown = marshmallow.INCLUDE  # a problem may carry extension members

    type = fields.String(metadata={"description": "always about:blank"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "per-field messages, for validation errors"},
    )
    action = fields.String(
        metadata={"description": "on a 403 from the authorisation table: the action refused"}
    )
    allowed_roles = fields.List(
        fields.String(), metadata={"description": "on such a 403: the roles that may do it"}
    )


def routes_of(service_cls: type) -> list[tuple[str, Route]]:
    """The service's HTTP routes as ``(method name, route)``, in path order."""
    found: list[tuple[str, Route]] = []
    for name, member in inspect.getmembers(service_cls, inspect.isfunction):
        for entrypoint in getattr(member, "nameko_entrypoints", ()):
            if isinstance(entrypoint, Route):
                found.append((name, entrypoint))
    return sorted(found, key=lambda item: (item[1].url, item[1].method, item[0]))


def openapi_path(url: str) -> tuple[str, list[dict[str, Any]]]:
    """A werkzeug rule (``/x/<int:id>``) as an OpenAPI path (``/x/{id}``) and its parameters."""
    parameters = [
        {"in": "path", "name": match["name"], "required": True, "schema": _path_schema(match)}
        for match in _PATH_PARAMETER.finditer(url)
    ]
    return _PATH_PARAMETER.sub(lambda match: "{" + match["name"] + "}", url), parameters


def _path_schema(match: re.Match[str]) -> dict[str, Any]:
    """A path parameter's schema; ``any(a, b)`` becomes an enum, so clients can fill it in."""
    converter = match["converter"] or ""
    if converter == "any" and match["args"]:
        values = [part.strip().strip("'\"") for part in match["args"].split(",")]
        return {"type": "string", "enum": [value for value in values if value]}
    schema: dict[str, Any] = {"type": _CONVERTER_TYPES.get(converter, "string")}
    if converter == "int":
        schema.update(minimum=0, maximum=MAX_PATH_INT)
    return schema


@cache
def build_spec(service_cls: type) -> dict[str, Any]:
    """The OpenAPI document of ``service_cls`` (cached: classes do not change at run time)."""
    name = str(getattr(service_cls, "name", service_cls.__name__))
    spec = APISpec(
        title=f"Shequ {name} API",
        version=_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": _description(service_cls)},
        # Either one: a bearer token, or a bureau client's key (shequ.apikeys).
        security=[{"bearer": []}, {"bureauKey": []}],
        tags=[
            {"name": name, "description": f"the {name} service's API"},
            {"name": OPERATIONS_TAG, "description": "health, readiness, metrics, this document"},
        ],
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.security_scheme(
        "bureauKey",
        {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "a bureau client's key, sent as `ApiKey <key>` (`shequ bureau key`)",
        },
    )
    spec.components.schema("Problem", schema=ProblemSchema)
    statuses = sorted(
        {status for _, route in routes_of(service_cls) for status in _problems(route)}
    )
    for status in statuses:
        spec.components.response(
            _problem_name(status),
            {
                "description": HTTPStatus(status).phrase,
                "content": {PROBLEM_JSON: {"schema": "Problem"}},
            },
        )
    for method_name, route in routes_of(service_cls):
        path, parameters = openapi_path(route.rule_for(name))
        operations = {
            verb.lower(): _operation(name, method_name, route, service_cls, parameters)
            for verb in route.method.split(",")
        }
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(
    service: str,
    method_name: str,
    route: Route,
    service_cls: type,
    path_parameters: list[dict[str, Any]],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": method_name,
        "summary": route.summary or method_name.replace("_", " "),
        "tags": list(route.tags) or [OPERATIONS_TAG if method_name in PLATFORM_ROUTES else service],
        "responses": {str(route.status): _success(route)},
    }
    description = inspect.getdoc(getattr(service_cls, method_name))
    if description:
        operation["description"] = description
    if route.public:
        operation["security"] = []
    if route.action:
        # The action in the service's authorisation table (access.yaml), which
        # says which roles may call and which objects each reaches.
        operation["x-shequ-action"] = route.action_for(service)
    parameters: list[dict[str, Any]] = list(path_parameters)
    if route.query is not None:
        parameters.append({"in": "query", "schema": route.query})
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body_media_type: {"schema": route.body}},
        }
    for status in _problems(route):
        operation["responses"][str(status)] = _problem_name(status)
    # Stated last so they win: a route whose errors are not problem+json (Open311's
    # spec-defined error list) describes them itself.
    for status, text in route.responses.items():
        operation["responses"][str(status)] = {"description": text}
    return operation


def _success(route: Route) -> dict[str, Any]:
    described: dict[str, Any] = {"description": HTTPStatus(route.status).phrase}
    if route.response is None:
        if route.media_type != "application/json":
            described["content"] = {route.media_type: {"schema": {"type": "string"}}}
        return described
    schema = dict(route.response) if isinstance(route.response, Mapping) else route.response
    described["content"] = {route.media_type: {"schema": schema}}
    for media_type in _suffix_media_types(route.url):
        described["content"].setdefault(media_type, {"schema": {"type": "string"}})
    return described


def _suffix_media_types(url: str) -> list[str]:
    """Media types a format suffix (``/x.<any(json,xml):fmt>``) lets a client choose."""
    match = _FORMAT_SUFFIX.search(url)
    if match is None:
        return []
    extensions = [part.strip().strip("'\"") for part in match["args"].split(",")]
    return [_SUFFIX_TYPES[ext] for ext in extensions if ext in _SUFFIX_TYPES]


def _problems(route: Route) -> list[int]:
    """The problem statuses a route can answer: the platform's rules plus its own ``errors``."""
    statuses = set(route.errors)
    if not route.public:
        statuses.add(401)
    if route.action:
        statuses.add(403)
    if _PATH_PARAMETER.search(route.url):
        statuses.add(404)
    if route.body is not None:
        statuses.update({400, 413, 422})
    if route.query is not None:
        statuses.add(422)
    if route.public and set(route.method.split(",")) & WRITE_METHODS:
        statuses.add(429)
    return sorted(statuses)


def _problem_name(status: int) -> str:
    return "".join(word.capitalize() for word in HTTPStatus(status).phrase.split())


def _description(service_cls: type) -> str:
    """The service class's own docstring, else its module's (not an inherited one)."""
    own = service_cls.__dict__.get("__doc__")
    module = sys.modules.get(service_cls.__module__)
    return inspect.cleandoc(own or (module.__doc__ if module else None) or "")


def _version() -> str:
    try:
        return version("shequ")
    except PackageNotFoundError:
        return "0"
