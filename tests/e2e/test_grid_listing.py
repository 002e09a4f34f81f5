"""Listing incidents: filters, cursor pagination and its refusals, through the front door."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.conftest import Platform

pytestmark = pytest.mark.e2e

LIST = "/api/v1/grid/incidents"


@pytest.fixture(scope="module")
def resident(platform: Platform) -> requests.Session:
    """A reporter of their own: residents list only their own reports, so nobody else's
    incidents (the platform is shared by every e2e test) can enter these pages."""
    return platform.session("resident", sub=f"res-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def reported(platform: Platform, resident: requests.Session) -> list[dict[str, Any]]:
    made = []
    for n in range(7):
        body = {
            "category": "facility_damaged" if n % 2 else "alley_unclean",
            "grid_cell": "qy-01" if n < 4 else "qy-02",
            "description": f"第{n}处",
            "channel": "hotline" if n == 6 else "resident_app",
        }
        response = resident.post(f"{platform.url}{LIST}", json=body, timeout=10)
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


def walk(
    platform: Platform, session: requests.Session, **params: Any
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = session.get(f"{platform.url}{LIST}", params=query, timeout=10)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "the cursor never ended"


def test_pages_walk_every_incident_once_newest_first(
    platform: Platform, resident: requests.Session, reported: list[dict[str, Any]]
) -> None:
    pages = walk(platform, resident, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [item["id"] for page in pages for item in page]
    assert len(seen) == len(set(seen))
    assert seen == [item["id"] for item in reversed(reported)]


def test_a_page_of_exactly_the_remaining_items_is_the_last(
    platform: Platform, resident: requests.Session, reported: list[dict[str, Any]]
) -> None:
    assert [len(page) for page in walk(platform, resident, limit=7)] == [7]


def test_filters_narrow_the_listing_and_pages_keep_them(
    platform: Platform, resident: requests.Session, reported: list[dict[str, Any]]
) -> None:
    pages = walk(platform, resident, limit=1, category="facility_damaged", grid_cell="qy-01")
    expected = [i["id"] for i in reversed(reported[:4]) if i["category"] == "facility_damaged"]
    assert [item["id"] for page in pages for item in page] == expected
    hotline = walk(platform, resident, channel="hotline", urgency="simple")
    assert [item["id"] for page in hotline for item in page] == [reported[6]["id"]]


def test_status_may_be_repeated_or_comma_separated(
    platform: Platform, resident: requests.Session, reported: list[dict[str, Any]]
) -> None:
    url = f"{platform.url}{LIST}"
    repeated = resident.get(f"{url}?status=reported&status=rejected", timeout=10).json()
    comma = resident.get(f"{url}?status=rejected,reported", timeout=10).json()
    assert len(repeated["items"]) == len(comma["items"]) == 7
    none = resident.get(url, params={"status": "closed_resolved"}, timeout=10).json()
    assert none == {"items": [], "next_cursor": None}


def test_the_reporting_period_bounds_the_listing(
    platform: Platform, resident: requests.Session, reported: list[dict[str, Any]]
) -> None:
    listed = walk(platform, resident)[0]  # as stored: BSON keeps milliseconds
    middle = next(i["reported_at"] for i in listed if i["id"] == reported[3]["id"])
    newer = walk(platform, resident, reported_from=middle)
    older = walk(platform, resident, reported_to=middle)
    assert [i["id"] for p in newer for i in p] == [i["id"] for i in reversed(reported[3:])]
    assert [i["id"] for p in older for i in p] == [i["id"] for i in reversed(reported[:3])]


def first_cursor(platform: Platform, session: requests.Session) -> str:
    page = session.get(f"{platform.url}{LIST}", params={"limit": 2}, timeout=10).json()
    assert page["next_cursor"]
    return str(page["next_cursor"])


@pytest.mark.parametrize(
    ("change", "params"),
    [
        ("garbage", {}),
        ("tamper", {}),
        ("keep", {"category": "alley_unclean"}),
    ],
    ids=["garbage", "tampered", "other filters"],
)
def test_a_bad_cursor_is_a_422_problem(
    platform: Platform,
    resident: requests.Session,
    reported: list[dict[str, Any]],
    change: str,
    params: dict[str, str],
) -> None:
    cursor = first_cursor(platform, resident)
    if change == "garbage":
        cursor = "not-a-cursor"
    elif change == "tamper":
        payload, mac = cursor.split(".")
        cursor = f"{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{mac}"
    response = resident.get(
        f"{platform.url}{LIST}", params={"limit": 2, "cursor": cursor, **params}, timeout=10
    )
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "cursor" in response.json()["errors"]


@pytest.mark.parametrize(
    "query",
    ["offset=3", "skip=3", "limit=0", "limit=500", "status=lost", "community=a&community=b",
     "reported_from=yesterday",
     "reported_from=2026-11-23T10:00:00Z&reported_to=2026-11-23T09:00:00Z"],
)  # fmt: skip
def test_bad_listing_parameters_are_422(
    platform: Platform, resident: requests.Session, query: str
) -> None:
    response = resident.get(f"{platform.url}{LIST}?{query}", timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["errors"]


def test_each_service_serves_its_openapi_document_through_the_front_door(
    platform: Platform,
) -> None:
    for service in ("grid", "disclosure", "mediation", "notify", "volunteer"):
        response = requests.get(f"{platform.url}/api/v1/{service}/openapi.json", timeout=10)
        assert response.status_code == 200, service
        document = response.json()
        assert document["openapi"].startswith("3.")
        assert f"/api/v1/{service}/openapi.json" in document["paths"]
