"""Co-handling departments (吹哨报到), extensions (延期) and escalation levels through HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from shequ.auth import mint_token
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for

pytestmark = pytest.mark.e2e

DRILL_POLICY = Path(__file__).resolve().parent.parent / "support" / "levels_policy.yaml"
COMMUNITY = "hx-liushu"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("cohandling"),
        services=["grid"],
        env={
            "SHEQU_GRID_POLICY_FILE": str(DRILL_POLICY),
            "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "0.2",
        },
    )
    stack.start()
    yield stack
    stack.stop()


def session(stack: Stack, role: str, *, department: str | None = None) -> requests.Session:
    claims: dict[str, Any] = {"sub": f"{role}-{department or 'ls'}", "communities": [COMMUNITY]}
    if department is not None:
        claims = {"sub": f"dept-{department}", "department": department}
    http = requests.Session()
    http.headers["Authorization"] = (
        f"Bearer {mint_token(stack.jwt_secret(), roles=[role], **claims)}"
    )
    return http


def staff(stack: Stack) -> requests.Session:
    return session(stack, "community_staff")


def department(stack: Stack, name: str) -> requests.Session:
    return session(stack, "department", department=name)


def report(stack: Stack) -> dict[str, Any]:
    response = session(stack, "grid_worker").post(
        f"{stack.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "ls-01", "description": "楼道积水"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def step(
    http: requests.Session, stack: Stack, incident: dict[str, Any], **body: Any
) -> requests.Response:
    body.setdefault("expected_version", incident["version"])
    return http.post(
        f"{stack.url}/api/v1/grid/incidents/{incident['id']}/transitions", json=body, timeout=10
    )


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json())


def events(stack: Stack, servers: Servers, incident_id: str) -> list[dict[str, Any]]:
    outbox = servers.mongo()[f"{stack.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}grid"]["outbox"]
    found = [doc["body"] for doc in outbox.find({"body.subject": incident_id})]
    return sorted(found, key=lambda body: body["sequence"])


def of_type(stack: Stack, servers: Servers, incident_id: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events(stack, servers, incident_id) if e["type"] == f"shequ.grid.{name}"]


def stored_clock(stack: Stack, servers: Servers, incident_id: str, name: str) -> dict[str, Any]:
    db = servers.mongo()[f"{stack.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}grid"]
    return dict(db["incidents"].find_one({"_id": incident_id})["clocks"][name])


def dispatched(stack: Stack, co_departments: list[str]) -> dict[str, Any]:
    incident = report(stack)
    incident = ok(step(staff(stack), stack, incident, action="accept"))
    return ok(
        step(
            staff(stack),
            stack,
            incident,
            action="dispatch",
            department="municipal",
            co_departments=co_departments,
        )
    )


def test_each_escalation_level_is_raised_once_with_its_target(
    grid: Stack, servers: Servers
) -> None:
    incident = report(grid)
    escalated = wait_for(
        lambda: (lambda found: found if len(found) >= 2 else None)(
            of_type(grid, servers, incident["id"], "incident.escalated")
        ),
        what="two escalation levels",
    )
    assert [(e["data"]["level"], e["data"]["target"]) for e in escalated] == [
        (1, "sub_district"),
        (2, "district"),
    ]
    assert {e["data"]["clock"] for e in escalated} == {"acknowledge"}
    types = [e["type"].removeprefix("shequ.grid.") for e in events(grid, servers, incident["id"])]
    assert types == [
        "incident.reported", "incident.warned", "incident.overdue",
        "incident.escalated", "incident.escalated",
    ]  # fmt: skip


def test_the_lead_waits_for_every_co_handler_before_reporting_handled(
    grid: Stack, servers: Servers
) -> None:
    incident = dispatched(grid, ["police", "water_supply"])
    assert [t["department"] for t in incident["subtasks"]] == ["police", "water_supply"]
    assert {t["status"] for t in incident["subtasks"]} == {"open"}
    sent = of_type(grid, servers, incident["id"], "incident.dispatched")
    assert sent[0]["data"]["co_departments"] == ["police", "water_supply"]

    police = department(grid, "police")
    seen = police.get(f"{grid.url}/api/v1/grid/incidents/{incident['id']}", timeout=10)
    assert seen.status_code == 200
    listed = police.get(f"{grid.url}/api/v1/grid/incidents", timeout=10).json()["items"]
    assert incident["id"] in [item["id"] for item in listed]
    outsider = department(grid, "education")
    assert outsider.get(f"{grid.url}/api/v1/grid/incidents/{incident['id']}").status_code == 404

    lead = department(grid, "municipal")
    assert step(police, grid, incident, action="start").status_code == 403
    incident = ok(step(lead, grid, incident, action="start"))
    early = step(lead, grid, incident, action="report_handled", feedback="已疏通")
    assert early.status_code == 409
    assert early.json()["open_subtasks"] == ["police", "water_supply"]

    incident = ok(step(police, grid, incident, action="report_subtask", feedback="已劝离"))
    assert incident["status"] == "in_progress"
    again = step(police, grid, incident, action="report_subtask", feedback="再次反馈")
    assert again.status_code == 409
    incident = ok(
        step(
            department(grid, "water_supply"),
            grid,
            incident,
            action="report_subtask",
            feedback="已修",
        )
    )
    assert {t["status"] for t in incident["subtasks"]} == {"handled"}

    incident = ok(step(lead, grid, incident, action="report_handled", feedback="已疏通"))
    assert incident["status"] == "handled"
    handled = of_type(grid, servers, incident["id"], "incident.subtask_handled")
    assert [e["data"]["co_department"] for e in handled] == ["police", "water_supply"]
    assert all("feedback" not in e["data"] for e in handled)
    history = staff(grid).get(f"{grid.url}/api/v1/grid/incidents/{incident['id']}/history")
    subtasks = [e for e in history.json()["items"] if e["action"] == "report_subtask"]
    assert [e["fields"]["co_department"] for e in subtasks] == ["police", "water_supply"]


def test_a_late_co_handler_is_alerted_on_its_own_clock(grid: Stack, servers: Servers) -> None:
    incident = dispatched(grid, ["police"])
    escalated = wait_for(
        lambda: [
            e
            for e in of_type(grid, servers, incident["id"], "incident.escalated")
            if e["data"]["clock"] == "co_handling"
        ],
        what="the co-handler's escalation",
    )
    assert len(escalated) == 1
    assert escalated[0]["data"]["department"] == "police"
    assert escalated[0]["data"]["target"] == "sub_district"
    overdue = of_type(grid, servers, incident["id"], "incident.overdue")
    assert [e["data"]["department"] for e in overdue if e["data"]["clock"] == "co_handling"] == [
        "police"
    ]


def end_of(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=SHANGHAI).astimezone(UTC)


def test_only_an_approved_extension_moves_the_resolve_deadline(
    grid: Stack, servers: Servers
) -> None:
    incident = dispatched(grid, [])
    lead = department(grid, "municipal")
    deadline = stored_clock(grid, servers, incident["id"], "resolve")["deadline"]
    target = (deadline.astimezone(SHANGHAI) + timedelta(days=10)).date()

    assert step(staff(grid), grid, incident, action="approve_extension").status_code == 409
    bad = step(lead, grid, incident, action="request_extension", reason="等待配件",
               target_date=deadline.astimezone(SHANGHAI).date().isoformat())  # fmt: skip
    assert bad.status_code == 422
    assert "target_date" in bad.json()["errors"]
    assert step(lead, grid, incident, action="request_extension", reason="等待配件",
                target_date="soon").status_code == 422  # fmt: skip

    incident = ok(step(lead, grid, incident, action="request_extension", reason="等待配件",
                       target_date=target.isoformat()))  # fmt: skip
    assert incident["extension"]["status"] == "requested"
    assert stored_clock(grid, servers, incident["id"], "resolve")["deadline"] == deadline
    assert step(lead, grid, incident, action="approve_extension").status_code == 403

    refused = ok(step(staff(grid), grid, incident, action="refuse_extension", reason="工期过长"))
    assert refused["extension"]["status"] == "refused"
    assert stored_clock(grid, servers, incident["id"], "resolve")["deadline"] == deadline

    incident = ok(step(lead, grid, refused, action="request_extension", reason="等待配件",
                       target_date=target.isoformat()))  # fmt: skip
    incident = ok(step(staff(grid), grid, incident, action="approve_extension"))
    assert incident["extension"]["status"] == "approved"
    assert incident["status"] == "dispatched"
    moved = stored_clock(grid, servers, incident["id"], "resolve")["deadline"]
    assert end_of(target) - moved < timedelta(milliseconds=1)  # BSON keeps milliseconds

    types = [
        e["type"].removeprefix("shequ.grid.incident.")
        for e in events(grid, servers, incident["id"])
        if "extension" in e["type"]
    ]
    assert types == [
        "extension_requested", "extension_refused", "extension_requested", "extension_approved",
    ]  # fmt: skip
    approved = of_type(grid, servers, incident["id"], "incident.extension_approved")[0]
    assert approved["data"]["target_date"] == target.isoformat()
    assert "reason" not in approved["data"]
