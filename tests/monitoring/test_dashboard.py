"""The Grafana dashboard: valid JSON, every query through ``${datasource}``, known metrics only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.monitoring.conftest import (
    DASHBOARD,
    known_metric,
    promql_metric_names,
    recorded_names,
)

pytestmark = pytest.mark.monitoring

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: What the issue asks the dashboard to show, by a word of each panel's title.
REQUIRED = ("Incidents by stage", "Overdue by community", "响应率", "解决率", "满意率",
            "Mediation agreement rate", "Volunteer dispatch time", "Queue depth", "Dead letters",
            "Handler latency")  # fmt: skip


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_the_dashboard_is_json_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    board = dashboard()
    for panel in query_panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_metric_a_panel_reads_is_declared_recorded_or_documented() -> None:
    recorded = recorded_names()
    queries = [t["expr"] for p in query_panels() for t in p["targets"]]
    queries += [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    for expr in queries:
        names = promql_metric_names(expr.replace("label_values(", "(").replace(", community)", ")"))
        assert names, expr
        for name in names:
            assert known_metric(name, recorded), f"{name} in {expr}"


def test_the_panels_the_issue_asks_for_are_there() -> None:
    titles = " | ".join(p["title"] for p in query_panels())
    for words in REQUIRED:
        assert words in titles, words


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
