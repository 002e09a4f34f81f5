"""The grid registry through its admin API, and the duplicate hint on new reports.

The platform is shared by every e2e test of the session, so each test makes
its own communities, cells and categories with ids unique to the run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from tests.conftest import Platform

pytestmark = pytest.mark.e2e

REGISTRY = "/api/v1/grid/registry"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(platform: Platform) -> requests.Session:
    return platform.session("admin", sub="admin-1")


def create(platform: Platform, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response = admin(platform).post(f"{platform.url}{REGISTRY}/{kind}", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def report(
    platform: Platform, category: str, cell: str, *, session: requests.Session | None = None
) -> requests.Response:
    session = session or platform.session("grid_worker", sub="gw-reg")
    return session.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": category, "grid_cell": cell, "description": "同一处路灯不亮"},
        timeout=10,
    )


def place(platform: Platform, cells: int = 3) -> tuple[str, list[str]]:
    """A fresh community with ``cells`` cells in a row (each adjacent to the next)."""
    community = create(platform, "communities", {"id": unique("cm"), "name": "试点社区"})["id"]
    made: list[str] = []
    for n in range(cells):
        body = {"id": unique("cell"), "name": f"试点{n}网格", "community": community}
        if made:
            body["adjacent"] = [made[-1]]
        made.append(create(platform, "cells", body)["id"])
    return community, made


def category(platform: Platform, **overrides: Any) -> str:
    body = {
        "code": unique("cat"),
        "name_zh": "井盖缺失",
        "name_en": "Missing manhole cover",
        "urgency": "urgent",
        "department": "municipal",
        **overrides,
    }
    return str(create(platform, "categories", body)["code"])


def registry_counts(platform: Platform) -> dict[str, int]:
    grid = platform.db("grid")
    return {
        name: grid[name].count_documents({})
        for name in grid.list_collection_names()
        if name.startswith("registry_")
    }


def test_the_seeded_subdistrict_is_visible_through_the_api(platform: Platform) -> None:
    session = admin(platform)
    overview = session.get(f"{platform.url}{REGISTRY}", timeout=10).json()
    assert overview["subdistrict"] == {"id": "hx-jd", "name": "和兴街道"}
    cell = session.get(f"{platform.url}{REGISTRY}/cells/qy-01", timeout=10).json()
    assert cell["community"] == "hx-qingyuan" and "qy-02" in cell["adjacent"]
    assert cell["centroid"] == {"lat": 30.275, "lon": 120.15} and len(cell["polygon"]) == 4
    departments = session.get(f"{platform.url}{REGISTRY}/departments", timeout=10).json()
    assert {"municipal", "city_management", "health", "police", "civil_affairs", "justice",
            "property_management"} <= {d["id"] for d in departments["items"]}  # fmt: skip
    workers = session.get(f"{platform.url}{REGISTRY}/grid-workers?cell=qy-01", timeout=10)
    assert [w["id"] for w in workers.json()["items"]] == ["gw-qy-001"]
    buildings = session.get(f"{platform.url}{REGISTRY}/buildings?cell=qy-01", timeout=10)
    assert len(buildings.json()["items"]) == 3


def test_a_list_is_paged_in_id_order(platform: Platform) -> None:
    url = f"{platform.url}{REGISTRY}/buildings"
    first = admin(platform).get(url, params={"community": "hx-qingyuan", "limit": 2}, timeout=10)
    page = first.json()
    assert len(page["items"]) == 2 and page["next"] == page["items"][-1]["id"]
    rest = admin(platform).get(
        url, params={"community": "hx-qingyuan", "after": page["next"]}, timeout=10
    )
    ids = [b["id"] for b in page["items"] + rest.json()["items"]]
    assert ids == sorted(ids) and len(ids) == 6 and rest.json()["next"] is None


def test_a_cell_and_a_category_added_by_an_admin_take_reports_at_once(platform: Platform) -> None:
    community, (first, second, _) = place(platform)
    code = category(platform)
    neighbour = admin(platform).get(f"{platform.url}{REGISTRY}/cells/{first}", timeout=10)
    assert neighbour.json()["adjacent"] == [second]

    response = report(platform, code, second)
    assert response.status_code == 201, response.text
    assert response.json()["community"] == community
    assert response.json()["urgency"] == "urgent"
    listed = requests.get(f"{platform.url}/api/v1/grid/categories", timeout=10).json()
    assert code in {c["code"] for c in listed}


def test_a_retired_category_takes_no_new_reports(platform: Platform) -> None:
    _, (cell, *_) = place(platform, cells=1)
    code = category(platform)
    assert report(platform, code, cell).status_code == 201
    retired = admin(platform).patch(
        f"{platform.url}{REGISTRY}/categories/{code}", json={"active": False}, timeout=10
    )
    assert retired.status_code == 200 and retired.json()["active"] is False

    refused = report(platform, code, cell)
    assert refused.status_code == 422
    assert "retired" in str(refused.json()["errors"]["category"])
    listed = requests.get(f"{platform.url}/api/v1/grid/categories", timeout=10).json()
    assert code not in {c["code"] for c in listed}


def test_only_admins_change_the_registry(platform: Platform) -> None:
    body = {"id": unique("cm"), "name": "无权社区"}
    for roles in (("community_staff",), ("grid_worker",), ("resident",), ("auditor",)):
        session = platform.session(*roles, sub="not-admin", communities=("hx-qingyuan",))
        response = session.post(f"{platform.url}{REGISTRY}/communities", json=body, timeout=10)
        assert response.status_code == 403, roles
    patch = platform.session("community_staff", communities=("hx-qingyuan",)).patch(
        f"{platform.url}{REGISTRY}/cells/qy-01", json={"name": "改名"}, timeout=10
    )
    assert patch.status_code == 403


def test_community_staff_read_only_their_communitys_places(platform: Platform) -> None:
    staff = platform.session("community_staff", sub="staff-ls", communities=("hx-liushu",))
    cells = staff.get(f"{platform.url}{REGISTRY}/cells", timeout=10).json()["items"]
    assert {c["community"] for c in cells} == {"hx-liushu"}
    assert staff.get(f"{platform.url}{REGISTRY}/cells/qy-01", timeout=10).status_code == 404
    assert staff.get(f"{platform.url}{REGISTRY}/departments/police", timeout=10).status_code == 200
    resident = platform.session("resident", sub="r-1")
    assert resident.get(f"{platform.url}{REGISTRY}/cells", timeout=10).status_code == 403


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("cells", {"name": "坏", "community": "hx-qingyuan", "adjacent": ["zz-99"]}, "adjacent"),
        ("cells", {"name": "坏", "community": "no-such-community"}, "community"),
        (
            "cells",
            {
                "name": "坏",
                "community": "hx-qingyuan",
                "polygon": [{"lat": 30, "lon": 120}, {"lat": 30, "lon": 121}],
            },
            "polygon",
        ),  # fmt: skip
        ("cells", {"name": "坏", "community": "hx-qingyuan", "colour": "red"}, "colour"),
        ("cells", {"name": "坏", "community": {"$ne": ""}}, "community.$ne"),
        ("buildings", {"name": "坏楼", "cell": "zz-99"}, "cell"),
        ("grid-workers", {"name": "某", "cells": []}, "cells"),
        ("departments", {"name_zh": "坏", "name_en": "Bad", "categories": ["nope"]}, "categories"),
        (
            "categories",
            {"name_zh": "坏", "name_en": "Bad", "urgency": "urgent", "department": "ghosts"},
            "department",
        ),
        ("categories", {"name_zh": "坏", "name_en": "Bad", "urgency": "soon"}, "urgency"),
    ],
)
def test_a_bad_entry_is_422_per_field_and_stores_nothing(
    platform: Platform, kind: str, body: dict[str, Any], field: str
) -> None:
    key = "code" if kind == "categories" else "id"
    before = registry_counts(platform)
    response = admin(platform).post(
        f"{platform.url}{REGISTRY}/{kind}", json={key: unique("bad"), **body}, timeout=10
    )
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]
    assert registry_counts(platform) == before


def test_a_bad_id_is_422_and_a_duplicate_id_is_409(platform: Platform) -> None:
    bad = admin(platform).post(
        f"{platform.url}{REGISTRY}/communities", json={"id": "Bad Id!", "name": "x"}, timeout=10
    )
    assert bad.status_code == 422 and "id" in bad.json()["errors"]
    before = registry_counts(platform)
    again = admin(platform).post(
        f"{platform.url}{REGISTRY}/cells",
        json={"id": "qy-01", "name": "重复", "community": "hx-qingyuan"},
        timeout=10,
    )
    assert again.status_code == 409
    assert registry_counts(platform) == before
    cell = admin(platform).get(f"{platform.url}{REGISTRY}/cells/qy-01", timeout=10).json()
    assert cell["name"] == "清源一网格"


def test_a_cell_dropping_a_neighbour_unlinks_both_sides(platform: Platform) -> None:
    _, (first, second, third) = place(platform)
    changed = admin(platform).patch(
        f"{platform.url}{REGISTRY}/cells/{second}", json={"adjacent": [third]}, timeout=10
    )
    assert changed.status_code == 200 and changed.json()["adjacent"] == [third]
    get = admin(platform).get
    assert get(f"{platform.url}{REGISTRY}/cells/{first}", timeout=10).json()["adjacent"] == []
    assert get(f"{platform.url}{REGISTRY}/cells/{third}", timeout=10).json()["adjacent"] == [second]


def test_a_dispatch_to_an_unknown_department_is_422(platform: Platform) -> None:
    code = category(platform)
    _, (cell, *_) = place(platform, cells=1)
    incident = report(platform, code, cell).json()
    staff = admin(platform)
    url = f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions"
    assert staff.post(url, json={"action": "accept", "expected_version": 1}).status_code == 200
    refused = staff.post(
        url, json={"action": "dispatch", "department": "ghosts", "expected_version": 2}
    )
    assert refused.status_code == 422
    assert "unknown department 'ghosts'" in str(refused.json()["errors"]["department"])
    co_refused = staff.post(
        url,
        json={
            "action": "dispatch",
            "department": "municipal",
            "co_departments": ["police", "spectres"],
            "expected_version": 2,
        },
    )
    assert co_refused.status_code == 422
    assert co_refused.json()["errors"] == {"co_departments": ["unknown department 'spectres'"]}
    department = create(
        platform, "departments", {"id": unique("dept"), "name_zh": "新部门", "name_en": "New"}
    )["id"]
    accepted = staff.post(
        url, json={"action": "dispatch", "department": department, "expected_version": 2}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["department"] == department


def test_a_report_near_an_open_one_of_its_category_is_a_possible_duplicate(
    platform: Platform,
) -> None:
    _, (first, second, third) = place(platform)
    code, other_code = category(platform), category(platform)
    original = report(platform, code, first).json()

    beside = report(platform, code, second).json()
    assert beside["possible_duplicates"] == [original["id"]]
    far = report(platform, code, third).json()
    assert far["possible_duplicates"] == [beside["id"]]  # not the original: two cells away
    other = report(platform, other_code, first).json()
    assert other["possible_duplicates"] == []


def test_a_report_outside_the_window_is_no_duplicate(platform: Platform) -> None:
    _, (cell, *_) = place(platform, cells=1)
    code = category(platform)
    original = report(platform, code, cell).json()
    long_ago = datetime.now(UTC) - timedelta(hours=49)
    platform.db("grid")["incidents"].update_one(
        {"_id": original["id"]}, {"$set": {"reported_at": long_ago}}
    )
    assert report(platform, code, cell).json()["possible_duplicates"] == []


def test_a_resident_never_sees_duplicate_hints(platform: Platform) -> None:
    _, (cell, *_) = place(platform, cells=1)
    code = category(platform)
    report(platform, code, cell)
    resident = requests.Session()
    token = mint_token(platform.stack.jwt_secret(), roles=["resident"], sub=unique("resident"))
    resident.headers["Authorization"] = f"Bearer {token}"
    mine = report(platform, code, cell, session=resident)
    assert mine.status_code == 201 and "possible_duplicates" not in mine.json()
    read = resident.get(f"{platform.url}/api/v1/grid/incidents/{mine.json()['id']}", timeout=10)
    assert "possible_duplicates" not in read.json()
    staff = admin(platform).get(
        f"{platform.url}/api/v1/grid/incidents/{mine.json()['id']}", timeout=10
    )
    assert len(staff.json()["possible_duplicates"]) == 1
