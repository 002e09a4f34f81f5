"""The monitoring component carries deploy/monitoring exactly, in the overlays that use it.

deploy/monitoring/ is the one source of the rules and the dashboard; the
component's copies (scripts/sync-monitoring) must not drift from it.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy.conftest import K8S, ROOT, SERVICES, named, of_kind, rendered

pytestmark = pytest.mark.deploy

MONITORING = ROOT / "deploy" / "monitoring"
WITH_MONITORING = ("prod", "example-district")
STALE = "deploy/k8s/components/monitoring is stale: run scripts/sync-monitoring"


def source_groups() -> list[dict]:
    return list(yaml.safe_load((MONITORING / "rules" / "shequ.rules.yml").read_text())["groups"])


@pytest.mark.parametrize("overlay", WITH_MONITORING)
def test_the_prometheus_rule_is_the_rules_file(overlay: str) -> None:
    (rule,) = of_kind(rendered(overlay), "PrometheusRule")
    assert rule["spec"]["groups"] == source_groups(), STALE


@pytest.mark.parametrize("overlay", WITH_MONITORING)
def test_the_dashboard_config_map_is_the_dashboard_and_labelled_for_the_sidecar(
    overlay: str,
) -> None:
    config = named(rendered(overlay), "ConfigMap", "shequ-grafana-dashboards")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = sorted((MONITORING / "dashboards").glob("*.json"))
    assert sorted(config["data"]) == [path.name for path in sources]
    for path in sources:
        assert json.loads(config["data"][path.name]) == json.loads(path.read_text()), STALE


@pytest.mark.parametrize("overlay", WITH_MONITORING)
def test_each_service_is_scraped_on_its_own_port_and_the_broker_per_queue(overlay: str) -> None:
    docs = rendered(overlay)
    for service in SERVICES:
        name = f"shequ-{service}"
        monitor = named(docs, "ServiceMonitor", name)
        service_doc = named(docs, "Service", name)
        ports = {port["name"] for port in service_doc["spec"]["ports"]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert monitor["spec"]["selector"]["matchLabels"] == service_doc["spec"]["selector"]
    broker = named(docs, "PodMonitor", "shequ-rabbitmq")
    (endpoint,) = broker["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics/per-object"


def test_the_component_files_are_the_copies_the_sync_script_writes() -> None:
    component = K8S / "components" / "monitoring"
    for path in (MONITORING / "dashboards").glob("*.json"):
        assert (component / "dashboards" / path.name).read_bytes() == path.read_bytes(), STALE
