"""The audit trail on the running platform: one record per change, queried by the auditor.

The changing routes come from the grid's OpenAPI document (every operation
that is not a GET and names an action); each has a recipe here that makes it
succeed, and the test fails when a new one appears without its recipe. Only
the grid records its changes so far (docs/security.md, "Not yet").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.conftest import Platform

pytestmark = pytest.mark.e2e

AUDITED = ("grid",)
SAME = "hx-liushu"
API = "/api/v1/grid"
REPORTER = f"mx-audit-{uuid.uuid4().hex[:8]}"


def staff(platform: Platform) -> requests.Session:
    return platform.session("community_staff", sub="mx-audit-staff", communities=(SAME,))


def ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


def report(platform: Platform) -> dict[str, Any]:
    body = {"category": "facility_damaged", "grid_cell": "ls-01", "description": "路灯坏了",
            "location": {"lat": 39.9, "lon": 116.4}}  # fmt: skip
    session = platform.session("resident", sub=REPORTER)
    return ok(session.post(f"{platform.url}{API}/incidents", json=body, timeout=10), 201)


def step(
    platform: Platform, session: requests.Session, incident: dict[str, Any], **body: Any
) -> dict[str, Any]:
    url = f"{platform.url}{API}/incidents/{incident['id']}/transitions"
    return ok(session.post(url, json={**body, "expected_version": incident["version"]}, timeout=10))


def closed(platform: Platform) -> dict[str, Any]:
    department = platform.session("department", sub="mx-audit-dept", department="municipal")
    incident = step(platform, staff(platform), report(platform), action="accept")
    incident = step(platform, staff(platform), incident, action="dispatch", department="municipal")
    incident = step(platform, department, incident, action="start")
    incident = step(platform, department, incident, action="report_handled", feedback="修好了")
    return step(platform, staff(platform), incident, action="check", outcome="resolved")


def records(platform: Platform, object_id: str) -> list[dict[str, Any]]:
    auditor = platform.session("auditor", sub="mx-audit-auditor")
    page = ok(
        auditor.get(f"{platform.url}{API}/audit", params={"object_id": object_id}, timeout=10)
    )
    return list(page["items"])


# operationId: (prepare, change): prepare returns the object's id, change changes it once.
Recipe = tuple[Callable[[Platform], Any], Callable[[Platform, Any], tuple[str, str]]]


def _report(platform: Platform, _: Any) -> tuple[str, str]:
    return report(platform)["id"], REPORTER


def _transition(platform: Platform, incident: dict[str, Any]) -> tuple[str, str]:
    step(platform, staff(platform), incident, action="accept")
    return incident["id"], "mx-audit-staff"


def _rate(platform: Platform, incident: dict[str, Any]) -> tuple[str, str]:
    url = f"{platform.url}{API}/incidents/{incident['id']}/rating"
    body = {"score": 5, "expected_version": incident["version"]}
    ok(platform.session("resident", sub=REPORTER).post(url, json=body, timeout=10), 201)
    return incident["id"], REPORTER


def _department(platform: Platform) -> str:
    key = f"mx-audit-{uuid.uuid4().hex[:6]}"
    body = {"id": key, "name_zh": "审计测试科", "name_en": "Audit test"}
    admin = platform.session("admin", sub="mx-audit-admin")
    ok(admin.post(f"{platform.url}{API}/registry/departments", json=body, timeout=10), 201)
    return key


def _create_entry(platform: Platform, _: Any) -> tuple[str, str]:
    return _department(platform), "mx-audit-admin"


def _change_entry(platform: Platform, key: str) -> tuple[str, str]:
    admin = platform.session("admin", sub="mx-audit-admin")
    url = f"{platform.url}{API}/registry/departments/{key}"
    ok(admin.patch(url, json={"name_en": "Audit test, renamed"}, timeout=10))
    return key, "mx-audit-admin"


RECIPES: dict[str, Recipe] = {
    "report_incident": (lambda platform: None, _report),
    "transition": (report, _transition),
    "rate_incident": (closed, _rate),
    "create_registry_entry": (lambda platform: None, _create_entry),
    "change_registry_entry": (_department, _change_entry),
}


def changing_operations(platform: Platform, service: str) -> dict[str, str]:
    """operationId: action, for every operation of ``service`` that changes something."""
    spec = ok(requests.get(f"{platform.url}/api/v1/{service}/openapi.json", timeout=10))
    return {
        operation["operationId"]: operation["x-shequ-action"]
        for items in spec["paths"].values()
        for method, operation in items.items()
        if method != "get" and "x-shequ-action" in operation
    }


def test_every_changing_route_of_an_audited_service_has_a_recipe(platform: Platform) -> None:
    assert set(changing_operations(platform, "grid")) == set(RECIPES)


@pytest.mark.parametrize("operation", sorted(RECIPES))
def test_each_changing_route_writes_exactly_one_record(platform: Platform, operation: str) -> None:
    action = changing_operations(platform, "grid")[operation]
    prepare, change = RECIPES[operation]
    prepared = prepare(platform)
    existing = prepared["id"] if isinstance(prepared, dict) else prepared
    before = records(platform, existing) if existing else []
    object_id, actor = change(platform, prepared)
    after = records(platform, object_id)
    new = [record for record in after if record["seq"] not in {r["seq"] for r in before}]
    assert len(new) == 1, new
    (record,) = new
    assert record["action"] == action
    assert record["actor"]["sub"] == actor
    assert record["object"]["id"] == object_id
    assert record["after"] and len(record["after"]) == 64
    assert (record["before"] is None) == operation.startswith(("report", "create"))


def test_the_trail_is_for_auditors_and_admins_and_holds_no_personal_data(
    platform: Platform,
) -> None:
    incident = report(platform)
    for role in ("resident", "community_staff", "grid_worker"):
        response = platform.session(role, sub=REPORTER, communities=(SAME,)).get(
            f"{platform.url}{API}/audit", timeout=10
        )
        assert response.status_code == 403, role
    found = records(platform, incident["id"])
    assert found and "路灯" not in str(found) and "39.9" not in str(found)
