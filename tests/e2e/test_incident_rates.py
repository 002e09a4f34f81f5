"""Ratings and the three public rates through the native API, on a grid of their own.

The grid runs alone on its own databases (the session's servers, a fresh
prefix), so the counts below are exactly the incidents this module makes;
the queries still filter on one community, as a reader of a shared grid would.

Five incidents in hx-qingyuan, all reported and answered now (so every
acknowledge clock stopped in time), by resident ``r-rates``:

  A facility_damaged  resolved, rated 5; reopened, resolved again, rated 4
  B facility_damaged  closed unresolved, rated 2
  C alley_unclean     resolved, not rated
  D facility_damaged  rejected
  E facility_damaged  reported only (acknowledge clock running, within its limit)

Expected: response 4/4 (E pending), resolution 2/3 (A, C of A, B, C),
satisfaction 1/2 (A's latest 4, B's 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
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
COMMUNITY = "hx-qingyuan"
RESIDENT = "r-rates"


@pytest.fixture(scope="module")
def grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(servers, tmp_path_factory.mktemp("rates"), services=["grid"])
    stack.start()
    yield stack
    stack.stop()


def session(stack: Stack, *roles: str, sub: str, **claims: Any) -> requests.Session:
    http = requests.Session()
    token = mint_token(stack.jwt_secret(), roles=roles, sub=sub, **claims)
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def resident(stack: Stack) -> requests.Session:
    return session(stack, "resident", sub=RESIDENT)


def staff(stack: Stack) -> requests.Session:
    return session(stack, "community_staff", sub="staff-qy", communities=[COMMUNITY])


def department(stack: Stack) -> requests.Session:
    return session(stack, "department", sub="dept-municipal", department="municipal")


def report(stack: Stack, category: str = "facility_damaged") -> dict[str, Any]:
    response = resident(stack).post(
        f"{stack.url}/api/v1/grid/incidents",
        json={"category": category, "grid_cell": "qy-01", "description": "楼道灯不亮"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def step(stack: Stack, who: requests.Session, incident: dict[str, Any], **body: Any) -> dict:
    response = who.post(
        f"{stack.url}/api/v1/grid/incidents/{incident['id']}/transitions",
        json={"expected_version": incident["version"], **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def close(stack: Stack, incident: dict[str, Any], outcome: str) -> dict[str, Any]:
    """Accept (or re-dispatch a reopened case), dispatch, start, handle and check."""
    if incident["status"] == "reported":
        incident = step(stack, staff(stack), incident, action="accept")
    incident = step(stack, staff(stack), incident, action="dispatch", department="municipal")
    incident = step(stack, department(stack), incident, action="start")
    incident = step(stack, department(stack), incident, action="report_handled", feedback="已修")
    return step(stack, staff(stack), incident, action="check", outcome=outcome)


def rate(
    stack: Stack, incident: dict[str, Any], who: requests.Session | None = None, **body: Any
) -> requests.Response:
    body.setdefault("expected_version", incident["version"])
    return (who or resident(stack)).post(
        f"{stack.url}/api/v1/grid/incidents/{incident['id']}/rating", json=body, timeout=10
    )


def read_rates(stack: Stack, who: requests.Session | None = None, **query: str) -> Any:
    return (who or staff(stack)).get(f"{stack.url}/api/v1/grid/rates", params=query, timeout=10)


def ratio(numerator: int, denominator: int) -> dict[str, Any]:
    value = numerator / denominator if denominator else None
    return {"numerator": numerator, "denominator": denominator, "value": value}


@pytest.fixture(scope="module")
def incidents(grid: Stack) -> dict[str, dict[str, Any]]:
    """The five incidents of the module docstring, walked and rated."""
    a = close(grid, report(grid), "resolved")
    rated = rate(grid, a, score=5, comment="很及时")
    assert rated.status_code == 201, rated.text
    a = step(grid, resident(grid), rated.json(), action="reopen", reason="又坏了")
    a = close(grid, a, "resolved")
    rated = rate(grid, a, score=4)
    assert rated.status_code == 201, rated.text
    a = rated.json()
    b = close(grid, report(grid), "unresolved")
    rated = rate(grid, b, score=2)
    assert rated.status_code == 201, rated.text
    b = rated.json()
    c = close(grid, report(grid, "alley_unclean"), "resolved")
    d = step(grid, staff(grid), report(grid), action="reject", reason="重复上报")
    e = report(grid)
    return {"A": a, "B": b, "C": c, "D": d, "E": e}


def test_the_rates_of_a_community_match_the_hand_count(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    response = read_rates(grid, community=COMMUNITY)
    assert response.status_code == 200, response.text
    body = response.json()
    (group,) = body["groups"]
    assert group["incidents"] == 5
    assert group["response_rate"] == ratio(4, 4)
    assert group["resolution_rate"] == ratio(2, 3)
    assert group["satisfaction_rate"] == ratio(1, 2)
    assert body["filters"]["community"] == COMMUNITY
    assert body["period"]["timezone"] == "Asia/Shanghai"
    assert set(body["definitions"]) >= {"response_rate", "resolution_rate", "satisfaction_rate"}


def test_each_clock_reports_how_many_stopped_with_a_median_and_p90(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    (group,) = read_rates(grid, community=COMMUNITY).json()["groups"]
    stages = group["stage_seconds"]
    # acknowledge: A, B, C, D; the others: A's latest run, B and C.
    assert {name: s["count"] for name, s in stages.items()} == {
        "acknowledge": 4, "dispatch": 3, "sign_for": 3, "resolve": 3, "feedback": 3,
    }  # fmt: skip
    for spread in stages.values():
        assert spread["median"] is not None and spread["p90"] >= spread["median"] >= 0


def test_grouped_by_category_the_undispatched_rejection_and_report_stay_with_theirs(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    groups = read_rates(grid, community=COMMUNITY, group_by="category").json()["groups"]
    by_key = {g["key"]["category"]: g for g in groups}
    assert list(by_key) == ["alley_unclean", "facility_damaged"]
    assert by_key["alley_unclean"]["resolution_rate"] == ratio(1, 1)
    assert by_key["alley_unclean"]["satisfaction_rate"] == ratio(0, 0)
    assert by_key["facility_damaged"]["incidents"] == 4
    assert by_key["facility_damaged"]["resolution_rate"] == ratio(1, 2)


def test_grouped_by_department_the_undispatched_ones_have_null_rates(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    groups = read_rates(grid, community=COMMUNITY, group_by="department").json()["groups"]
    assert [g["key"]["department"] for g in groups] == ["municipal", None]
    municipal, undispatched = groups
    assert municipal["incidents"] == 3
    assert undispatched["resolution_rate"] == ratio(0, 0)
    assert undispatched["response_rate"] == ratio(1, 1)  # D answered; E still pending


def test_a_period_with_no_incidents_has_null_rates(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    body = read_rates(grid, community=COMMUNITY, **{"from": "2020-01-01", "to": "2020-01-31"})
    (group,) = body.json()["groups"]
    assert group["incidents"] == 0
    assert group["response_rate"] == ratio(0, 0)


def test_a_rating_is_in_the_history_and_its_event_carries_no_comment_or_reporter(
    grid: Stack, servers: Servers, incidents: dict[str, dict[str, Any]]
) -> None:
    a = incidents["A"]
    assert [(r["score"], r["closure"]) for r in a["ratings"]] == [(5, 1), (4, 2)]
    history = staff(grid).get(f"{grid.url}/api/v1/grid/incidents/{a['id']}/history", timeout=10)
    rated = [e for e in history.json()["items"] if e["action"] == "rate"]
    assert [e["fields"] for e in rated] == [{"score": 5, "comment": "很及时"}, {"score": 4}]
    assert not any("to" in e for e in rated)  # a rating enters no state

    outbox = servers.mongo()[f"{grid.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}grid"]["outbox"]
    events = wait_for(
        lambda: (
            list(outbox.find({"body.subject": a["id"], "type": "shequ.grid.incident.rated"}))
            or None
        ),
        what="the rated events",
    )
    payloads = sorted((e["body"]["data"] for e in events), key=lambda d: d["at"])
    assert [p["score"] for p in payloads] == [5, 4]
    assert payloads[0]["outcome"] == "closed_resolved"
    assert payloads[0]["department"] == "municipal"
    assert not {"comment", "reporter"} & set(payloads[0])
    assert "很及时" not in str(events) and RESIDENT not in str(events)


def refused_and_unchanged(
    grid: Stack, incident: dict[str, Any], response: requests.Response, status: int
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    now = staff(grid).get(f"{grid.url}/api/v1/grid/incidents/{incident['id']}", timeout=10).json()
    assert (now["version"], now["ratings"]) == (incident["version"], incident["ratings"])
    return dict(response.json())


def test_an_open_incident_cannot_be_rated_409(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    e = incidents["E"]
    problem = refused_and_unchanged(grid, e, rate(grid, e, score=5), 409)
    assert problem["state"] == "reported"


def test_a_second_rating_of_the_same_closure_is_409(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    b = incidents["B"]
    refused_and_unchanged(grid, b, rate(grid, b, score=5), 409)


def test_only_the_reporter_may_rate_403(grid: Stack, incidents: dict[str, dict[str, Any]]) -> None:
    c = incidents["C"]
    refused_and_unchanged(grid, c, rate(grid, c, staff(grid), score=5), 403)
    stranger = session(grid, "resident", sub="r-other")
    assert rate(grid, c, stranger, score=5).status_code == 404  # cannot even see it


@pytest.mark.parametrize(
    "body", [{"score": 6}, {"score": 0}, {"score": "5"}, {"score": 4.5}, {"score": 3, "stars": 3}]
)
def test_a_bad_rating_body_is_422(
    grid: Stack, incidents: dict[str, dict[str, Any]], body: dict[str, Any]
) -> None:
    c = incidents["C"]
    refused_and_unchanged(grid, c, rate(grid, c, **body), 422)


def test_a_stale_rating_is_409(grid: Stack, incidents: dict[str, dict[str, Any]]) -> None:
    c = incidents["C"]
    problem = refused_and_unchanged(grid, c, rate(grid, c, score=5, expected_version=1), 409)
    assert problem["current_version"] == c["version"]


@pytest.mark.parametrize(
    "query",
    [
        {"colour": "red"},
        {"from": "2026-13-01"},
        {"from": "2026-11-02", "to": "2026-11-01"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"group_by": "reporter"},
    ],
)
def test_a_bad_rates_query_is_422(grid: Stack, query: dict[str, str]) -> None:
    response = read_rates(grid, community=COMMUNITY, **query)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["errors"]


def test_residents_and_other_communities_staff_may_not_read_the_rates(grid: Stack) -> None:
    assert read_rates(grid, resident(grid)).status_code == 403
    other = session(grid, "community_staff", sub="staff-ls", communities=["hx-liushu"])
    assert read_rates(grid, other, community=COMMUNITY).status_code == 403
    assert read_rates(grid, department(grid)).status_code == 403


def test_staff_without_a_filter_see_their_own_communities_and_auditors_see_all(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    other = session(grid, "community_staff", sub="staff-ls", communities=["hx-liushu"])
    (theirs,) = read_rates(grid, other).json()["groups"]
    assert theirs["incidents"] == 0
    auditor = session(grid, "auditor", sub="audit-1")
    groups = read_rates(grid, auditor, group_by="community").json()["groups"]
    assert [(g["key"]["community"], g["incidents"]) for g in groups] == [(COMMUNITY, 5)]


def samples(stack: Stack, name: str, label: str) -> dict[tuple[str, str], float]:
    """The grid's metric samples called ``name``, by (``label``, category)."""
    text = requests.get(f"{stack.processes['grid'].url}/metrics", timeout=10).text
    return {
        (s.labels[label], s.labels["category"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_every_stopped_clock_was_observed_in_the_stage_histogram(
    grid: Stack, incidents: dict[str, dict[str, Any]]
) -> None:
    counts = samples(grid, "shequ_incident_stage_seconds_count", "stage")
    # facility_damaged: A twice through dispatch..feedback (before and after its reopen), B once;
    # acknowledge stopped for A, B and D. alley_unclean: C once through every clock.
    assert counts[("acknowledge", "facility_damaged")] == 3
    assert counts[("dispatch", "facility_damaged")] == 3
    assert counts[("resolve", "facility_damaged")] == 3
    assert counts[("feedback", "facility_damaged")] == 3
    assert counts[("acknowledge", "alley_unclean")] == 1
    assert counts[("resolve", "alley_unclean")] == 1


@pytest.fixture(scope="module")
def unscanned_grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A grid whose acknowledge limit is 2 s and whose deadline scan never runs in a test."""
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("unscanned"),
        services=["grid"],
        env={
            "SHEQU_GRID_POLICY_FILE": str(FAST_POLICY),
            "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "3600",
        },
    )
    stack.start()
    yield stack
    stack.stop()


def test_a_clock_stopped_late_before_any_scan_still_counts_one_breach(
    unscanned_grid: Stack, servers: Servers
) -> None:
    incident = report(unscanned_grid)
    grid_db = servers.mongo()[f"{unscanned_grid.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}grid"]
    stored = grid_db["incidents"].find_one({"_id": incident["id"]})
    deadline = stored["clocks"]["acknowledge"]["deadline"]
    wait_for(lambda: datetime.now(UTC) > deadline, what="the acknowledge deadline to pass")
    step(unscanned_grid, staff(unscanned_grid), incident, action="accept")
    breaches = samples(unscanned_grid, "shequ_sla_breaches_total", "clock")
    # Every (clock, category) series exists from the first scrape at 0; one has counted.
    assert {key: value for key, value in breaches.items() if value} == {
        ("acknowledge", "facility_damaged"): 1.0
    }
    assert set(breaches.values()) == {0.0, 1.0}
