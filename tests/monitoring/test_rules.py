"""The rules pass ``promtool check rules``, and ``promtool test rules`` covers every alert."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.monitoring.conftest import (
    OBSERVABILITY_DOC,
    RULE_TESTS,
    RULES,
    alerts,
    known_metric,
    promql_metric_names,
    recorded_names,
    rule_groups,
    system_tool,
)

pytestmark = pytest.mark.monitoring


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES.parent,
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alerts()} <= firing


def test_every_alert_has_a_severity_and_a_runbook_entry() -> None:
    doc = OBSERVABILITY_DOC.read_text(encoding="utf-8")
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "ticket", "warning"}, rule["alert"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in doc, f"no runbook entry for {rule['alert']}"


def test_the_rules_read_only_contract_recorded_or_documented_external_metrics() -> None:
    recorded = recorded_names()
    for group in rule_groups():
        for rule in group["rules"]:
            names = promql_metric_names(rule["expr"])
            assert names, rule
            for name in names:
                assert known_metric(name, recorded), (
                    f"{name} in {rule.get('record', rule.get('alert'))}"
                )


def test_the_metric_name_finder_finds_names_and_skips_the_rest() -> None:
    expr = (
        'sum by (clock) (rate(shequ_sla_breaches_total{clock="a"}[5m])) / '
        '(x:y:z offset 2h > 0) or absent(up{job="shequ-grid"}) unless on (le) vector(0)'
    )
    assert promql_metric_names(expr) == {"shequ_sla_breaches_total", "x:y:z", "up"}
