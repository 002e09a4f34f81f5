"""The metric contract itself: one declaration per metric, low-cardinality labels."""

from pathlib import Path

import prometheus_client

from shequ import metrics

#: Label names that would carry an id or a person; none may appear in the contract.
FORBIDDEN_LABELS = {"id", "incident", "incident_id", "case", "case_id", "task_id", "person",
                    "sub", "subject", "user", "reporter", "volunteer", "name", "email", "phone",
                    "address", "ip"}  # fmt: skip


def test_every_shequ_metric_in_the_registry_is_declared_in_the_contract() -> None:
    registered = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("shequ_")
    }
    assert registered == set(metrics.CONTRACT)


def test_labels_are_low_cardinality_and_services_are_known() -> None:
    for spec in metrics.CONTRACT.values():
        assert not set(spec.labels) & FORBIDDEN_LABELS, spec.name
        assert set(spec.services) <= set(metrics.ALL_SERVICES), spec.name
        assert spec.name.startswith("shequ_"), spec.name


def test_duration_histograms_span_one_second_to_thirty_days() -> None:
    histograms = [s for s in metrics.CONTRACT.values() if s.kind == "histogram"]
    assert histograms
    for spec in histograms:
        assert spec.name.endswith("_seconds"), spec.name
        assert spec.buckets == metrics.DURATION_BUCKETS
    assert 1.0 in metrics.DURATION_BUCKETS
    assert max(metrics.DURATION_BUCKETS) == 30 * 86400
    assert list(metrics.DURATION_BUCKETS) == sorted(set(metrics.DURATION_BUCKETS))


def test_a_metric_is_declared_once() -> None:
    spec = metrics.CONTRACT["shequ_outbox_pending"]
    try:
        metrics._declare(spec)
    except ValueError as exc:
        assert "declared twice" in str(exc)
    else:
        raise AssertionError("a second declaration was accepted")


def test_the_observability_doc_lists_every_metric_with_its_type_and_labels() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "observability.md").read_text("utf-8")
    rows = {
        cells[0].strip("` "): cells
        for line in doc.splitlines()
        if line.startswith("| `shequ_")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    for name, spec in metrics.CONTRACT.items():
        assert name in rows, f"docs/observability.md does not list {name}"
        kind, labels = rows[name][1], rows[name][2]
        assert kind.startswith(spec.kind), name
        assert [label.strip("` ") for label in labels.split(",") if label.strip() != "—"] == list(
            spec.labels
        ), name
