from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shequ_services.grid import deadlines, domain
from shequ_services.grid.reference import load_seed

HERE = Path(domain.__file__).parent
CATEGORIES = domain.parse_categories(yaml.safe_load((HERE / "categories.yaml").read_text()))
CELLS = domain.parse_cells(yaml.safe_load((HERE / "registry.yaml").read_text()))
POLICY = deadlines.parse_policy(yaml.safe_load((HERE / "policy.yaml").read_text()))
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
SEED_CELLS = load_seed(HERE / "registry.yaml", HERE / "categories.yaml").registry.cells


def report(**overrides: object) -> domain.Incident:
    args = {
        "categories": CATEGORIES,
        "cells": CELLS,
        "category": "facility_damaged",
        "grid_cell": "qy-01",
        "description": "路灯坏了",
        "location": None,
        "reporter": "gw-1",
        "channel": "patrol",
        "now": NOW,
        "policy": POLICY,
    }
    args.update(overrides)
    return domain.report_incident(**args)  # type: ignore[arg-type]


def test_the_shipped_categories_include_the_eight_must_report_items() -> None:
    eight = {
        "facility_damaged", "alley_unclean", "new_pregnancy", "migrants_moving_in",
        "resident_hospitalised", "house_rented_out", "safety_hazard", "instability_factor",
    }  # fmt: skip
    assert eight <= set(CATEGORIES)
    assert CATEGORIES["new_pregnancy"].sensitive and CATEGORIES["neighbour_dispute"].opens_mediation


def test_a_report_opens_an_incident_in_its_cells_community() -> None:
    incident = report(grid_cell="ls-02")
    assert incident.status == "reported"
    assert incident.community == "hx-liushu"
    assert incident.urgency == "simple"
    assert incident.id.startswith("INC-20261123-")
    assert incident.history[0]["action"] == "reported"
    assert set(incident.clocks) == {"acknowledge"}
    assert incident.next_due == incident.clocks["acknowledge"].warn_at


def test_an_unknown_category_is_refused() -> None:
    with pytest.raises(domain.UnknownCategory):
        report(category="flying_saucer")


def test_an_unknown_cell_is_refused() -> None:
    with pytest.raises(domain.UnknownGridCell):
        report(grid_cell="nowhere")


def test_a_retired_category_takes_no_new_reports() -> None:
    retired = domain.parse_categories(
        [{"code": "old", "name_zh": "旧", "name_en": "Old", "urgency": "simple",
          "department": "x", "active": False}]
    )  # fmt: skip
    with pytest.raises(domain.CategoryRetired):
        report(categories=retired, category="old")


def test_duplicate_category_codes_are_refused() -> None:
    item = {"code": "a", "name_zh": "甲", "name_en": "A", "urgency": "simple", "department": "x"}
    with pytest.raises(ValueError, match="twice"):
        domain.parse_categories([item, item])


@pytest.mark.parametrize(
    ("roles", "sub", "communities", "allowed"),
    [
        ({"resident"}, "gw-1", (), True),
        ({"resident"}, "someone-else", (), False),
        ({"grid_worker"}, "gw-2", ("hx-qingyuan",), True),
        ({"grid_worker"}, "gw-2", ("hx-liushu",), False),
        ({"auditor"}, "a", (), True),
    ],
)
def test_who_may_read_an_incident(
    roles: set[str], sub: str, communities: tuple[str, ...], allowed: bool
) -> None:
    incident = report()
    assert (
        domain.can_read(
            incident, sub=sub, roles=frozenset(roles), communities=communities, sensitive=False
        )
        is allowed
    )


def test_a_department_reads_a_case_it_leads_or_co_handles_and_no_other() -> None:
    incident = report()
    incident.department = "municipal"
    incident.subtasks = [{"department": "police", "status": "handled"}]

    def reads(department: str) -> bool:
        return domain.can_read(
            incident, sub="d-1", roles=frozenset({"department"}), communities=(),
            department=department, sensitive=False,
        )  # fmt: skip

    assert reads("municipal") and reads("police")
    assert not reads("housing")


WINDOW = timedelta(hours=48)


def duplicates_of(new: domain.Incident, *others: domain.Incident) -> list[str]:
    scope = domain.duplicate_scope(new, SEED_CELLS, WINDOW)
    return domain.link_duplicates(new, scope, others).possible_duplicates


def test_a_report_in_an_adjacent_cell_of_an_open_one_is_a_possible_duplicate() -> None:
    first = report(grid_cell="qy-01", now=NOW - timedelta(hours=3))
    second = report(grid_cell="qy-02")
    assert duplicates_of(second, first) == [first.id]


def test_a_far_cell_another_category_or_an_old_report_is_no_duplicate() -> None:
    new = report(grid_cell="qy-01")
    far = report(grid_cell="ls-02", now=NOW - timedelta(hours=1))
    other = report(category="alley_unclean", grid_cell="qy-01", now=NOW - timedelta(hours=1))
    old = report(grid_cell="qy-01", now=NOW - WINDOW - timedelta(minutes=1))
    assert duplicates_of(new, far, other, old) == []


def test_a_closed_or_rejected_incident_is_no_duplicate_and_a_report_not_its_own() -> None:
    new = report(grid_cell="qy-01")
    closed = report(grid_cell="qy-01", now=NOW - timedelta(hours=1))
    closed.status = "closed_resolved"
    rejected = report(grid_cell="qy-01", now=NOW - timedelta(hours=1))
    rejected.status = "rejected"
    assert duplicates_of(new, closed, rejected, new) == []


def test_possible_duplicates_are_listed_oldest_first() -> None:
    older = report(now=NOW - timedelta(hours=5))
    newer = report(now=NOW - timedelta(hours=1))
    assert duplicates_of(report(), newer, older) == [older.id, newer.id]


def test_the_duplicate_scope_is_the_cell_and_its_neighbours_within_the_window() -> None:
    scope = domain.duplicate_scope(report(grid_cell="qy-01"), SEED_CELLS, WINDOW)
    assert set(scope.cells) == {"qy-01", "qy-02", "gh-02"}
    assert scope.since == NOW - WINDOW and scope.until == NOW


def test_a_duplicate_merges_into_an_open_incident_of_its_category_and_community() -> None:
    original, duplicate = report(), report(grid_cell="qy-02")
    domain.check_merge(duplicate, original)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "closed_resolved"}, "is closed_resolved, not open"),
        ({"status": "merged"}, "is merged, not open"),
        ({"category": "alley_unclean"}, "is a alley_unclean, not a facility_damaged"),
        ({"community": "hx-liushu"}, "belongs to another community"),
    ],
)
def test_a_merge_target_must_be_open_alike_and_local(change: dict[str, str], message: str) -> None:
    original = report()
    for name, value in change.items():
        setattr(original, name, value)
    with pytest.raises(domain.InvalidMergeTarget, match=message):
        domain.check_merge(report(grid_cell="qy-02"), original)


def test_an_incident_cannot_be_merged_into_itself() -> None:
    incident = report()
    with pytest.raises(domain.InvalidMergeTarget, match="into itself"):
        domain.check_merge(incident, incident)


def test_a_closed_mediation_case_takes_the_handled_step_only_from_in_progress() -> None:
    from dataclasses import replace

    from shequ_services.grid.domain import mediation_closes_step, mediation_feedback

    incident = report(category="neighbour_dispute")
    assert mediation_closes_step(replace(incident, status="in_progress"))
    for status in ("reported", "accepted", "dispatched", "deferred", "handled", "closed_resolved"):
        assert not mediation_closes_step(replace(incident, status=status))
    blocked = replace(
        incident,
        status="in_progress",
        subtasks=[{"department": "police", "status": "open"}],
    )
    assert not mediation_closes_step(blocked)
    assert "调解成功" in mediation_feedback("MED-1", "agreed")


def test_the_duplicate_window_is_read_from_its_newest_minute() -> None:
    scope = domain.duplicate_scope(report(), SEED_CELLS, WINDOW)
    start, end = scope.first_span()
    # Ending just after the report, so an incident stored at that instant counts.
    assert (start, end) == (NOW + timedelta(milliseconds=1) - domain.FIRST_SPAN,
                            NOW + timedelta(milliseconds=1))  # fmt: skip


def test_a_quiet_scope_is_read_in_two_spans() -> None:
    scope = domain.duplicate_scope(report(), SEED_CELLS, WINDOW)
    start, _ = scope.first_span()
    assert scope.next_span(start, read=0, wanted=20, held=0) == (NOW - WINDOW, start)
    assert scope.next_span(NOW - WINDOW, read=0, wanted=20, held=0) is None


def test_a_busy_scope_reads_a_span_sized_for_what_is_still_missing() -> None:
    scope = domain.duplicate_scope(report(), SEED_CELLS, WINDOW)
    start, end = scope.first_span()
    # 5 read in the first minute, 15 more wanted: six minutes more, twice the need.
    assert scope.next_span(start, read=5, wanted=15, held=5) == (start - (end - start) * 6, start)
    # A span that held more than twice what is wanted: at least as long again.
    assert scope.next_span(start, read=100, wanted=1, held=100) == (start - (end - start), start)


def test_after_a_span_that_held_none_the_rest_of_the_window_is_read() -> None:
    scope = domain.duplicate_scope(report(), SEED_CELLS, WINDOW)
    start, end = scope.first_span()
    # A burst in the newest minute, nothing in the six before it: the
    # incidents thin out going back, so the rest is read at once.
    older, _ = scope.next_span(start, read=5, wanted=15, held=5)
    assert scope.next_span(older, read=5, wanted=15, held=0) == (NOW - WINDOW, older)


@given(
    window_minutes=st.integers(min_value=1, max_value=60 * 24 * 30),
    reads=st.lists(st.tuples(st.integers(0, 500), st.integers(1, 20)), min_size=1, max_size=60),
)
def test_the_spans_cover_the_whole_window_once(
    window_minutes: int, reads: list[tuple[int, int]]
) -> None:
    scope = domain.duplicate_scope(report(), SEED_CELLS, timedelta(minutes=window_minutes))
    spans = [scope.first_span()]
    read = 0
    for more, wanted in reads:
        read += more
        span = scope.next_span(spans[-1][0], read, wanted, held=more)
        if span is None:
            break
        spans.append(span)
    assert spans[0][1] > scope.until
    assert all(start < end for start, end in spans)
    assert all(newer[0] == older[1] for newer, older in pairwise(spans))
    if spans[-1][0] != scope.since:  # not read to the end: only when the reads ran out
        assert len(spans) == len(reads) + 1
