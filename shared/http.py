"""HTTP entrypoints: JSON in and out, problem+json errors, bearer auth, metrics.

``route`` is nameko's ``http`` entrypoint with the platform's rules applied
to every request, so a service's route bodies stay a few lines long:

* authentication: a valid bearer token unless the route is ``public=True``;
  the caller's ``Identity`` is ``request.identity``;
* a body size limit (``MAX_BODY_BYTES``, 64 KiB by default);
* errors as ``application/problem+json`` (RFC 9457) with per-field messages
  for validation errors, and never a stack trace;
* a dict or list result becomes a JSON response;
* request time by route template and status in ``shequ_http_request_seconds``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import marshmallow
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import HTTPException
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


def load_query(request: Request, schema: marshmallow.Schema) -> dict[str, Any]:
    """Load query parameters through ``schema``, rejecting unknown ones."""
    try:
        return schema.load(request.args.to_dict(), unknown=marshmallow.RAISE)
    except marshmallow.ValidationError as exc:
        raise InvalidInput(
            "the query parameters failed validation", _as_dict(exc.messages)
        ) from exc


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


class Route(HttpRequestHandler):
    """nameko's HTTP entrypoint with the platform's request rules (see module doc)."""

    def __init__(self, method: str, url: str, *, public: bool = False, **kwargs: Any) -> None:
        self.public = public
        super().__init__(method, url, **kwargs)

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
