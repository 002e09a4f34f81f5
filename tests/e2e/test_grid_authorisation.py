"""The grid's authorisation matrix: who sees which incident, how, and who may step it.

The expected views are written out here as the table in services/grid/README.md
(not computed from ``domain.READ_RULES``), so a change to the rules that the
table does not share fails this test.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shequ.auth import ROLES, mint_token
from shequ_services.grid import workflow
from shequ_services.grid.access import TABLE as ACCESS
from tests.conftest import Platform

pytestmark = pytest.mark.e2e

API = "/api/v1/grid/incidents"
SAME, OTHER = "hx-liushu", "hx-qingyuan"
OTHER_DEPARTMENT = "mx-nobody"
READ_SCOPES = ACCESS.action("grid.incident.read").client_scopes
REPORTER = f"mx-reporter-{uuid.uuid4().hex[:8]}"

RELATIONS = (
    "own",
    "same_community",
    "other_community",
    "dispatched_department",
    "other_department",
)
KINDS = ("ordinary", "sensitive", "sensitive_with_purpose")
VIEW = {"F": "full", "R": "redacted", "-": "hidden"}
# role: views by relation (in RELATIONS order) of an ordinary incident, a sensitive
# one, and a sensitive one read with `purpose: casework`.
TABLE = {
    "resident":        ("F - - - -", "F - - - -", "F - - - -"),
    "grid_worker":     ("F F - - -", "F - - - -", "F F - - -"),
    "community_staff": ("F F - - -", "F - - - -", "F F - - -"),
    "department":      ("F - - F -", "F - - - -", "F - - F -"),
    "mediator":        ("F - - - -", "F - - - -", "F - - - -"),
    "volunteer":       ("F - - - -", "F - - - -", "F - - - -"),
    "bureau":          ("F - - - -", "F - - - -", "F - - - -"),
    "auditor":         ("F F F F F", "F R R R R", "F R R R R"),
    "admin":           ("F F F F F", "F R R R R", "F F F F F"),
}  # fmt: skip


def expected(role: str, relation: str, kind: str) -> str:
    return VIEW[TABLE[role][KINDS.index(kind)].split()[RELATIONS.index(relation)]]


def session_for(platform: Platform, roles: list[str], **claims: Any) -> requests.Session:
    session = requests.Session()
    token = mint_token(platform.stack.jwt_secret(), roles=roles, **claims)
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def caller(
    platform: Platform, role: str, relation: str, incident: dict[str, Any], purpose: str | None
) -> requests.Session:
    """A caller whose only tie to ``incident`` is ``relation``."""
    claims: dict[str, Any] = {
        "sub": REPORTER if relation == "own" else f"mx-{role}",
        "communities": [SAME if relation == "same_community" else OTHER],
        "department": incident["department"]
        if relation == "dispatched_department"
        else OTHER_DEPARTMENT,
        "purpose": purpose,
        # A machine client holds the scope its rules need (the matrix tests one without).
        "scopes": READ_SCOPES if role == "bureau" else (),
    }
    return session_for(platform, [role], **claims)


def report(platform: Platform, category: str) -> dict[str, Any]:
    response = session_for(platform, ["resident"], sub=REPORTER).post(
        f"{platform.url}{API}",
        json={"category": category, "grid_cell": "ls-01", "description": "私人情况说明",
              "location": {"lat": 39.9, "lon": 116.4}},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def dispatch(platform: Platform, incident: dict[str, Any], department: str) -> dict[str, Any]:
    staff = session_for(
        platform, ["community_staff"], sub="mx-staff", communities=[SAME], purpose="casework"
    )
    for body in ({"action": "accept"}, {"action": "dispatch", "department": department}):
        response = staff.post(
            f"{platform.url}{API}/{incident['id']}/transitions",
            json={**body, "expected_version": incident["version"]},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        incident = response.json()
    return incident


@pytest.fixture(scope="module")
def world(platform: Platform) -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    return {
        "since": since,
        "ordinary": dispatch(platform, report(platform, "facility_damaged"), "municipal"),
        "sensitive": dispatch(platform, report(platform, "new_pregnancy"), "health"),
        "reported": report(platform, "facility_damaged"),
    }


def listed(
    platform: Platform, session: requests.Session, incident: dict[str, Any], since: str
) -> dict[str, Any] | None:
    """``incident`` as the caller's listing shows it, walking every page; None if absent."""
    params: dict[str, Any] = {
        "category": incident["category"], "grid_cell": "ls-01", "reported_from": since,
        "limit": 200,
    }  # fmt: skip
    while True:
        response = session.get(f"{platform.url}{API}", params=params, timeout=10)
        assert response.status_code == 200, response.text
        page = response.json()
        for item in page["items"]:
            if item["id"] == incident["id"]:
                return dict(item)
        if page["next_cursor"] is None:
            return None
        params["cursor"] = page["next_cursor"]


def assert_view(body: dict[str, Any], view: str) -> None:
    if view == "full":
        assert body["description"] == "私人情况说明"
        assert body["location"] == {"lat": 39.9, "lon": 116.4}
    else:
        assert "description" not in body and "location" not in body


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("role", sorted(ROLES))
def test_reads_follow_the_authorisation_table(
    platform: Platform, world: dict[str, Any], role: str, relation: str, kind: str
) -> None:
    incident = world["ordinary" if kind == "ordinary" else "sensitive"]
    purpose = "casework" if kind == "sensitive_with_purpose" else None
    session = caller(platform, role, relation, incident, purpose)
    view = expected(role, relation, kind)
    url = f"{platform.url}{API}/{incident['id']}"

    got = session.get(url, timeout=10)
    history = session.get(f"{url}/history", timeout=10)
    in_list = listed(platform, session, incident, world["since"])

    if view == "hidden":
        assert got.status_code == 404, got.text
        assert history.status_code == 404, history.text
        assert in_list is None
        return
    assert got.status_code == 200, got.text
    assert_view(got.json(), view)
    assert in_list is not None
    assert_view(in_list, view)
    assert history.status_code == 200, history.text
    entries = history.json()["items"]
    assert [e["to"] for e in entries] == ["reported", "accepted", "dispatched"]
    if view == "full":
        assert entries[0]["actor"] == REPORTER
    else:
        assert all("actor" not in e and "fields" not in e for e in entries)


# role: (incident, the caller's relation to it) where the role can read the incident
# but one action possible from its state is not the role's.
REFUSALS = {
    "resident": ("reported", "own"),
    "grid_worker": ("reported", "same_community"),
    "community_staff": ("ordinary", "same_community"),
    "department": ("ordinary", "dispatched_department"),
    "mediator": ("reported", "own"),
    "volunteer": ("reported", "own"),
    "bureau": ("reported", "own"),
    "auditor": ("reported", "other_community"),
    "admin": ("ordinary", "other_community"),
}
EVERY_FIELD = {
    "reason": "试试", "department": "municipal", "feedback": "好了", "outcome": "resolved",
    "target_date": "2030-12-31",
}  # fmt: skip


def test_the_refusal_table_covers_every_role() -> None:
    assert set(REFUSALS) == ROLES


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_step_the_role_may_not_take_is_403_and_changes_nothing(
    platform: Platform, world: dict[str, Any], role: str
) -> None:
    which, relation = REFUSALS[role]
    incident = world[which]
    state = incident["status"]
    action = next(
        name
        for name, rule in workflow.RULES.items()
        if state in rule.from_states and role not in rule.roles
    )
    session = caller(platform, role, relation, incident, None)
    url = f"{platform.url}{API}/{incident['id']}"
    response = session.post(
        f"{url}/transitions",
        json={"action": action, "expected_version": incident["version"], **EVERY_FIELD},
        timeout=10,
    )
    assert response.status_code == 403, f"{role} {action}: {response.text}"
    assert response.headers["Content-Type"].startswith("application/problem+json")
    after = session.get(url, timeout=10).json()
    assert (after["status"], after["version"]) == (state, incident["version"])
