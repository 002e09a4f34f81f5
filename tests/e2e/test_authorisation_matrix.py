"""The authorisation matrix, generated: every route x every role (and anonymous), and
another community's objects, against the running platform.

The routes come from each running service's OpenAPI document, each naming its
action (``x-shequ-action``); what each role may do comes from the services'
``access.yaml`` tables. So a new route or a new rule is covered the day it is
added, and a route whose runtime check disagrees with its table fails here.

Expected outcomes are read off the table directly (a role may call a route
when it has a rule for the route's action that needs no purpose), not through
``shequ.policy``'s own functions. The ``bureau`` caller of the role matrix
holds every client scope the tables name; a second matrix gives a bureau
client every scope but the one an action needs (refused, naming it) and then
only that one (admitted).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from shequ import policy
from shequ.auth import ROLES
from shequ.discovery import discover_services
from tests.conftest import Platform

pytestmark = pytest.mark.e2e

SERVICES = sorted(discover_services())
TABLES = {service: table for service, table, _ in policy.service_tables()}
CALLERS = [*sorted(ROLES), None]
SAME, OTHER = "hx-liushu", "hx-qingyuan"
CELL = "ls-01"
DEPARTMENT = "municipal"
MACHINE = "bureau"
#: Every OAuth scope some action asks of a machine client, read off the tables.
CLIENT_SCOPES = sorted(
    {
        scope
        for table in TABLES.values()
        for a in table.actions.values()
        for scope in a.client_scopes
    }
)


def allowed_roles(action: str) -> set[str]:
    table = TABLES[action.split(".", 1)[0]]
    return {rule.role for rule in table.actions[action].rules if rule.purpose is None}


def document(platform: Platform, service: str) -> dict[str, Any]:
    response = requests.get(f"{platform.url}/api/v1/{service}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def fill(path: str, operation: dict[str, Any], sub: str) -> str:
    """Path parameters filled in: an enum's first value, else the caller's own subject.

    The subject makes "own" objects addressed by the caller's id (a recipient's
    contact points) the caller's own; every other id names nothing (404).
    """
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        schema = parameter["schema"]
        if "enum" in schema:
            value = str(schema["enum"][0])
        elif schema.get("type") == "integer":
            value = "1"
        else:
            value = sub
        path = path.replace("{" + parameter["name"] + "}", value)
    return path


def session_for(
    platform: Platform,
    role: str | None,
    community: str = SAME,
    scopes: list[str] | tuple[str, ...] | None = None,
) -> requests.Session:
    """A caller of ``role``; a machine client holds ``scopes``, by default every client scope."""
    if role is None:
        return requests.Session()
    if scopes is None:
        scopes = CLIENT_SCOPES if role == MACHINE else ()
    return platform.session(
        role,
        sub=f"mx-matrix-{role}",
        communities=(community,),
        department=DEPARTMENT,
        cells=(CELL,),
        scopes=scopes,
    )


@pytest.mark.parametrize("caller", CALLERS, ids=[c or "anonymous" for c in CALLERS])
@pytest.mark.parametrize("service", SERVICES)
def test_every_route_admits_exactly_the_roles_its_table_names(
    platform: Platform, service: str, caller: str | None
) -> None:
    session = session_for(platform, caller)
    sub = f"mx-matrix-{caller}"
    wrong, checked = [], 0
    for path, items in document(platform, service)["paths"].items():
        for method, operation in items.items():
            action = operation.get("x-shequ-action")
            if action is None:
                assert operation.get("security") == [], f"{method} {path}: no action, not public"
                continue
            checked += 1
            body = {"json": {}} if "requestBody" in operation else {}
            response = session.request(
                method.upper(), f"{platform.url}{fill(path, operation, sub)}", timeout=10, **body
            )
            status = response.status_code
            where = f"{method.upper()} {path} ({action}): {status}"
            if caller is None:
                if status != 401:
                    wrong.append(f"{where}, expected 401")
            elif caller in allowed_roles(action):
                if status in (401, 403):
                    wrong.append(f"{where}, expected admitted: {response.text[:200]}")
            elif status != 403 or response.json().get("action") != action:
                wrong.append(f"{where}, expected 403 naming the action: {response.text[:200]}")
    assert checked > 0
    assert wrong == []


def machine_operations(platform: Platform, service: str) -> list[tuple[str, str, str, Any]]:
    """(method, path, action, operation) of every operation whose action has a bureau rule."""
    found = []
    for path, items in document(platform, service)["paths"].items():
        for method, operation in items.items():
            action = operation.get("x-shequ-action")
            if action is not None and MACHINE in allowed_roles(action):
                found.append((method, path, action, operation))
    return found


def client_scopes_of(action: str) -> tuple[str, ...]:
    return TABLES[action.split(".", 1)[0]].actions[action].client_scopes


def test_every_bureau_rule_names_a_client_scope() -> None:
    for table in TABLES.values():
        for action in table.actions.values():
            if MACHINE in action.roles():
                assert action.client_scopes, action.name


@pytest.mark.parametrize("service", SERVICES)
def test_a_bureau_client_is_admitted_only_with_the_scope_of_each_action(
    platform: Platform, service: str
) -> None:
    sub = f"mx-matrix-{MACHINE}"
    wrong = []
    operations = machine_operations(platform, service)
    if any(MACHINE in action.roles() for action in TABLES[service].actions.values()):
        assert operations, f"{service}: bureau rules but no route to try them on"
    for method, path, action, operation in operations:
        needed = client_scopes_of(action)
        url = f"{platform.url}{fill(path, operation, sub)}"
        body = {"json": {}} if "requestBody" in operation else {}
        others = [scope for scope in CLIENT_SCOPES if scope not in needed]
        without = session_for(platform, MACHINE, scopes=others).request(
            method.upper(), url, timeout=10, **body
        )
        where = f"{method.upper()} {path} ({action})"
        problem = without.json() if without.status_code == 403 else {}
        if problem.get("action") != action or problem.get("missing_scopes") != list(needed):
            wrong.append(f"{where} without {needed}: {without.status_code} {without.text[:200]}")
        for scope in needed:
            with_it = session_for(platform, MACHINE, scopes=[scope]).request(
                method.upper(), url, timeout=10, **body
            )
            if with_it.status_code in (401, 403):
                wrong.append(f"{where} with {scope}: {with_it.status_code} {with_it.text[:200]}")
    assert wrong == []


def test_every_documented_action_is_in_its_services_table(platform: Platform) -> None:
    for service in SERVICES:
        for items in document(platform, service)["paths"].values():
            for operation in items.values():
                action = operation.get("x-shequ-action")
                if action is not None:
                    assert action in TABLES[service].actions, action


# -- another community's objects ----------------------------------------------------------
#
# Each action some role reaches at community scope has a probe: something of
# community SAME, and the call that applies the action to it. A caller of that
# role in community OTHER must be refused (403, or 404 where the object is not
# even shown, or left out of a listing); the same caller in SAME must not be.


@dataclass(frozen=True)
class Outcome:
    refused: bool
    detail: str


Probe = Callable[[Platform, requests.Session], Outcome]


def _status(response: requests.Response) -> Outcome:
    refused = response.status_code in (403, 404)
    return Outcome(refused, f"{response.status_code} {response.text[:200]}")


def _listed(response: requests.Response, key: str, value: str) -> Outcome:
    assert response.status_code == 200, response.text
    present = any(item.get(key) == value for item in response.json()["items"])
    return Outcome(not present, f"listed={present}")


def _admin(platform: Platform) -> requests.Session:
    return platform.session("admin", sub="mx-matrix-root")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _post(path: str, body: Callable[[], dict[str, Any]]) -> Probe:
    def probe(platform: Platform, session: requests.Session) -> Outcome:
        return _status(session.post(f"{platform.url}{path}", json=body(), timeout=10))

    return probe


def _volunteer_body() -> dict[str, Any]:
    return {
        "id": _unique("mx-vol"), "community": SAME, "name": "王小明", "phone": "13912345678",
        "home_cell": CELL, "skills": [{"code": "visiting", "confirmed_by": "居委会"}],
        "consent_to_contact": True,
    }  # fmt: skip


def _household_body() -> dict[str, Any]:
    return {"id": _unique("mx-hh"), "community": SAME, "grid_cell": CELL, "care_lists": []}


def _team_body() -> dict[str, Any]:
    return {
        "id": _unique("mx-team"),
        "community": SAME,
        "name": "矩阵测试队",
        "leaders": ["mx-lead"],
    }


def _case_body() -> dict[str, Any]:
    party = {"role": "applicant", "name": "张建国", "phone": "13812341234",
             "address": "柳树苑2幢3单元501", "building": "ls-01-b02"}  # fmt: skip
    return {"community": SAME, "dispute_type": "neighbour_dispute", "facts": "楼上漏水",
            "parties": [party]}  # fmt: skip


def _made(platform: Platform, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = _admin(platform).post(f"{platform.url}{path}", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _case_work(platform: Platform, session: requests.Session) -> Outcome:
    case = _made(platform, "/api/v1/mediation/cases", _case_body())
    party = {"role": "respondent", "name": "李秀梅", "phone": "13998765432"}
    response = session.post(
        f"{platform.url}/api/v1/mediation/cases/{case['id']}/parties",
        json={"parties": [party], "facts": "补充", "expected_version": case["version"]},
        timeout=10,
    )
    return _status(response)


def _household_patch(platform: Platform, session: requests.Session) -> Outcome:
    household = _made(platform, "/api/v1/volunteer/households", _household_body())
    response = session.patch(
        f"{platform.url}/api/v1/volunteer/households/{household['id']}",
        json={"care_lists": ["needy"]},
        timeout=10,
    )
    return _status(response)


def _volunteer_patch(platform: Platform, session: requests.Session) -> Outcome:
    volunteer = _made(platform, "/api/v1/volunteer/volunteers", _volunteer_body())
    response = session.patch(
        f"{platform.url}/api/v1/volunteer/volunteers/{volunteer['id']}",
        json={"consent_to_contact": False},
        timeout=10,
    )
    return _status(response)


def _volunteer_get(platform: Platform, session: requests.Session) -> Outcome:
    volunteer = _made(platform, "/api/v1/volunteer/volunteers", _volunteer_body())
    return _status(
        session.get(f"{platform.url}/api/v1/volunteer/volunteers/{volunteer['id']}", timeout=10)
    )


def _volunteer_in_clear(platform: Platform, session: requests.Session) -> Outcome:
    """Refused: not found, or found with name and phone masked."""
    volunteer = _made(platform, "/api/v1/volunteer/volunteers", _volunteer_body())
    response = session.get(
        f"{platform.url}/api/v1/volunteer/volunteers/{volunteer['id']}", timeout=10
    )
    if response.status_code != 200:
        return _status(response)
    return Outcome(bool(response.json()["masked"]), f"masked={response.json()['masked']}")


def _task(platform: Platform) -> dict[str, Any]:
    body = {"kind": "home_visit", "community": SAME, "grid_cell": CELL}
    return _made(platform, "/api/v1/volunteer/tasks", body)


def _task_get(platform: Platform, session: requests.Session) -> Outcome:
    task = _task(platform)
    return _status(session.get(f"{platform.url}/api/v1/volunteer/tasks/{task['id']}", timeout=10))


def _task_assign(platform: Platform, session: requests.Session) -> Outcome:
    task = _task(platform)
    volunteer = _made(platform, "/api/v1/volunteer/volunteers", _volunteer_body())
    response = session.post(
        f"{platform.url}/api/v1/volunteer/tasks/{task['id']}/assign",
        json={"volunteer_id": volunteer["id"]},
        timeout=10,
    )
    return _status(response)


def _teams(platform: Platform, session: requests.Session) -> Outcome:
    team = _made(platform, "/api/v1/volunteer/teams", _team_body())
    return _listed(
        session.get(f"{platform.url}/api/v1/volunteer/teams", timeout=10), "id", team["id"]
    )


def _households(platform: Platform, session: requests.Session) -> Outcome:
    household = _made(platform, "/api/v1/volunteer/households", _household_body())
    response = session.get(f"{platform.url}/api/v1/volunteer/households", timeout=10)
    return _listed(response, "id", household["id"])


def _incident(platform: Platform) -> dict[str, Any]:
    body = {"category": "facility_damaged", "grid_cell": CELL, "description": "路灯坏了",
            "location": {"lat": 39.9, "lon": 116.4}}  # fmt: skip
    return _made(platform, "/api/v1/grid/incidents", body)


def _transition(platform: Platform, session: requests.Session) -> Outcome:
    incident = _incident(platform)
    response = session.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions",
        json={"action": "accept", "expected_version": incident["version"]},
        timeout=10,
    )
    return _status(response)


def _grid_rates(platform: Platform, session: requests.Session) -> Outcome:
    return _status(
        session.get(f"{platform.url}/api/v1/grid/rates", params={"community": SAME}, timeout=10)
    )


def _registry(platform: Platform, session: requests.Session) -> Outcome:
    return _status(
        session.get(f"{platform.url}/api/v1/grid/registry/communities/{SAME}", timeout=10)
    )


def _incident_get(platform: Platform, session: requests.Session) -> Outcome:
    incident = _incident(platform)
    return _status(
        session.get(f"{platform.url}/api/v1/grid/incidents/{incident['id']}", timeout=10)
    )


PROBES: dict[str, Probe] = {
    "disclosure.entry.publish": _post(
        "/api/v1/disclosure/entries",
        lambda: {
            "kind": "notice",
            "cadence": "ad_hoc",
            "community": SAME,
            "period": "2026-11",
            "title": "矩阵测试通知",
        },  # fmt: skip
    ),
    "disclosure.figures.publish": _post(
        "/api/v1/disclosure/figures", lambda: {"community": SAME, "month": "2026-10"}
    ),
    "grid.incident.read": _incident_get,
    "grid.incident.transition": _transition,
    "grid.rates.read": _grid_rates,
    "grid.registry.read": _registry,
    "mediation.case.open": _post("/api/v1/mediation/cases", _case_body),
    "mediation.case.work": _case_work,
    "volunteer.task.create": _post(
        "/api/v1/volunteer/tasks",
        lambda: {"kind": "home_visit", "community": SAME, "grid_cell": CELL},
    ),
    "volunteer.task.read": _task_get,
    "volunteer.task.assign": _task_assign,
    "volunteer.volunteer.register": _post("/api/v1/volunteer/volunteers", _volunteer_body),
    "volunteer.volunteer.read": _volunteer_get,
    "volunteer.volunteer.read_personal": _volunteer_in_clear,
    "volunteer.volunteer.change": _volunteer_patch,
    "volunteer.team.create": _post("/api/v1/volunteer/teams", _team_body),
    "volunteer.team.read": _teams,
    "volunteer.household.change": _household_patch,
    "volunteer.household.read": _households,
}
#: Community-scoped actions this file does not probe, and where they are tested instead.
NOT_PROBED = {
    "grid.sla.read": "the SLA board's pages check it themselves: tests/e2e/test_sla_board.py",
    # These need a worked task's ledger entry; test_volunteer.py's
    # test_corrections_are_new_entries_and_totals_csv_and_certificate_follow_them
    # has another community's staff try each.
    "volunteer.hours.read": "needs a worked task's ledger entry: tests/e2e/test_volunteer.py",
    "volunteer.hours.approve": "needs a worked task's ledger entry: tests/e2e/test_volunteer.py",
    "volunteer.hours.export": "needs a worked task's ledger entry: tests/e2e/test_volunteer.py",
}


def community_rules() -> list[tuple[str, str]]:
    """(action, role) for every rule that reaches objects by community, without a purpose."""
    return sorted(
        {
            (action.name, rule.role)
            for table in TABLES.values()
            for action in table.actions.values()
            for rule in action.rules
            if rule.scope == "community" and rule.purpose is None
        }
    )


def test_every_community_scoped_action_has_a_probe_or_a_reason() -> None:
    actions = {action for action, _ in community_rules()}
    assert actions == set(PROBES) | set(NOT_PROBED)
    assert not set(PROBES) & set(NOT_PROBED)


PROBED = [(a, r) for a, r in community_rules() if a in PROBES]


@pytest.mark.parametrize(("action", "role"), PROBED, ids=[f"{a}-{r}" for a, r in PROBED])
def test_another_communitys_object_is_refused_and_the_callers_own_is_not(
    platform: Platform, action: str, role: str
) -> None:
    probe = PROBES[action]
    stranger = probe(platform, session_for(platform, role, OTHER))
    assert stranger.refused, f"{role} of {OTHER}: {stranger.detail}"
    member = probe(platform, session_for(platform, role, SAME))
    assert not member.refused, f"{role} of {SAME}: {member.detail}"
