"""The routes anyone may call without a token: the platform's one allow-list.

Every other route of every service needs a valid bearer token. A route is
public only if it matches an entry here; a route's own ``public=True`` is a
statement of intent that ``tests/unit/shared/test_public.py`` holds against
this list, so making a route public is always a change to this file, seen in
review in one place.

Entries match a route's method and its URL template as written in the
service (``{service}`` unexpanded, werkzeug converters included) with
shell-style wildcards (``fnmatch``): ``*`` also crosses ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class PublicRoute:
    method: str
    pattern: str
    why: str


PUBLIC_ROUTES: tuple[PublicRoute, ...] = (
    # Every service's operations: probes, scraping, and its API description.
    PublicRoute("GET", "/healthz", "liveness probe"),
    PublicRoute("GET", "/readyz", "readiness probe; says only which check failed"),
    PublicRoute("GET", "/metrics", "Prometheus scraping; labels carry no personal data"),
    PublicRoute("GET", "/api/v1/{service}/openapi.json", "the API description"),
    # The public disclosure log and its notice board: published to be read by anyone.
    PublicRoute("GET", "/board/*", "the notice board's pages, feed and static files"),
    PublicRoute("GET", "/api/v1/disclosure/entries*", "log entries and inclusion proofs"),
    PublicRoute("GET", "/api/v1/disclosure/checkpoint*", "signed checkpoints"),
    PublicRoute("GET", "/api/v1/disclosure/consistency", "consistency proofs"),
    PublicRoute("GET", "/api/v1/disclosure/public-key", "the log's key and its witnesses"),
    PublicRoute("GET", "/api/v1/disclosure/figures", "published figures"),
    PublicRoute(
        "POST",
        "/api/v1/disclosure/checkpoints/<int:size>/cosignatures",
        "witnesses' cosignatures, each checked against a configured witness key",
    ),
    # The grid's public service-level page and category list.
    # The ops SLA board is not public: it answers its own sign-in form and
    # checks the token (cookie or header) on every page itself (services/grid/sla_pages.py).
    PublicRoute("GET", "/sla/*", "the ops SLA board; signs in and checks tokens itself"),
    PublicRoute("POST", "/sla/session", "the SLA board's sign-in: checks the pasted token"),
    PublicRoute("POST", "/sla/session/end", "the SLA board's sign-out"),
    PublicRoute("GET", "/api/v1/grid/categories", "what can be reported"),
    # Open311 GeoReport v2: anonymous reads; a POST carries the client's api_key.
    PublicRoute("GET", "/open311/v2/*", "Open311 reads (public views, no personal data)"),
    PublicRoute(
        "POST", "/open311/v2/requests.<any(json,xml):fmt>", "Open311 reports, with an api_key"
    ),
)


def is_public(method: str, url: str) -> bool:
    """Whether the route ``method url`` (a template, as declared) needs no token."""
    return any(
        entry.method == method.upper() and fnmatchcase(url, entry.pattern)
        for entry in PUBLIC_ROUTES
    )


def route_is_public(methods: str, url: str) -> bool:
    """``is_public`` for a route serving several methods (``"GET,HEAD"``): all must be listed."""
    return all(is_public(method.strip(), url) for method in methods.split(","))
