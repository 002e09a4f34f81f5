"""The public allow-list is the one place that makes a route public."""

from __future__ import annotations

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
    assert {service for service, _, _ in ROUTES} >= {"grid", "disclosure", "notify"}


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
