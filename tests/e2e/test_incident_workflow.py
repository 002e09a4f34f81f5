"""The incident lifecycle through the native API: steps, refusals, history and events."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from tests.conftest import Platform, wait_for
from tests.support.events import published_entries

pytestmark = pytest.mark.e2e

COMMUNITY = "hx-liushu"


def staff(platform: Platform) -> requests.Session:
    return platform.session("community_staff", sub="staff-ls", communities=(COMMUNITY,))


def department(platform: Platform, name: str = "municipal") -> requests.Session:
    session = requests.Session()
    token = mint_token(
        platform.stack.jwt_secret(), roles=["department"], sub=f"dept-{name}", department=name
    )
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def new_incident(platform: Platform) -> dict[str, Any]:
    worker = platform.session("grid_worker", sub="gw-ls", communities=(COMMUNITY,))
    response = worker.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "ls-01", "description": "井盖松动"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def step(
    session: requests.Session, platform: Platform, incident: dict[str, Any], **body: Any
) -> requests.Response:
    body.setdefault("expected_version", incident["version"])
    return session.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions", json=body, timeout=10
    )


def test_an_incident_goes_from_report_to_resolved_with_history_and_events(
    platform: Platform,
) -> None:
    incident = new_incident(platform)
    walk = [
        (staff(platform), {"action": "accept"}, "accepted"),
        (staff(platform), {"action": "dispatch", "department": "municipal"}, "dispatched"),
        (department(platform), {"action": "start"}, "in_progress"),
        (department(platform), {"action": "report_handled", "feedback": "已更换井盖"}, "handled"),
        (staff(platform), {"action": "check", "outcome": "resolved"}, "closed_resolved"),
    ]
    for session, body, expected in walk:
        response = step(session, platform, incident, **body)
        assert response.status_code == 200, response.text
        incident = response.json()
        assert incident["status"] == expected
    assert incident["version"] == 6
    assert incident["department"] == "municipal"

    history = staff(platform).get(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/history", timeout=10
    )
    assert [e["to"] for e in history.json()["items"]] == [
        "reported", "accepted", "dispatched", "in_progress", "handled", "closed_resolved",
    ]  # fmt: skip

    sent = wait_for(
        lambda: (lambda docs: docs if len(docs) == 6 else None)(
            published_entries(platform.db("grid"), {"body.subject": incident["id"]})
        ),
        what="all six events published",
    )
    types = [d["body"]["type"] for d in sorted(sent, key=lambda d: d["body"]["sequence"])]
    assert types == [
        "shequ.grid.incident.reported", "shequ.grid.incident.accepted",
        "shequ.grid.incident.dispatched", "shequ.grid.incident.started",
        "shequ.grid.incident.handled", "shequ.grid.incident.closed",
    ]  # fmt: skip
    assert [d["body"]["sequence"] for d in sent] == sorted(d["body"]["sequence"] for d in sent)


def test_an_illegal_step_is_409_and_lists_the_allowed_ones(platform: Platform) -> None:
    incident = new_incident(platform)
    response = step(staff(platform), platform, incident, action="check", outcome="resolved")
    assert response.status_code == 409
    problem = response.json()
    assert problem["allowed"] == ["accept", "reject", "merge"]
    assert problem["state"] == "reported"


def test_a_stale_version_is_409_and_changes_nothing(platform: Platform) -> None:
    incident = new_incident(platform)
    assert step(staff(platform), platform, incident, action="accept").status_code == 200
    stale = step(staff(platform), platform, incident, action="reject", reason="重复")
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    current = staff(platform).get(f"{platform.url}/api/v1/grid/incidents/{incident['id']}")
    assert current.json()["status"] == "accepted"


def test_a_step_without_its_required_field_is_422(platform: Platform) -> None:
    incident = new_incident(platform)
    response = step(staff(platform), platform, incident, action="reject")
    assert response.status_code == 422
    assert "reason" in response.json()["errors"]


def test_a_department_cannot_see_or_act_on_work_not_dispatched_to_it(platform: Platform) -> None:
    incident = new_incident(platform)
    response = step(department(platform), platform, incident, action="accept")
    assert response.status_code == 404
    step(staff(platform), platform, incident, action="accept")
    incident["version"] = 2
    step(staff(platform), platform, incident, action="dispatch", department="municipal")
    incident["version"] = 3
    other = step(department(platform, "police"), platform, incident, action="start")
    assert other.status_code == 404
    refused = step(department(platform), platform, incident, action="return_case")
    assert refused.status_code == 422  # the reason is required
    wrong_role = step(staff(platform), platform, incident, action="start")
    assert wrong_role.status_code == 403


def test_a_duplicate_is_merged_into_the_open_incident_it_repeats(platform: Platform) -> None:
    original, duplicate = new_incident(platform), new_incident(platform)
    url = f"{platform.url}/api/v1/grid/incidents"
    hinted = staff(platform).get(f"{url}/{duplicate['id']}", timeout=10).json()
    assert original["id"] in hinted["possible_duplicates"]

    refusals = {
        duplicate["id"]: "cannot be merged into itself",
        "INC-20260101-000000000000": "no incident INC-20260101-000000000000",
    }
    for target, message in refusals.items():
        refused = step(staff(platform), platform, duplicate, action="merge", duplicate_of=target)
        assert refused.status_code == 422, refused.text
        assert message in refused.json()["errors"]["duplicate_of"][0]
    resident = platform.session("resident", sub="someone")
    assert step(resident, platform, duplicate, action="merge", duplicate_of="x").status_code == 404

    merged = step(staff(platform), platform, duplicate, action="merge", duplicate_of=original["id"])
    assert merged.status_code == 200, merged.text
    assert merged.json()["status"] == "merged"
    assert merged.json()["merged_into"] == original["id"]
    assert merged.json()["clocks"]["acknowledge"]["stopped_at"] is not None
    again = step(staff(platform), platform, merged.json(), action="accept")
    assert again.status_code == 409 and again.json()["allowed"] == []

    into_merged = step(
        staff(platform), platform, new_incident(platform), action="merge",
        duplicate_of=duplicate["id"],
    )  # fmt: skip
    assert "is merged, not open" in into_merged.json()["errors"]["duplicate_of"][0]

    outbox = platform.db("grid")["outbox"]
    event = wait_for(
        lambda: outbox.find_one(
            {"body.subject": duplicate["id"], "body.type": "shequ.grid.incident.merged"}
        ),
        what="the merged event",
    )
    assert event["body"]["data"]["merged_into"] == original["id"]
