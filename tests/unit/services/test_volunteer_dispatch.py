"""Dispatch: offers to the top k, answers, lapses, escalation, check-in and check-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shequ_services.volunteer import domain
from shequ_services.volunteer.domain import DispatchRules

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
RULES = DispatchRules(parallel=2, response_window=timedelta(minutes=30), shortlist=4)


def task(**extra: object) -> domain.Task:
    values: dict[str, object] = {
        "id": "VT-1", "incident_id": None, "kind": "clean_up", "community": "c1",
        "grid_cell": "a", "status": "open", "created_at": NOW,
    }  # fmt: skip
    values.update(extra)
    return domain.Task(**values)  # type: ignore[arg-type]


def offered(ranked: list[str]) -> tuple[domain.Task, list[domain.Change]]:
    return domain.start_offers(task(), ranked, NOW, RULES)


def events(changes: list[domain.Change]) -> list[tuple[str, str | None]]:
    return [(c.event, c.data.get("volunteer_id")) for c in changes]


def test_the_top_k_get_offers_with_a_deadline_and_the_rest_wait() -> None:
    started, changes = offered(["v1", "v2", "v3", "v4", "v5"])
    assert events(changes) == [("task.offered", "v1"), ("task.offered", "v2")]
    assert changes[0].data["deadline"] == NOW + RULES.response_window
    assert started.candidates == ("v3", "v4")  # the shortlist is 4 long
    assert domain.next_due(started) == NOW + RULES.response_window


def test_a_decline_offers_the_next_candidate() -> None:
    started, _ = offered(["v1", "v2", "v3"])
    after, changes = domain.answer(started, "v1", accept=False, now=NOW, rules=RULES)
    assert events(changes) == [("task.declined", "v1"), ("task.offered", "v3")]
    assert {o.volunteer_id for o in after.pending()} == {"v2", "v3"}


def test_the_first_to_accept_takes_the_task_and_other_offers_are_withdrawn() -> None:
    started, _ = offered(["v1", "v2"])
    after, changes = domain.answer(started, "v2", accept=True, now=NOW, rules=RULES)
    assert events(changes) == [("task.accepted", "v2")]
    assert (after.status, after.assignee, after.assigned_at) == ("accepted", "v2", NOW)
    assert after.pending() == []
    with pytest.raises(domain.DispatchError, match="no longer open"):
        domain.answer(after, "v1", accept=True, now=NOW, rules=RULES)


def test_someone_never_offered_the_task_cannot_answer_it() -> None:
    started, _ = offered(["v1"])
    with pytest.raises(domain.NotYourTask):
        domain.answer(started, "v9", accept=True, now=NOW, rules=RULES)


def test_an_answer_after_the_deadline_is_refused() -> None:
    started, _ = offered(["v1"])
    late = NOW + RULES.response_window
    with pytest.raises(domain.DispatchError, match="lapsed"):
        domain.answer(started, "v1", accept=True, now=late, rules=RULES)


def test_lapsed_offers_expire_and_the_next_candidates_are_offered() -> None:
    started, _ = offered(["v1", "v2", "v3"])
    after, changes = domain.lapse(started, NOW + RULES.response_window, RULES)
    assert events(changes) == [
        ("task.expired", "v1"), ("task.expired", "v2"), ("task.offered", "v3"),
    ]  # fmt: skip
    assert domain.next_due(after) == NOW + 2 * RULES.response_window


def test_nothing_lapses_before_the_deadline() -> None:
    started, _ = offered(["v1"])
    after, changes = domain.lapse(started, NOW + timedelta(minutes=29), RULES)
    assert changes == [] and after == started


def test_nobody_left_escalates_once() -> None:
    started, _ = offered(["v1"])
    after, changes = domain.lapse(started, NOW + RULES.response_window, RULES)
    assert [c.event for c in changes] == ["task.expired", "task.escalated"]
    assert after.status == "escalated" and changes[1].data["reason"] == "candidates_exhausted"
    again, more = domain.lapse(after, NOW + 3 * RULES.response_window, RULES)
    assert more == [] and domain.next_due(again) is None


def test_a_task_with_no_candidates_at_all_escalates_at_once() -> None:
    started, changes = offered([])
    assert started.status == "escalated"
    assert [(c.event, c.data["reason"]) for c in changes] == [("task.escalated", "no_candidates")]


def test_staff_assign_an_escalated_task() -> None:
    started, _ = offered([])
    assigned, changes = domain.assign(started, "v7", NOW)
    assert assigned.status == "accepted" and assigned.assignee == "v7"
    assert events(changes) == [("task.accepted", "v7")]


def test_check_in_then_out_completes_with_the_minutes_between() -> None:
    accepted, _ = domain.answer(offered(["v1"])[0], "v1", accept=True, now=NOW, rules=RULES)
    with pytest.raises(domain.DispatchError):
        domain.check_out(accepted, "v1", NOW)
    with pytest.raises(domain.NotYourTask):
        domain.check_in(accepted, "v2", NOW)
    working = domain.check_in(accepted, "v1", NOW)
    later = NOW + timedelta(minutes=95, seconds=40)
    done, changes, minutes = domain.check_out(working, "v1", later)
    assert done.status == "completed" and minutes == 95
    assert changes[0].event == "task.completed" and changes[0].data["minutes"] == 95


def test_a_task_past_its_due_time_is_overdue_once_and_a_completed_one_never() -> None:
    due = task(due_at=NOW + timedelta(days=1))
    late, changes = domain.lapse(due, NOW + timedelta(days=2), RULES)
    assert [c.event for c in changes] == ["task.overdue"] and late.overdue_raised
    assert domain.lapse(late, NOW + timedelta(days=3), RULES)[1] == []
    done = task(due_at=NOW + timedelta(days=1), status="completed")
    assert domain.lapse(done, NOW + timedelta(days=2), RULES)[1] == []


def test_events_carry_ids_and_codes_only() -> None:
    _, changes = offered(["v1"])
    assert set(changes[0].data) == {
        "task_id", "community", "grid_cell", "kind", "volunteer_id", "at", "deadline", "rank",
    }  # fmt: skip
