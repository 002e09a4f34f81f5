"""Every running service's /metrics keeps the metric contract (``shequ.metrics.CONTRACT``).

The session platform gets one report first, so that every service has
handled an event, answered HTTP and run its outbox relay: the label checks
then read real samples rather than empty families. Per service: every
declared metric has its type; every ``shequ_`` sample has exactly its
declared labels, histograms exactly the declared buckets; nothing outside
the contract is exported; and each service carries samples of the metrics
it is declared to produce, under its own ``service`` label.
"""

from __future__ import annotations

import math

import pytest
import requests
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from shequ.metrics import ALL_SERVICES, CONTRACT
from tests.conftest import Platform, wait_for

pytestmark = pytest.mark.e2e

COMMUNITY = "hx-qingyuan"
#: Metrics every service produces samples of as soon as it has done the above.
ALWAYS = ("shequ_http_request_seconds", "shequ_outbox_pending", "shequ_event_handle_seconds")


def scrape(platform: Platform, service: str) -> dict[str, Metric]:
    url = f"{platform.stack.processes[service].url}/metrics"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        family.name: family
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("shequ_")
    }


def contract_name(family: Metric) -> str:
    """The parser drops a counter's ``_total``; the contract names it in full."""
    return family.name + "_total" if family.type == "counter" else family.name


@pytest.fixture(scope="module")
def busy_platform(platform: Platform) -> Platform:
    """One report handled everywhere (a dispute: grid, notify, disclosure, mediation) and
    one alley report (volunteer), each service's health asked once."""
    worker = platform.session("grid_worker", sub="gw-metrics", communities=(COMMUNITY,))
    for category, cell in (("neighbour_dispute", "qy-02"), ("alley_unclean", "qy-03")):
        response = worker.post(
            f"{platform.url}/api/v1/grid/incidents",
            json={"category": category, "grid_cell": cell, "description": "指标契约检查"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
    for service in ALL_SERVICES:
        assert requests.get(f"{platform.stack.processes[service].url}/healthz", timeout=10).ok

    def every_service_handled_an_event() -> bool:
        return all(
            any(
                s.labels["service"] == service
                for s in scrape(platform, service)["shequ_event_handle_seconds"].samples
            )
            for service in ALL_SERVICES
            if service != "grid"
        )

    wait_for(every_service_handled_an_event, timeout=60, what="every consumer's first event")
    return platform


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_a_service_exports_the_contract_and_nothing_else(
    busy_platform: Platform, service: str
) -> None:
    families = scrape(busy_platform, service)
    by_contract_name = {contract_name(f): f for f in families.values()}
    assert set(by_contract_name) == set(CONTRACT), service
    for name, spec in CONTRACT.items():
        family = by_contract_name[name]
        assert family.type == spec.kind, f"{service}: {name} is a {family.type}"
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            assert labels == set(spec.labels), f"{service}: {sample.name} has {sample.labels}"
        if spec.kind == "histogram":
            bounds = {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
            if bounds:
                assert bounds == {*spec.buckets, math.inf}, f"{service}: {name} buckets"


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_a_service_produces_its_own_metrics_under_its_own_name(
    busy_platform: Platform, service: str
) -> None:
    families = {contract_name(f): f for f in scrape(busy_platform, service).values()}
    for name in ALWAYS:
        if name == "shequ_event_handle_seconds" and service == "grid":
            continue  # the grid consumes mediation's case.closed only
        samples = families[name].samples
        assert samples, f"{service} has no {name} samples"
        assert {s.labels["service"] for s in samples} == {service}


def test_the_grid_reports_open_work_and_the_rates_counts_from_its_store(
    busy_platform: Platform,
) -> None:
    families = {contract_name(f): f for f in scrape(busy_platform, "grid").values()}
    for name in (
        "shequ_incidents_open",
        "shequ_incidents_in_state",
        "shequ_rate_numerator",
        "shequ_rate_denominator",
    ):
        assert families[name].samples, f"grid has no {name} samples"
    states = {
        (s.labels["community"], s.labels["state"]): s.value
        for s in families["shequ_incidents_in_state"].samples
    }
    assert states[(COMMUNITY, "reported")] >= 1
