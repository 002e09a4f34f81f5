"""The public allow-list is the one place that makes a route public."""

from __future__ import annotations

from typing import Any

import marshmallow
import pytest

from shequ.discovery import discover_services, load_service
from shequ.openapi import routes_of
from shequ.public import PUBLIC_ROUTES, is_public, route_is_public

#: A listing may not be asked for more than this many items at once.
MAX_PAGE = 1000

ROUTES = [
    (service, method_name, route)
    for service in sorted(discover_services())
    for method_name, route in routes_of(load_service(service))
]


def test_every_service_route_is_checked() -> None:
    services = {service for service, _, _ in ROUTES}
    assert services >= {"grid", "mediation", "disclosure", "volunteer", "notify"}


@pytest.mark.parametrize(
    ("service", "method_name", "route"),
    ROUTES,
    ids=[f"{service}.{name}" for service, name, _ in ROUTES],
)
def test_a_route_is_public_exactly_when_it_says_so_and_the_allow_list_agrees(
    service: str, method_name: str, route: object
) -> None:
    assert route.declared_public == route.public, (  # type: ignore[attr-defined]
        f"{service}.{method_name}: public={route.declared_public} in the service but "  # type: ignore[attr-defined]
        f"{'' if route.public else 'not '}on shequ.public.PUBLIC_ROUTES"  # type: ignore[attr-defined]
    )


def test_no_route_that_changes_personal_data_is_public() -> None:
    writes = {
        f"{route.method} {route.rule_for(service)}"
        for service, _, route in ROUTES
        if route.public and route.method != "GET"
    }
    assert writes == {
        "POST /api/v1/disclosure/checkpoints/<int:size>/cosignatures",
        "POST /open311/v2/requests.<any(json,xml):fmt>",
        # The SLA board's sign-in and sign-out set and clear a cookie; they change no data.
        "POST /sla/session",
        "POST /sla/session/end",
    }


def test_a_method_must_be_listed_for_the_route_to_be_public() -> None:
    assert is_public("GET", "/open311/v2/requests.<any(json,xml):fmt>")
    assert not is_public("DELETE", "/open311/v2/requests.<any(json,xml):fmt>")
    assert not route_is_public("GET,POST", "/api/v1/grid/categories")


def test_every_entry_says_why() -> None:
    assert all(entry.why for entry in PUBLIC_ROUTES)


def _limits() -> list[tuple[str, marshmallow.fields.Field]]:
    found = []
    for service, name, route in ROUTES:
        query = route.query
        if query is None:
            continue
        schema = query() if isinstance(query, type) else query
        for field_name, field in schema.fields.items():
            if field_name == "limit":
                found.append((f"{service}.{name}", field))
    return found


@pytest.mark.parametrize(("where", "field"), _limits(), ids=[w for w, _ in _limits()])
def test_every_page_size_is_capped(where: str, field: marshmallow.fields.Field) -> None:
    caps = [v.max for v in field.validators if isinstance(v, marshmallow.validate.Range) and v.max]
    assert caps and min(caps) <= MAX_PAGE, f"{where}: limit has no cap of at most {MAX_PAGE}"


#: Listings without a ``limit``, each bounded by what it lists rather than by a page.
BOUNDED_BY_NATURE = {
    "disclosure.board_entries_json": "the board's own pages, a fixed number of entries each",
    "grid.get_history": "one incident's lifecycle steps",
    "mediation.list_mediators": "the district's roster of mediators",
    "notify.list_rules": "the district's notification rules, written by its admins",
    "notify.list_templates": "the district's message templates, written by its admins",
    "notify.list_subscriptions": "the caller's own webhook subscriptions (one per bureau need)",
    "volunteer.hours_totals": "one sum per volunteer, team or community",
    "volunteer.my_offers": "the caller's own offers still open",
}


def _listings() -> list[tuple[str, Any]]:
    """Every GET route answering ``{"items": [...]}``, as ``(service.method, route)``."""
    found = []
    for service, name, route in ROUTES:
        response = route.response
        schema = response() if isinstance(response, type) else response
        if route.method == "GET" and isinstance(schema, marshmallow.Schema):
            if isinstance(schema.fields.get("items"), marshmallow.fields.List):
                found.append((f"{service}.{name}", route))
    return found


@pytest.mark.parametrize(("where", "route"), _listings(), ids=[w for w, _ in _listings()])
def test_every_listing_takes_a_capped_page_size_or_is_bounded_by_what_it_lists(
    where: str, route: Any
) -> None:
    """A listing without a page size answers with all it has, which grows with the
    district: the care list and the hours ledger did until this test."""
    query = route.query() if isinstance(route.query, type) else route.query
    if where in BOUNDED_BY_NATURE:
        assert query is None or "limit" not in query.fields, f"{where} pages now: unlist it"
        return
    assert query is not None and "limit" in query.fields, f"{where}: no limit parameter"
