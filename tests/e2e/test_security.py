"""Attacks on the running platform: anonymous calls, operator injection, oversize, floods.

The routes come from each service's own OpenAPI document as served by the
running service, not from a list written here, so a new route is covered the
day it is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from shequ.auth import ROLES, mint_token
from shequ.discovery import discover_services
from shequ.public import is_public
from tests.conftest import Platform, Servers, stack_on, wait_for
from tests.support.idp import AUDIENCE, ISSUER, Provider, serving

pytestmark = pytest.mark.e2e

SERVICES = sorted(discover_services())
WRITES = ("post", "put", "patch", "delete")
#: Routes on a service's own port only; everything else goes through the front door.
OPERATIONAL = ("/healthz", "/readyz", "/metrics")


def document(platform: Platform, service: str) -> dict[str, Any]:
    response = requests.get(f"{platform.url}/api/v1/{service}/openapi.json", timeout=10)
    assert response.status_code == 200
    return response.json()


def operations(platform: Platform) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """Every (service, method, path, operation) the running services document."""
    for service in SERVICES:
        for path, items in document(platform, service)["paths"].items():
            for method, operation in items.items():
                yield service, method, path, operation


def fill(path: str, operation: dict[str, Any]) -> str:
    """The path with each parameter filled in with a value its schema allows."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        schema = parameter["schema"]
        value = schema["enum"][0] if "enum" in schema else "1"
        path = path.replace("{" + parameter["name"] + "}", str(value))
    return path


def url_of(platform: Platform, service: str, path: str) -> str:
    if path in OPERATIONAL:
        return f"{platform.stack.processes[service].url}{path}"
    return f"{platform.url}{path}"


def everything(platform: Platform) -> requests.Session:
    """A caller holding every role in every community: only input rules stand in the way."""
    return platform.session(*sorted(ROLES), sub="sec-tester", communities=("hx-qingyuan",))


def counts(platform: Platform) -> dict[str, int]:
    """Documents per collection of every service, outboxes included: a stored change shows."""
    totals = {}
    for service in SERVICES:
        db = platform.db(service)
        for name in db.list_collection_names():
            if name != "locks":
                totals[f"{service}.{name}"] = db[name].count_documents({})
    return totals


def settled_counts(platform: Platform) -> dict[str, int]:
    """``counts`` once earlier tests' events have finished landing (two equal reads in a row).

    Handlers and notify's delivery worker keep writing for a few seconds after
    the tests that caused them; a snapshot taken meanwhile would blame this
    test for their writes.
    """
    previous: list[dict[str, int]] = [counts(platform)]

    def unchanged() -> dict[str, int] | None:
        current = counts(platform)
        same = current == previous[0]
        previous[0] = current
        return current if same else None

    return wait_for(unchanged, timeout=90, interval=1.0, what="the platform's writes to settle")


def problem_of(response: requests.Response, status: int) -> dict[str, Any]:
    """The problem+json body of a response with ``status``, else nothing."""
    if response.status_code != status:
        return {}
    if response.headers.get("Content-Type") != "application/problem+json":
        return {}
    return response.json()


def test_every_operation_not_documented_as_public_refuses_an_anonymous_caller(
    platform: Platform,
) -> None:
    refused, checked = [], 0
    for service, method, path, operation in operations(platform):
        if operation.get("security") == []:
            continue
        checked += 1
        response = requests.request(
            method.upper(), url_of(platform, service, fill(path, operation)), timeout=10
        )
        if response.status_code != 401 or response.headers.get("WWW-Authenticate") != "Bearer":
            refused.append(f"{method.upper()} {path}: {response.status_code}")
    assert checked > 50
    assert refused == []


def test_the_documents_call_public_exactly_what_the_allow_list_allows(
    platform: Platform,
) -> None:
    mismatched = []
    for service, method, path, operation in operations(platform):
        documented = operation.get("security") == []
        if documented and not is_public(method, _template(service, path)):
            mismatched.append(f"{method.upper()} {path}")
    assert mismatched == []


def _template(service: str, path: str) -> str:
    """Map a documented path back to its route template, through the services' classes."""
    from shequ.discovery import load_service
    from shequ.openapi import openapi_path, routes_of

    for _, route in routes_of(load_service(service)):
        if openapi_path(route.rule_for(service))[0] == path:
            return route.url
    raise AssertionError(f"{service}: no route for {path}")


def test_an_invalid_token_is_refused_even_on_a_public_route(platform: Platform) -> None:
    response = requests.get(
        f"{platform.url}/api/v1/grid/categories",
        headers={"Authorization": "Bearer not-a-token"},
        timeout=10,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "token_of",
    [
        pytest.param(lambda p: p.token("admin", ttl=timedelta(minutes=-5)), id="expired"),
        pytest.param(lambda p: p.token("admin", audience="elsewhere"), id="wrong-audience"),
        pytest.param(lambda p: p.token("admin", issuer="elsewhere"), id="wrong-issuer"),
        pytest.param(lambda p: p.token("admin")[:-4] + "AAAA", id="tampered-signature"),
    ],
)  # fmt: skip
def test_a_bad_token_is_refused_by_every_service(platform: Platform, token_of: Any) -> None:
    token = token_of(platform)
    for service in SERVICES:
        method, path = next(
            (method, fill(path, op))
            for _, method, path, op in _of(platform, service)
            if op.get("security") != []
        )
        response = requests.request(
            method.upper(),
            f"{platform.url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 401, f"{service} {path}: {response.status_code}"
        assert response.json()["detail"].startswith("invalid bearer token")


def _of(platform: Platform, service: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path, items in document(platform, service)["paths"].items():
        for method, operation in items.items():
            yield service, method, path, operation


def _bodied(platform: Platform) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (service, method, path, op)
        for service, method, path, op in operations(platform)
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]


def test_an_operator_key_in_any_json_body_is_422_naming_it_and_changes_nothing(
    platform: Platform,
) -> None:
    session = everything(platform)
    before = settled_counts(platform)
    wrong = []
    bodies = _bodied(platform)
    for _service, method, path, operation in bodies:
        for body, field in (
            ({"$where": "sleep(1000)"}, "$where"),
            ({"note": {"$ne": None}}, "note.$ne"),
            ({"profile.phone": "1"}, "profile.phone"),
        ):
            response = session.request(
                method.upper(), f"{platform.url}{fill(path, operation)}", json=body, timeout=10
            )
            if field not in problem_of(response, 422).get("errors", {}):
                wrong.append(f"{method.upper()} {path} {field}: {response.status_code}")
    assert len(bodies) > 20
    assert wrong == []
    assert counts(platform) == before


def test_an_operator_or_dotted_query_key_is_422_on_every_route(platform: Platform) -> None:
    session = everything(platform)
    wrong = []
    for _service, method, path, operation in operations(platform):
        if method != "get" or path in OPERATIONAL:
            continue
        response = session.get(
            f"{platform.url}{fill(path, operation)}", params={"state[$ne]": "x"}, timeout=10
        )
        if "state[$ne]" not in problem_of(response, 422).get("errors", {}):
            wrong.append(f"GET {path}: {response.status_code} {response.headers['Content-Type']}")
    assert wrong == []


def test_an_oversized_body_is_413_on_every_route_that_takes_one(platform: Platform) -> None:
    session = everything(platform)
    before = settled_counts(platform)
    wrong = []
    for _service, method, path, operation in _bodied(platform):
        response = session.request(
            method.upper(),
            f"{platform.url}{fill(path, operation)}",
            json={"text": "x" * 70_000},
            timeout=10,
        )
        if response.status_code != 413:
            wrong.append(f"{method.upper()} {path}: {response.status_code}")
    assert wrong == []
    assert counts(platform) == before


def test_an_over_long_string_inside_the_limit_is_422(platform: Platform) -> None:
    response = everything(platform).post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "qy-01", "description": "x" * 20_001},
        timeout=10,
    )
    assert response.status_code == 422
    assert "longer than" in str(response.json()["errors"]["description"])


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("front door", "/api/v1/grid/incidents"),
        ("front door", "/api/v1/grid/categories"),
        ("front door", "/api/v9/nowhere"),
        ("service", "/healthz"),
    ],
)
def test_every_response_carries_the_security_headers(
    platform: Platform, where: str, path: str
) -> None:
    base = platform.url if where == "front door" else platform.stack.processes["grid"].url
    response = requests.get(f"{base}{path}", timeout=10)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_a_board_page_keeps_its_own_page_policy(platform: Platform) -> None:
    response = requests.get(f"{platform.url}/board/", timeout=10)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "style-src 'self'" in policy and "frame-ancestors 'none'" in policy


# -- the rate limit on public writes, on a grid of its own with a small bucket ------


@pytest.fixture(scope="module")
def limited_grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("limited"),
        services=["grid"],
        env={"SHEQU_RATE_LIMIT_PER_MINUTE": "1", "SHEQU_RATE_LIMIT_BURST": "3"},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def open311_post(base: str, forwarded_for: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(
        f"{base}/open311/v2/requests.json",
        data={"api_key": "not-a-key", "service_code": "facility_damaged"},
        headers=headers,
        timeout=10,
    )


def test_a_client_over_its_burst_of_public_writes_gets_429_with_retry_after(
    limited_grid: Any,
) -> None:
    statuses = [open311_post(limited_grid.url).status_code for _ in range(3)]
    assert 429 not in statuses
    response = open311_post(limited_grid.url)
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["status"] == 429


def test_a_client_cannot_escape_its_bucket_by_claiming_another_address(
    limited_grid: Any,
) -> None:
    wait_for(lambda: open311_post(limited_grid.url).status_code == 429, timeout=10)
    assert open311_post(limited_grid.url, forwarded_for="198.51.100.1").status_code == 429


def test_the_limit_applies_to_public_writes_only(limited_grid: Any) -> None:
    wait_for(lambda: open311_post(limited_grid.url).status_code == 429, timeout=10)
    response = requests.get(f"{limited_grid.url}/open311/v2/services.json", timeout=10)
    assert response.status_code == 200


# -- production verification: a grid configured with the identity provider's JWKS ---


@pytest.fixture(scope="module")
def provider_grid(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Provider]]:
    idp = Provider()
    idp.add_key("k1")
    with serving(idp) as jwks_url:
        stack = stack_on(
            servers,
            tmp_path_factory.mktemp("provider"),
            services=["grid"],
            env={
                "SHEQU_JWT_JWKS_URL": jwks_url,
                "SHEQU_JWT_ISSUER": ISSUER,
                "SHEQU_JWT_AUDIENCE": AUDIENCE,
            },
        )
        stack.start()
        try:
            yield stack, idp
        finally:
            stack.stop()


def test_a_service_configured_with_a_jwks_url_accepts_the_providers_tokens(
    provider_grid: tuple[Any, Provider],
) -> None:
    stack, idp = provider_grid
    token = idp.sign("k1", roles=["grid_worker"], communities=["hx-qingyuan"])
    response = requests.get(
        f"{stack.url}/api/v1/grid/incidents",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_providers_client_credential_token_is_limited_by_its_scope(
    provider_grid: tuple[Any, Provider],
) -> None:
    stack, idp = provider_grid
    url = f"{stack.url}/api/v1/grid/incidents"

    def get(scope: str) -> requests.Response:
        token = idp.sign("k1", sub="client:water-hub", roles=["bureau"], scope=scope)
        return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert get("grid.incidents").status_code == 200
    refused = get("notify.subscriptions")
    assert refused.status_code == 403, refused.text
    assert refused.json()["missing_scopes"] == ["grid.incidents"]


def test_a_service_configured_with_a_jwks_url_refuses_development_tokens(
    provider_grid: tuple[Any, Provider],
) -> None:
    stack, _ = provider_grid
    token = mint_token(
        stack.jwt_secret(), roles=["admin"], sub="dev", issuer=ISSUER, audience=AUDIENCE
    )
    response = requests.get(
        f"{stack.url}/api/v1/grid/incidents",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 401
    assert "'HS256' is not accepted" in response.json()["detail"]


def test_the_sla_board_takes_the_providers_tokens_and_refuses_development_ones(
    provider_grid: tuple[Any, Provider],
) -> None:
    """The board checks its session cookie itself (its pages are public routes, so
    the runtime's gate does not); it must accept what the gate accepts and
    nothing else. It verified with the development secret alone: a production
    grid refused the provider's tokens there and took ones signed with the secret."""
    stack, idp = provider_grid
    board = f"{stack.url}/sla/"
    provider_token = idp.sign("k1", roles=["community_staff"], communities=["hx-qingyuan"])
    development_token = mint_token(
        stack.jwt_secret(), roles=["admin"], sub="dev", issuer=ISSUER, audience=AUDIENCE
    )
    assert requests.get(board, cookies={"shequ_sla": provider_token}, timeout=10).status_code == 200
    refused = requests.get(board, cookies={"shequ_sla": development_token}, timeout=10)
    assert refused.status_code == 401
    assert "登录已失效" in refused.text

    for token, status in ((development_token, 401), (provider_token, 303)):
        session = requests.Session()
        session.get(board, timeout=10)
        signed = session.post(
            f"{stack.url}/sla/session",
            data={"token": token, "csrf": session.cookies["shequ_sla_csrf"]},
            timeout=10,
            allow_redirects=False,
        )
        assert signed.status_code == status, signed.text
    assert session.get(board, timeout=10).status_code == 200
