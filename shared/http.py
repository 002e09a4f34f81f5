"""HTTP entrypoints: JSON in and out, problem+json errors, bearer auth, metrics.

``route`` is nameko's ``http`` entrypoint with the platform's rules applied
to every request, so a service's route bodies stay a few lines long:

* authentication: a valid bearer token unless the route is ``public=True``;
  the caller's ``Identity`` is ``request.identity``;
* a body size limit (``MAX_BODY_BYTES``, 64 KiB by default);
* errors as ``application/problem+json`` (RFC 9457) with per-field messages
  for validation errors, and never a stack trace;
* a dict or list result becomes a JSON response; a route that serves a
  page for a person's browser returns ``page_response`` instead, which adds
  the browser security headers (``PAGE_HEADERS``);
* request time by route template and status in ``shequ_http_request_seconds``.

A route also says what it takes and returns (``summary``, ``body``, ``query``,
``response``, ``errors``): the same marshmallow schemas the body loads with.
``shequ.openapi`` builds each service's OpenAPI document from that metadata,
so the document cannot drift from the schemas the code enforces. The
metadata is optional for the route to work; a test requires it of every route.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import marshmallow
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from shequ.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER, verify_token
from shequ.errors import InvalidInput, ShequError, Unauthorized
from shequ.metrics import HTTP_REQUEST_SECONDS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class MalformedBody(ShequError):
    status = 400
    title = "Malformed request body"


class BodyTooLarge(ShequError):
    status = 413
    title = "Request body too large"


def problem(
    status: int, title: str, detail: str, *, errors: dict[str, Any] | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=PROBLEM_JSON)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(payload, ensure_ascii=False, default=str),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


#: Headers on every response a browser renders as a page (HTML, a style sheet, a feed).
#: The policy allows nothing but the page's own origin for styles, images and
#: form targets, and no script at all, so a page cannot be made to run
#: injected code even if escaping failed somewhere; ``frame-ancestors`` and
#: ``X-Frame-Options`` (for older browsers) forbid framing (click-jacking).
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def page_response(
    body: str | bytes,
    *,
    status: int = 200,
    content_type: str = "text/html; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A response for a browser to render, with ``PAGE_HEADERS`` (and ``headers``) set."""
    return Response(
        body,
        status=status,
        headers={**PAGE_HEADERS, **(headers or {})},
        content_type=content_type,
    )


def load_body(request: Request, schema: marshmallow.Schema) -> dict[str, Any]:
    """Parse a JSON body and load it through ``schema``, rejecting unknown fields."""
    if request.mimetype != "application/json":
        raise MalformedBody(
            f"expected Content-Type application/json, got {request.mimetype or 'none'}"
        )
    try:
        raw = json.loads(request.get_data(cache=True, as_text=False) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput("the body must be a JSON object", {"_schema": ["must be an object"]})
    try:
        return schema.load(raw, unknown=marshmallow.RAISE)
    except marshmallow.ValidationError as exc:
        raise InvalidInput("the request body failed validation", _as_dict(exc.messages)) from exc


class QueryList(marshmallow.fields.List):
    """A list query parameter, given repeated (``?s=a&s=b``), comma-separated or both."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            value = [part for item in value for part in item.split(",") if part]
        return super()._deserialize(value, attr, data, **kwargs)


def load_query(request: Request, schema: marshmallow.Schema) -> dict[str, Any]:
    """Load query parameters through ``schema``, rejecting unknown and repeated ones.

    Only list fields take a parameter more than once; a repeated scalar is an
    error rather than silently the first value, so ``?status=a&status=b`` on a
    single-valued filter cannot quietly drop a condition.
    """
    lists = {
        field.data_key or name
        for name, field in schema.fields.items()
        if isinstance(field, marshmallow.fields.List)
    }
    raw: dict[str, Any] = {}
    repeated: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        if key in lists:
            raw[key] = values
        elif len(values) > 1:
            repeated[key] = ["given more than once; this parameter takes one value"]
        else:
            raw[key] = values[0]
    try:
        loaded: dict[str, Any] = schema.load(raw, unknown=marshmallow.RAISE)
    except marshmallow.ValidationError as exc:
        raise InvalidInput(
            "the query parameters failed validation", {**_as_dict(exc.messages), **repeated}
        ) from exc
    if repeated:
        raise InvalidInput("the query parameters failed validation", repeated)
    return loaded


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


SchemaRef = type[marshmallow.Schema] | marshmallow.Schema


class Route(HttpRequestHandler):
    """nameko's HTTP entrypoint with the platform's request rules (see module doc).

    The keyword metadata only describes the route (for ``shequ.openapi``):
    ``summary`` one line; ``body`` and ``query`` the schemas the route loads
    with; ``response`` the schema it dumps with (an instance with
    ``many=True`` for a JSON array, a mapping for a hand-written JSON Schema)
    and ``status`` its success status; ``media_type`` for a response that is
    not JSON and ``body_media_type`` for a body that is not (a form, say);
    ``errors`` the problem statuses the route itself raises beyond those the
    platform adds (401, 404 for path parameters, 400/413/422 for a body, 422
    for a query); ``responses`` other documented non-problem responses by
    status, each a description.

    ``{service}`` in ``url`` stands for the service's name, so a base class
    can declare a route under each service's own prefix.
    """

    def __init__(
        self,
        method: str,
        url: str,
        *,
        public: bool = False,
        summary: str | None = None,
        body: SchemaRef | None = None,
        query: SchemaRef | None = None,
        response: SchemaRef | Mapping[str, Any] | None = None,
        status: int = 200,
        media_type: str = "application/json",
        body_media_type: str = "application/json",
        errors: tuple[int, ...] = (),
        responses: Mapping[int, str] | None = None,
        tags: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.public = public
        self.summary = summary
        self.body = body
        self.query = query
        self.response = response
        self.status = status
        self.media_type = media_type
        self.body_media_type = body_media_type
        self.errors = tuple(errors)
        self.responses = dict(responses or {})
        self.tags = tuple(tags)
        super().__init__(method, url, **kwargs)

    def rule_for(self, service: str) -> str:
        """The werkzeug rule this route serves in the service named ``service``."""
        return self.url.replace("{service}", service)

    def get_url_rule(self) -> Rule:
        return Rule(self.rule_for(self.container.service_name), methods=self.method.split(","))

    def setup(self) -> None:
        config = self.container.config
        self.max_body = int(config.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        self.jwt_secret = config.get("JWT_SECRET") or ""
        self.jwt_issuer = config.get("JWT_ISSUER", DEFAULT_ISSUER)
        self.jwt_audience = config.get("JWT_AUDIENCE", DEFAULT_AUDIENCE)
        super().setup()

    def handle_request(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            self._admit(request)
            response = super().handle_request(request)
        except Exception as exc:  # errors before the worker ran
            response = self.response_from_exception(exc)
        HTTP_REQUEST_SECONDS.labels(
            self.container.service_name, request.method, self.url, str(response.status_code)
        ).observe(time.monotonic() - started)
        return response

    def _admit(self, request: Request) -> None:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise BodyTooLarge(f"the body has {length} bytes; the limit is {self.max_body}")
        if request.content_length is None and request.method in ("POST", "PUT", "PATCH"):
            body = request.stream.read(self.max_body + 1)
            if len(body) > self.max_body:
                raise BodyTooLarge(f"the body exceeds the limit of {self.max_body} bytes")
            request._cached_data = body  # type: ignore[attr-defined]
        request.identity = None  # type: ignore[attr-defined]
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            if not self.jwt_secret:
                raise Unauthorized("this service has no JWT_SECRET configured")
            request.identity = verify_token(  # type: ignore[attr-defined]
                header[7:].strip(),
                secret=self.jwt_secret,
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
            )
        elif not self.public:
            raise Unauthorized("this route needs a bearer token (Authorization: Bearer ...)")

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, dict | list):
            return json_response(result)
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict | list):
            return json_response(result[1], status=result[0])
        return super().response_from_result(result)

    def response_from_exception(self, exc: Exception) -> Response:
        if isinstance(exc, InvalidInput):
            return problem(exc.status, exc.title, exc.detail, errors=exc.errors)
        if isinstance(exc, ShequError):
            response = problem(exc.status, exc.title, exc.detail, **exc.extra)
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if isinstance(exc, HTTPException) and exc.code:
            return problem(exc.code, exc.name, exc.description or "")
        log.error(
            "%s %s failed", self.method, self.url, exc_info=(type(exc), exc, exc.__traceback__)
        )
        return problem(500, "Internal error", "the request failed; the error was logged")


route = Route.decorator
