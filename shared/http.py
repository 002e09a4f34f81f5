"""HTTP entrypoints: JSON in and out, problem+json errors, bearer auth, metrics.

``route`` is nameko's ``http`` entrypoint with the platform's rules applied
to every request, so a service's route bodies stay a few lines long:

* authentication: a valid bearer token (``shequ.auth.TokenVerifier``) or a
  bureau client's API key (``Authorization: ApiKey <key>``,
  ``shequ.apikeys``) unless the route is on the public allow-list
  (``shequ.public``); the caller's ``Identity`` is ``request.identity``;
* authorisation: every other route names its ``action``, and a caller none of
  whose roles has a rule for it in the service's table (``shequ.policy``)
  gets 403 before the route runs (naming the client scope a bureau client
  lacks, if that is why);
* a body size limit (``MAX_BODY_BYTES``, 64 KiB by default), and in every
  JSON body and query string no key that begins with ``$`` or contains
  ``.`` (a MongoDB operator or path smuggled into a filter or update), no
  string over ``MAX_STRING_CHARS``, no nesting deeper than ``MAX_JSON_DEPTH``;
* a rate limit per client on public routes that write (``RateLimiter``):
  429 with ``Retry-After`` once a client's bucket is empty;
* security headers on every response (``SECURITY_HEADERS``);
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
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

import marshmallow
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from pymongo.errors import ConnectionFailure
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from shequ.apikeys import ApiKeys, api_keys_from_config
from shequ.auth import AuthSettings, TokenVerifier
from shequ.errors import Forbidden, InvalidInput, ShequError, Unauthorized, Unavailable
from shequ.metrics import HTTP_REQUEST_SECONDS
from shequ.policy import Policy, PolicyError, flush_uses, forbidden_detail, policy_of
from shequ.public import route_is_public

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: No string in a JSON body may be longer, whatever its schema says; a schema's
#: own ``Length`` is usually far tighter. Long enough for an agreement's text.
MAX_STRING_CHARS = 20_000
#: Deeper nesting than any of our schemas takes is refused before it is walked.
MAX_JSON_DEPTH = 16
#: Query strings are short; a longer key or value is refused whatever the route.
MAX_QUERY_CHARS = 2048
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The largest integer any input may hold (path, query or body): MongoDB
#: stores at most 64-bit integers, and a larger one would fail deep in a query.
MAX_PATH_INT = 2**63 - 1


class MalformedBody(ShequError):
    status = 400
    title = "Malformed request body"


class BodyTooLarge(ShequError):
    status = 413
    title = "Request body too large"


class TooManyRequests(ShequError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimiter:
    """Token buckets per client key: ``burst`` requests at once, refilled at ``per_minute``.

    Held in the process: each replica of a service limits on its own, so a
    client may get up to the replica count times the limit in all. Buckets
    of clients not seen for a while are forgotten (at most ``max_clients``
    kept, least recently used first), so a flood of addresses cannot grow it
    without bound; a forgotten client starts again with a full bucket.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0 if there was one, else seconds until one."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


def client_key(request: Request, trusted_hops: int) -> str:
    """The caller's address: the entry of ``X-Forwarded-For`` our own proxies added, else the peer.

    ``trusted_hops`` is how many proxies of ours stand in front of the
    service (the front door or the Ingress: 1). Entries further left were
    written by the client and prove nothing, so they are not used.
    """
    forwarded = [
        part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part
    ]
    if trusted_hops > 0 and forwarded:
        return forwarded[-min(trusted_hops, len(forwarded))]
    return request.remote_addr or "unknown"


@cache
def _shared_limiter(per_minute: float, burst: int) -> RateLimiter:
    """One limiter per process and setting, so every public route draws on the same buckets."""
    return RateLimiter(per_minute, burst)


def token_verifier(config: Mapping[str, Any]) -> TokenVerifier:
    """The verifier of ``config``'s tokens, shared by every route of the process.

    Whatever checks a token (the routes' gate, the SLA board's session
    cookie) takes it from here, so each accepts exactly what the
    configuration says: the identity provider's keys with a JWKS URL, the
    development secret without one.
    """
    return _shared_verifier(AuthSettings.from_config(config))


@cache
def _shared_verifier(settings: AuthSettings) -> TokenVerifier:
    """One verifier per process and setting, so the identity provider's keys are cached once."""
    return TokenVerifier(settings)


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


#: Headers on every response: no content sniffing, no framing, no referrer,
#: and for anything that is not a page (JSON, problems, metrics) a policy
#: that lets a browser run or load nothing from it at all.
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

#: The policy of an HTML document a route returns without ``page_response``
#: (a volunteer's certificate, a mediation agreement): self-contained pages
#: with their styles inline, so inline styles are allowed and nothing else.
DOCUMENT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
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
    problems = unsafe_json(raw)
    if problems:
        raise InvalidInput("the request body has keys or values no route accepts", problems)
    try:
        return schema.load(raw, unknown=marshmallow.RAISE)
    except marshmallow.ValidationError as exc:
        raise InvalidInput("the request body failed validation", _as_dict(exc.messages)) from exc


#: Bodies whose field names are keys like a query's.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def unsafe_key(key: str) -> str | None:
    """Why ``key`` may not appear in any body or query, or None if it may."""
    if key.startswith("$"):
        return "a key may not begin with '$'"
    if "." in key:
        return "a key may not contain '.'"
    return None


def unsafe_json(value: Any, path: str = "", depth: int = 0) -> dict[str, list[str]]:
    """Every place in a parsed JSON document that breaks the platform's rules, by path.

    Keys beginning with ``$`` or containing ``.`` would be MongoDB operators
    or dotted paths if any code ever passed the document on to a query or
    update; they are refused here, for every route, whatever its schema.
    Strings over ``MAX_STRING_CHARS`` and nesting over ``MAX_JSON_DEPTH`` are
    refused too.
    """
    name = path or "_schema"
    if depth > MAX_JSON_DEPTH:
        return {name: [f"nested deeper than {MAX_JSON_DEPTH} levels"]}
    problems: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            reason = unsafe_key(str(key))
            if reason:
                problems.setdefault(child, []).append(reason)
            problems.update(unsafe_json(item, child, depth + 1))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.update(unsafe_json(item, f"{path}[{index}]", depth + 1))
    elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        problems[name] = [f"longer than {MAX_STRING_CHARS} characters"]
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_PATH_INT:
        problems[name] = ["a number outside the 64-bit range"]
    return problems


_BRACKETS = re.compile(r"[\[\]]")


def check_query(request: Request) -> None:
    """Refuse query keys that begin with ``$`` or contain ``.``, and over-long parameters."""
    problems = _unsafe_fields(request.args.items(multi=True), MAX_QUERY_CHARS)
    if problems:
        raise InvalidInput("the query parameters have keys or values no route accepts", problems)


def check_form_body(request: Request) -> None:
    """The same for a form body (Open311's ``POST requests``): its keys are refused alike.

    Values are bounded by the body's size limit and the route's own checks.
    """
    problems = _unsafe_fields(request.form.items(multi=True), None)
    if problems:
        raise InvalidInput("the form has fields no route accepts", problems)


def _unsafe_fields(items: Iterable[tuple[str, str]], longest: int | None) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    for key, value in items:
        # ``a[$ne]=1`` is how qs-style parsers spell a nested key: each part counts.
        reason = next(filter(None, map(unsafe_key, _BRACKETS.split(key))), None)
        if reason:
            problems.setdefault(key, []).append(reason)
        if longest is not None and (len(key) > longest or len(value) > longest):
            problems.setdefault(key[:64], []).append(f"longer than {longest} characters")
    return problems


def check_json_body(request: Request) -> None:
    """``unsafe_json`` on a JSON body before the route runs, so every route refuses alike.

    A body that does not parse is left to ``load_body``, which says why (400).
    """
    try:
        raw = json.loads(request.get_data(cache=True, as_text=False) or b"null")
    except (ValueError, UnicodeDecodeError):
        return
    problems = unsafe_json(raw)
    if problems:
        raise InvalidInput("the request body has keys or values no route accepts", problems)


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
    out_of_range = unsafe_json(loaded)
    if out_of_range:
        raise InvalidInput("the query parameters failed validation", out_of_range)
    return loaded


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


SchemaRef = type[marshmallow.Schema] | marshmallow.Schema


class _ProblemWsgiApp(WsgiApp):
    """nameko's WSGI app, with its routing errors (no such path, method) as problem+json.

    nameko answers a URL that matches no route, or a path parameter its
    converter refuses, with werkzeug's HTML error page before any route runs;
    this gives the same problem+json and security headers a route gives.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        adapter = self.url_map.bind_to_environ(environ)
        try:
            adapter.match()
        except HTTPException as exc:
            response = problem(exc.code or 500, exc.name, exc.description or "")
            if exc.code == 405:
                allowed = getattr(exc, "valid_methods", None) or []
                response.headers["Allow"] = ", ".join(allowed)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response(environ, start_response)
        return super().__call__(environ, start_response)


class BoundedIntegerConverter(IntegerConverter):
    """``<int:...>`` that stops at ``MAX_PATH_INT``: a larger number is 404, not a crash below."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", MAX_PATH_INT)
        super().__init__(map, *args, **kwargs)


class PlatformWebServer(WebServer):
    """The per-process HTTP server every ``Route`` registers with (``_ProblemWsgiApp``)."""

    def get_wsgi_app(self) -> WsgiApp:
        return _ProblemWsgiApp(self)

    def make_url_map(self) -> Map:
        url_map = Map(converters={"int": BoundedIntegerConverter})
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map


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

    Whether a route needs a token is decided by ``shequ.public`` alone;
    ``public`` here records what the route's author meant, and a unit test
    requires the two to agree.

    ``action`` names what the route does in the service's authorisation
    table (``access.yaml``, ``shequ.policy``); ``{service}`` in it stands for
    the service's name. Every non-public route must name one: the service
    refuses to start otherwise, and a caller whose roles have no rule for
    it is refused (403) before the route runs.
    """

    server = PlatformWebServer()

    def __init__(
        self,
        method: str,
        url: str,
        *,
        public: bool = False,
        action: str | None = None,
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
        self.declared_public = public
        self.public = route_is_public(method, url)
        self.action = action
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

    def action_for(self, service: str) -> str | None:
        """The action this route names in the service named ``service``."""
        return self.action.replace("{service}", service) if self.action else None

    def get_url_rule(self) -> Rule:
        return Rule(self.rule_for(self.container.service_name), methods=self.method.split(","))

    def setup(self) -> None:
        config = self.container.config
        self.max_body = int(config.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        self.verifier = token_verifier(config)
        self.api_keys: ApiKeys = api_keys_from_config(config)
        self.limited = self.public and bool(set(self.method.split(",")) & WRITE_METHODS)
        self.limiter = _shared_limiter(
            float(config.get("RATE_LIMIT_PER_MINUTE", 30)), int(config.get("RATE_LIMIT_BURST", 10))
        )
        self.trusted_hops = int(config.get("TRUSTED_PROXY_HOPS", 1))
        self.policy: Policy | None = None
        self.action_name = self.action_for(self.container.service_name)
        if self.action_name:
            self.policy = policy_of(self.container.service_cls, self.container.service_name)
            self.policy.action(self.action_name)
        elif not self.public:
            raise PolicyError(
                f"{self.container.service_name}: {self.method} {self.url} is not public "
                "and names no action="
            )
        super().setup()

    def handle_request(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            self._admit(request)
            response = self.respond(request)
        except Exception as exc:  # errors before the worker ran
            response = self.response_from_exception(exc)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", DOCUMENT_POLICY)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        HTTP_REQUEST_SECONDS.labels(
            self.container.service_name, request.method, self.url, str(response.status_code)
        ).observe(time.monotonic() - started)
        return response

    def respond(self, request: Request) -> Response:
        """The answer to an admitted request: nameko's, from a worker running the method."""
        return super().handle_request(request)  # type: ignore[no-any-return]

    def _admit(self, request: Request) -> None:
        # nameko's server hands over a shallow request and its handler unshallows
        # it; the body checks here come first, so they do the same.
        request.shallow = False
        length = request.content_length
        if length is not None and length > self.max_body:
            raise BodyTooLarge(f"the body has {length} bytes; the limit is {self.max_body}")
        if request.content_length is None and request.method in ("POST", "PUT", "PATCH"):
            body = request.stream.read(self.max_body + 1)
            if len(body) > self.max_body:
                raise BodyTooLarge(f"the body exceeds the limit of {self.max_body} bytes")
            request._cached_data = body  # type: ignore[attr-defined]
        if self.limited and request.method in WRITE_METHODS:
            wait = self.limiter.take(client_key(request, self.trusted_hops))
            if wait > 0:
                raise TooManyRequests(
                    "too many requests from this client; try again later",
                    retry_after=max(1, math.ceil(wait)),
                )
        request.identity = None  # type: ignore[attr-defined]
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            request.identity = self.verifier.verify(header[7:].strip())  # type: ignore[attr-defined]
        elif header.startswith("ApiKey "):
            request.identity = self.api_keys.identify(header[7:].strip())  # type: ignore[attr-defined]
        elif not self.public:
            raise Unauthorized(
                "this route needs a bearer token (Authorization: Bearer ...) "
                "or a bureau client's key (Authorization: ApiKey ...)"
            )
        if self.policy is not None and self.action_name and request.identity is not None:
            if not self.policy.permits(request.identity, self.action_name):  # type: ignore[attr-defined]
                action = self.policy.action(self.action_name)
                extra: dict[str, Any] = {}
                detail = forbidden_detail(action)
                missing = action.missing_client_scopes(request.identity)  # type: ignore[attr-defined]
                if missing:
                    extra["missing_scopes"] = list(missing)
                    lacking = " or ".join(missing)
                    detail += f"; this client's token or key lacks the scope {lacking}"
                raise Forbidden(
                    detail, action=action.name, allowed_roles=list(action.roles()), **extra
                )
        check_query(request)
        if request.method in WRITE_METHODS and request.mimetype == "application/json":
            check_json_body(request)
        if request.method in WRITE_METHODS and request.mimetype in FORM_TYPES:
            check_form_body(request)

    def handle_result(self, event: Any, worker_ctx: Any, result: Any, exc_info: Any) -> Any:
        # Before the response is released: the record of a read of sensitive
        # data exists by the time the caller has the data (shequ.policy).
        flush_uses(exc_info is None)
        return super().handle_result(event, worker_ctx, result, exc_info)

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, dict | list):
            return json_response(result)
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict | list):
            return json_response(result[1], status=result[0])
        return super().response_from_result(result)

    def response_from_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ConnectionFailure):
            # Not the client's fault and not a bug: the store is away (restarting,
            # failing over). A 503 with Retry-After tells a client to come back;
            # nothing was changed, since writes happen in one transaction.
            log.warning("%s %s: the database cannot be reached: %s", self.method, self.url,
                        type(exc).__name__)  # fmt: skip
            exc = Unavailable("the database cannot be reached right now; nothing was changed")
        if isinstance(exc, InvalidInput):
            return problem(exc.status, exc.title, exc.detail, errors=exc.errors)
        if isinstance(exc, ShequError):
            response = problem(exc.status, exc.title, exc.detail, **exc.extra)
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = "Bearer"
            if isinstance(exc, TooManyRequests | Unavailable):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if isinstance(exc, HTTPException) and exc.code:
            return problem(exc.code, exc.name, exc.description or "")
        log.error(
            "%s %s failed", self.method, self.url, exc_info=(type(exc), exc, exc.__traceback__)
        )
        return problem(500, "Internal error", "the request failed; the error was logged")


route = Route.decorator
