"""A real Prometheus against the session platform: the dashboard's numbers are the APIs' numbers.

Debian's ``prometheus`` scrapes every service's ``/metrics`` every second
(jobs named as the Kubernetes Services are, ``shequ-<service>``) and
evaluates deploy/monitoring's rules (``tests/support/prometheus.py``). The
test drives incidents, mediation cases, a volunteer task and a poison
message through the platform, then evaluates the PromQL behind the
dashboard's panels and the alerts through Prometheus's HTTP API and
compares it with what the services' own APIs report at that moment. The
platform is shared with other tests, so nothing assumes the counts start at
zero: each comparison reads both sides and waits (bounded) until they agree,
which also absorbs the scrape interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from shequ.embedded import free_port
from shequ.metrics import ALL_SERVICES
from shequ_services.grid.domain import NOT_OPEN_STATES
from tests.conftest import Platform, wait_for
from tests.e2e import test_mediation as mediation
from tests.e2e.test_poison_events import publish_raw
from tests.monitoring.conftest import DASHBOARD, RULES, alerts
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.monitoring

COMMUNITY = "hx-qingyuan"
GHOST_JOB = "shequ-ghost"  # a target nothing listens on: what ShequServiceDown is for
RATES = ("response", "resolution", "satisfaction")


@pytest.fixture(scope="module")
def prometheus(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    jobs = {
        f"shequ-{name}": [urlsplit(platform.stack.processes[name].url).netloc]
        for name in ALL_SERVICES
    }
    jobs[GHOST_JOB] = [f"127.0.0.1:{free_port()}"]
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), jobs, [RULES])
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- driving the platform -------------------------------------------------------------------


def _session(platform: Platform, *roles: str, **claims: Any) -> requests.Session:
    return platform.session(*roles, **claims)


def _step(platform: Platform, who: requests.Session, incident: dict, **body: Any) -> dict:
    response = who.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions",
        json={"expected_version": incident["version"], **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _incidents(platform: Platform) -> None:
    """Three reports by one resident: resolved and rated 5, unresolved and rated 2, open."""
    resident = _session(platform, "resident", sub="r-prometheus")
    staff = _session(platform, "community_staff", sub="staff-prom", communities=[COMMUNITY])
    department = _session(platform, "department", sub="dept-prom", department="municipal")
    for outcome, score in (("resolved", 5), ("unresolved", 2), (None, None)):
        response = resident.post(
            f"{platform.url}/api/v1/grid/incidents",
            json={"category": "facility_damaged", "grid_cell": "qy-01", "description": "路灯坏了"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        incident = response.json()
        if outcome is None:
            continue
        incident = _step(platform, staff, incident, action="accept")
        incident = _step(platform, staff, incident, action="dispatch", department="municipal")
        incident = _step(platform, department, incident, action="start")
        incident = _step(platform, department, incident, action="report_handled", feedback="修好")
        incident = _step(platform, staff, incident, action="check", outcome=outcome)
        rated = resident.post(
            f"{platform.url}/api/v1/grid/incidents/{incident['id']}/rating",
            json={"expected_version": incident["version"], "score": score},
            timeout=10,
        )
        assert rated.status_code == 201, rated.text


def _mediation_cases(platform: Platform) -> None:
    """One case closed agreed, one closed referred (mediation's own e2e helpers)."""
    case, community, _ = mediation.agreed_case(platform)
    office = mediation.staff(platform, community)
    today = datetime.now(UTC).date().isoformat()
    case = mediation.ok(
        mediation.step(
            office, platform, case, "file_confirmation", court="hx-court", filed_on=today
        )
    )
    case = mediation.ok(
        mediation.step(office, platform, case, "decide_confirmation", decision="confirmed")
    )
    mediation.ok(mediation.step(office, platform, case, "close"))
    community = mediation.new_community()
    mediation.roster_of_two(platform, community)
    case = mediation.ok(
        mediation.assign(platform, mediation.walk_in(platform, community), community)
    )
    me = mediation.mediator(platform, case["mediator_id"], community)
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    case = mediation.ok(
        mediation.step(me, platform, case, "schedule_session", session_at=at, place="调解室")
    )
    case = mediation.ok(mediation.step(me, platform, case, "fail", reason="分歧过大"))
    office = mediation.staff(platform, community)
    case = mediation.ok(mediation.step(office, platform, case, "refer", court="hx-court"))
    mediation.ok(mediation.step(office, platform, case, "close"))


@pytest.fixture(scope="module")
def driven(platform: Platform, prometheus: Prometheus) -> Platform:
    # Scraped once before anything happens, so the first observations show as increases.
    wait_for(
        lambda: all(
            prometheus.values("up", "job").get((f"shequ-{name}",)) == 1.0 for name in ALL_SERVICES
        ),
        timeout=60,
        what="every service scraped once",
    )
    _incidents(platform)
    _mediation_cases(platform)
    publish_raw(platform, b"{not json")  # every consumer of incident.reported dead-letters it
    return platform


# -- reading both sides ---------------------------------------------------------------------


def _grid_rates(platform: Platform, **query: str) -> list[dict[str, Any]]:
    auditor = _session(platform, "auditor", sub="audit-prom")
    response = auditor.get(f"{platform.url}/api/v1/grid/rates", params=query, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["groups"])


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _agree(read_api: Any, read_prometheus: Any, what: str) -> tuple[Any, Any]:
    """Wait until both sides read the same; return them (the assertion is in the wait)."""
    last: dict[str, Any] = {}

    def same() -> bool:
        last["api"], last["prometheus"] = read_api(), read_prometheus()
        return bool(last["api"] == last["prometheus"])

    try:
        wait_for(same, timeout=60, interval=0.5, what=what)
    finally:
        print(f"{what}: api={last.get('api')} prometheus={last.get('prometheus')}")  # noqa: T201
    return last["api"], last["prometheus"]


# -- the tests ------------------------------------------------------------------------------


def test_every_service_is_scraped_and_every_rule_evaluates_without_error(
    driven: Platform, prometheus: Prometheus
) -> None:
    def rules_evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        return rules if rules and evaluated else None

    rules = wait_for(rules_evaluated, timeout=60, what="every rule evaluated once")
    assert {r["name"] for r in rules if r["type"] == "alerting"} == {a["alert"] for a in alerts()}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_the_three_rates_in_prometheus_are_the_rates_api(
    driven: Platform, prometheus: Prometheus
) -> None:
    def api_by_community() -> dict[tuple[str, str], tuple[int, int]]:
        return {
            (rate, group["key"]["community"]): (
                group[f"{rate}_rate"]["numerator"],
                group[f"{rate}_rate"]["denominator"],
            )
            for group in _grid_rates(driven, group_by="community")
            for rate in RATES
        }

    def prometheus_by_community() -> dict[tuple[str, str], tuple[int, int]]:
        numerators = prometheus.values("community:shequ_rate_numerator:max", "rate", "community")
        denominators = prometheus.values(
            "community:shequ_rate_denominator:max", "rate", "community"
        )
        return {key: (int(numerators[key]), int(denominators[key])) for key in denominators}

    api, _ = _agree(api_by_community, prometheus_by_community, "rates' counts by community")
    assert api[("resolution", COMMUNITY)][1] >= 2  # this test's two closed incidents at least

    def api_district() -> dict[str, float | None]:
        (group,) = _grid_rates(driven)
        return {rate: group[f"{rate}_rate"]["value"] for rate in RATES}

    def prometheus_district() -> dict[str, float | None]:
        found = prometheus.values("shequ_rate:ratio", "rate")
        return {rate: found.get((rate,)) for rate in RATES}

    def agree_closely() -> bool:
        a, p = api_district(), prometheus_district()
        return all(_close(a[rate], p[rate]) for rate in RATES)

    wait_for(agree_closely, timeout=60, interval=0.5, what="district rates")
    panels = _panel_queries()
    for rate in RATES:
        assert f'shequ_rate:ratio{{rate="{rate}"}}' in panels


def test_open_incidents_by_state_in_prometheus_are_the_listing_api(
    driven: Platform, prometheus: Prometheus
) -> None:
    admin = _session(driven, "admin", sub="admin-prom", purpose="casework")

    def api_counts() -> dict[str, int]:
        counts: dict[str, int] = {}
        params: dict[str, Any] = {"community": COMMUNITY, "limit": 200}
        while True:
            response = admin.get(f"{driven.url}/api/v1/grid/incidents", params=params, timeout=10)
            assert response.status_code == 200, response.text
            body = response.json()
            for item in body["items"]:
                if item["status"] not in NOT_OPEN_STATES:
                    counts[item["status"]] = counts.get(item["status"], 0) + 1
            if not body["next_cursor"]:
                return counts
            params = {**params, "cursor": body["next_cursor"]}

    def prometheus_counts() -> dict[str, int]:
        found = prometheus.values(
            f'max by (state) (shequ_incidents_in_state{{community="{COMMUNITY}"}})', "state"
        )
        return {state: int(value) for (state,), value in found.items() if value}

    api, _ = _agree(api_counts, prometheus_counts, f"open incidents of {COMMUNITY} by state")
    assert api.get("reported", 0) >= 1  # this test's open report at least


def test_the_mediation_agreement_rate_is_the_mediation_rates_api(
    driven: Platform, prometheus: Prometheus
) -> None:
    staff = _session(driven, "auditor", sub="audit-prom")
    now = datetime.now(UTC)

    def api_rate() -> float | None:
        response = staff.get(
            f"{driven.url}/api/v1/mediation/rates",
            params={"from": (now - timedelta(days=30)).isoformat(),
                    "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
            timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()["agreement_rate"]

    def prometheus_rate() -> float | None:
        found = prometheus.values("shequ_mediation_agreement:ratio")
        return round(found[()], 4) if found else None

    api, _ = _agree(api_rate, prometheus_rate, "mediation agreement rate")
    assert api is not None and 0 < api < 1  # at least this test's agreed and referred cases
    assert "shequ_mediation_agreement:ratio" in _panel_queries()


def test_stage_and_handler_percentiles_are_recorded(
    driven: Platform, prometheus: Prometheus
) -> None:
    # A quantile is NaN until its series has grown within its window; ">= 0" drops NaN.
    stages = wait_for(
        lambda: (lambda found: found if {("acknowledge",), ("resolve",)} <= set(found) else None)(
            prometheus.values("stage:shequ_incident_stage_seconds:p90_1d >= 0", "stage")
        ),
        what="stage p90 of acknowledge and resolve",
    )
    assert stages
    # The handler percentile looks back 5 minutes only: handle a fresh report now.
    worker = driven.session("grid_worker", sub="gw-prom", communities=(COMMUNITY,))
    response = worker.post(
        f"{driven.url}/api/v1/grid/incidents",
        json={"category": "neighbour_dispute", "grid_cell": "qy-02", "description": "噪音"},
        timeout=10,
    )
    assert response.status_code == 201, response.text

    def handling_services() -> set[str]:
        found = prometheus.values(
            "service_handler:shequ_event_handle_seconds:p90_5m >= 0", "service", "handler"
        )
        return {service for service, _ in found}

    wait_for(
        lambda: handling_services() >= {"notify", "mediation"},
        timeout=60,
        what="handler p90 of notify and mediation",
    )


def test_alert_expressions_fire_on_what_happened_and_not_otherwise(
    driven: Platform, prometheus: Prometheus
) -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in alerts()}

    # The poison message: each consumer of incident.reported dead-lettered it.
    def dead_lettering_services() -> set[str]:
        return {s for (s,) in prometheus.values(by_name["ShequDeadLetters"], "service")}

    consumers = {"notify", "disclosure", "mediation", "volunteer"}
    wait_for(lambda: dead_lettering_services() >= consumers, what="ShequDeadLetters firing")
    # A target nothing listens on is down; the real services are not, and none is absent.
    wait_for(
        lambda: prometheus.values(by_name["ShequServiceDown"], "job") == {(GHOST_JOB,): 0.0},
        what="ShequServiceDown for the ghost target only",
    )
    assert prometheus.query(by_name["ShequServiceAbsent"]) == []
    # Every relay keeps up with its outbox.
    assert prometheus.query(by_name["ShequOutboxLag"]) == []
    pending = prometheus.values("max by (service) (shequ_outbox_oldest_pending_seconds)", "service")
    assert {s for (s,) in pending} == set(ALL_SERVICES)


def _panel_queries() -> str:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return "\n".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
