"""Bad input gets a specific problem+json answer and changes nothing."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import Platform

pytestmark = pytest.mark.e2e

VALID = {"category": "facility_damaged", "grid_cell": "qy-01", "description": "路灯坏了"}


def post(platform: Platform, **kwargs: object) -> requests.Response:
    session = platform.session("grid_worker", sub="gw-bad", communities=("hx-qingyuan",))
    return session.post(f"{platform.url}/api/v1/grid/incidents", timeout=10, **kwargs)


def stored(platform: Platform) -> tuple[int, int]:
    grid = platform.db("grid")
    return grid["incidents"].count_documents({}), grid["outbox"].count_documents({})


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({**VALID, "category": "no_such_thing"}, "category", "unknown category 'no_such_thing'"),
        ({**VALID, "grid_cell": "zz-99"}, "grid_cell", "unknown grid cell 'zz-99'"),
        ({**VALID, "grid_cell": {"$ne": ""}}, "grid_cell.$ne", "may not begin with '$'"),
        ({**VALID, "location": {"lat": 91, "lon": 0}}, "location", None),
        ({**VALID, "description": "长" * 2001}, "description", None),
        ({**VALID, "reporter_phone": "13800000000"}, "reporter_phone", "Unknown field."),
        ({**VALID, "channel": "open311"}, "channel", "Must be one of"),
        ({k: v for k, v in VALID.items() if k != "description"}, "description", None),
    ],
)
def test_a_schema_invalid_report_is_422_with_a_message_for_the_field(
    platform: Platform, body: dict[str, object], field: str, message: str | None
) -> None:
    before = stored(platform)
    response = post(platform, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "Invalid input"
    assert field in problem["errors"]
    if message:
        assert message in str(problem["errors"][field])
    assert stored(platform) == before


def test_malformed_json_is_400_and_stores_nothing(platform: Platform) -> None:
    before = stored(platform)
    response = post(platform, data=b'{"category": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["title"] == "Malformed request body"
    assert stored(platform) == before


def test_an_oversized_body_is_413(platform: Platform) -> None:
    response = post(platform, json={**VALID, "description": "x" * 70_000})
    assert response.status_code == 413
    assert response.json()["status"] == 413


def test_a_request_without_a_token_is_401(platform: Platform) -> None:
    response = requests.post(f"{platform.url}/api/v1/grid/incidents", json=VALID, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_forged_token_is_401(platform: Platform) -> None:
    from shequ.auth import mint_token

    forged = mint_token("not-the-secret" * 4, roles=["admin"], sub="mallory")
    response = requests.get(
        f"{platform.url}/api/v1/grid/incidents",
        headers={"Authorization": f"Bearer {forged}"},
        timeout=10,
    )
    assert response.status_code == 401
    assert "Signature verification failed" in response.json()["detail"]


def test_an_unknown_path_is_a_problem_404(platform: Platform) -> None:
    response = requests.get(f"{platform.url}/api/v2/nothing", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
