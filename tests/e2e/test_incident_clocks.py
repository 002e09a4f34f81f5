"""Clocks run out, alerts go out once each, and a restart neither loses nor doubles them."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shequ.auth import mint_token
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for

pytestmark = pytest.mark.e2e

FAST_POLICY = Path(__file__).resolve().parent.parent / "support" / "fast_policy.yaml"
ALERTS = [
    "shequ.grid.incident.warned",
    "shequ.grid.incident.overdue",
    "shequ.grid.incident.escalated",
]


@pytest.fixture(scope="module")
def grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("clocks"),
        services=["grid"],
        env={
            "SHEQU_GRID_POLICY_FILE": str(FAST_POLICY),
            "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "0.2",
            # The reopen window is a configured limit too: none at all here.
            "SHEQU_GRID_REOPEN_WINDOW_DAYS": "0",
        },
    )
    stack.start()
    yield stack
    stack.stop()


def report(stack: Stack) -> str:
    token = mint_token(stack.jwt_secret(), roles=["grid_worker"], sub="gw-c", communities=[])
    response = requests.post(
        f"{stack.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "qy-01", "description": "路灯"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def events(stack: Stack, servers: Servers, incident_id: str) -> list[dict[str, Any]]:
    outbox = servers.mongo()[f"{stack.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}grid"]["outbox"]
    found = [doc["body"] for doc in outbox.find({"body.subject": incident_id})]
    return sorted(found, key=lambda body: body["sequence"])


def alerts_raised(stack: Stack, servers: Servers, incident_id: str) -> list[dict[str, Any]] | None:
    found = [e for e in events(stack, servers, incident_id) if e["type"] in ALERTS]
    return found if len(found) >= 3 else None


def test_an_unacknowledged_report_is_warned_then_overdue_then_escalated_once_each(
    grid: Stack, servers: Servers
) -> None:
    incident_id = report(grid)
    alerts = wait_for(lambda: alerts_raised(grid, servers, incident_id), what="three alerts")
    assert [a["type"] for a in alerts] == ALERTS
    assert {a["data"]["clock"] for a in alerts} == {"acknowledge"}
    assert [e["sequence"] for e in events(grid, servers, incident_id)] == [1, 2, 3, 4]

    text = requests.get(f"{grid.processes['grid'].url}/metrics", timeout=10).text
    breaches = {
        (s.labels["clock"], s.labels["category"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "shequ_sla_breaches"
        for s in family.samples
        if s.name == "shequ_sla_breaches_total"
    }
    assert breaches[("acknowledge", "facility_damaged")] >= 1


def test_alerts_due_while_the_grid_is_down_are_raised_once_after_restart(
    grid: Stack, servers: Servers
) -> None:
    incident_id = report(grid)
    process = grid.processes["grid"].process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert grid.supervise_once() == ["grid"]
    wait_for(lambda: alerts_raised(grid, servers, incident_id), what="alerts after restart")
    types = [e["type"] for e in events(grid, servers, incident_id)]
    assert types == ["shequ.grid.incident.reported", *ALERTS]


def test_the_reopen_window_is_configured_and_a_reopen_after_it_is_refused(grid: Stack) -> None:
    secret = grid.jwt_secret()

    def session(*roles: str, **claims: Any) -> requests.Session:
        caller = requests.Session()
        token = mint_token(secret, roles=roles, sub=claims.pop("sub", "staff-c"), **claims)
        caller.headers["Authorization"] = f"Bearer {token}"
        return caller

    resident = session("resident", sub="resident-c")
    staff = session("community_staff", communities=["hx-qingyuan"])
    municipal = session("department", sub="dept-m", department="municipal")
    created = resident.post(
        f"{grid.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "qy-01", "description": "路灯"},
        timeout=10,
    ).json()
    url = f"{grid.url}/api/v1/grid/incidents/{created['id']}/transitions"
    version = created["version"]
    for caller, body in [
        (staff, {"action": "accept"}),
        (staff, {"action": "dispatch", "department": "municipal"}),
        (municipal, {"action": "start"}),
        (municipal, {"action": "report_handled", "feedback": "已修好"}),
        (staff, {"action": "check", "outcome": "resolved"}),
    ]:
        response = caller.post(url, json={**body, "expected_version": version}, timeout=10)
        assert response.status_code == 200, response.text
        version = response.json()["version"]
    refused = resident.post(
        url, json={"action": "reopen", "reason": "又坏了", "expected_version": version}, timeout=10
    )
    assert refused.status_code == 403
    assert "reopening is possible for 0:00:00 after closing" in refused.json()["detail"]
