"""Monitoring level: the Prometheus rules, the Grafana dashboard and a real Prometheus.

``promtool`` and ``prometheus`` are Debian's ``prometheus`` package
(``scripts/ensure-system-packages`` installs it, as ``make test`` does). The
rule and dashboard tests need nothing else; ``test_prometheus.py`` scrapes
the session ``platform``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from shequ.metrics import CONTRACT

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "shequ.rules.yml"
RULE_TESTS = MONITORING / "rules" / "shequ.rules.test.yml"
DASHBOARD = MONITORING / "dashboards" / "shequ-sla.json"
OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"


def system_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run scripts/ensure-system-packages "
            "(Debian's prometheus package)"
        )
    return found


def rule_groups() -> list[dict]:
    return list(yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"])


def recorded_names() -> set[str]:
    return {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


#: Metrics the rules and panels may read that no Shequ service exports:
#: Prometheus's own ``up``, and RabbitMQ's rabbitmq_prometheus plugin (its
#: per-object endpoint, docs/observability.md).
EXTERNAL_METRICS = {"up", "rabbitmq_queue_messages", "rabbitmq_queue_messages_ready",
                    "rabbitmq_queue_consumers"}  # fmt: skip
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
             "unless", "or", "and", "bool", "inf", "nan"}  # fmt: skip
_SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Not a parser: it drops strings, label matchers, ranges and grouping
    clauses, then takes the identifiers that are not functions (followed by
    ``(``) or keywords. Enough for the rules and panels here, which a test
    also runs through promtool and a real Prometheus.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        if text[match.start() - 1 : match.start()].isdigit():
            continue  # the unit of a duration, as in 5m
        names.add(match.group())
    return names


def known_metric(name: str, recorded: set[str]) -> bool:
    """Declared in the contract (a histogram's series included), recorded, or external."""
    base = next((name[: -len(s)] for s in _SERIES_SUFFIXES if name.endswith(s)), name)
    return name in CONTRACT or base in CONTRACT or name in recorded or name in EXTERNAL_METRICS
