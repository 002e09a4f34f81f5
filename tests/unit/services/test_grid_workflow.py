from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shequ_services.grid import workflow
from shequ_services.grid.workflow import RULES, STATES

AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
CLOSED_AT = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)

# A value good enough for every required field of every action.
GOOD_FIELDS: dict[str, Any] = {
    "reason": "不属于本部门职责",
    "department": "city_management",
    "feedback": "已修复路灯",
    "outcome": "resolved",
    "target_date": "2026-12-31",
}


def step(
    state: str, action: str, *, roles: frozenset[str] | None = None, **overrides: Any
) -> workflow.Transition:
    """Apply ``action`` with a role and fields that satisfy it unless overridden."""
    rule = RULES[action]
    args: dict[str, Any] = {
        "expected_version": 3,
        "actor": "u-1",
        "roles": roles if roles is not None else frozenset({sorted(rule.roles)[0]}),
        "fields": {name: GOOD_FIELDS[name] for name in rule.requires},
        "at": AT,
        "closed_at": CLOSED_AT,
        "reporter": "u-1",
    }
    args.update(overrides)
    return workflow.apply(state, 3, action, **args)


def legal_moves() -> list[tuple[str, str, str, str | None]]:
    """Every (action, from, to, choice value) the table allows."""
    moves = []
    for action, rule in RULES.items():
        for from_state in rule.from_states:
            if rule.choice is None:
                moves.append((action, from_state, rule.to_state, None))
            else:
                for value, to_state in rule.outcomes.items():
                    moves.append((action, from_state, to_state, value))
    return moves


@pytest.mark.parametrize(("action", "from_state", "to_state", "choice"), legal_moves())
def test_every_legal_move_in_the_table_leads_to_its_target_state(
    action: str, from_state: str, to_state: str, choice: str | None
) -> None:
    fields = {name: GOOD_FIELDS[name] for name in RULES[action].requires}
    if choice is not None:
        fields["outcome"] = choice
    transition = step(from_state, action, fields=fields)
    assert (transition.action, transition.from_state, transition.to_state) == (
        action,
        from_state,
        to_state,
    )
    assert transition.actor == "u-1"
    assert transition.at == AT


@pytest.mark.parametrize("action", sorted(RULES))
def test_every_role_listed_for_an_action_may_take_it(action: str) -> None:
    rule = RULES[action]
    for role in rule.roles:
        assert step(rule.from_states[0], action, roles=frozenset({role})).roles_used == {role}


def test_every_state_in_the_table_is_a_known_state() -> None:
    for rule in RULES.values():
        assert set(rule.from_states) <= set(STATES)
        assert set(rule.targets()) <= set(STATES)


def test_every_state_but_reported_can_be_reached() -> None:
    reached = {target for rule in RULES.values() for target in rule.targets()}
    assert reached == set(STATES) - {"reported"}


def test_rejected_is_the_only_state_with_no_way_out() -> None:
    assert [state for state in STATES if not workflow.allowed_actions(state)] == ["rejected"]


def test_allowed_actions_from_dispatched_follow_the_table_order() -> None:
    assert workflow.allowed_actions("dispatched") == ["return_case", "start", "defer"]


def test_allowed_actions_of_an_unknown_state_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown incident state"):
        workflow.allowed_actions("lost")


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("reported", "dispatch"),
        ("accepted", "start"),
        ("handled", "reopen"),
        ("closed_resolved", "accept"),
        ("rejected", "accept"),
        ("deferred", "report_handled"),
    ],
)
def test_an_illegal_move_is_refused_with_the_actions_the_state_allows(
    state: str, action: str
) -> None:
    with pytest.raises(workflow.IllegalTransition) as caught:
        step(state, action, roles=frozenset({"admin"}))
    assert caught.value.state == state
    assert caught.value.action == action
    assert caught.value.allowed == workflow.allowed_actions(state)
    for allowed in caught.value.allowed:
        assert allowed in str(caught.value)


def test_the_refusal_message_names_the_allowed_actions() -> None:
    with pytest.raises(workflow.IllegalTransition, match="allowed: accept, reject"):
        step("reported", "start", roles=frozenset({"department"}))


def test_a_move_out_of_rejected_says_none_is_allowed() -> None:
    with pytest.raises(workflow.IllegalTransition, match="allowed: none"):
        step("rejected", "accept", roles=frozenset({"admin"}))


def test_an_unknown_action_is_an_illegal_transition() -> None:
    with pytest.raises(workflow.IllegalTransition) as caught:
        workflow.apply(
            "reported",
            1,
            "teleport",
            expected_version=1,
            actor="u-1",
            roles=frozenset({"admin"}),
            fields={},
            at=AT,
        )
    assert caught.value.allowed == ["accept", "reject"]


def test_a_stale_version_is_refused_with_both_versions() -> None:
    with pytest.raises(workflow.StaleVersion) as caught:
        step("reported", "accept", expected_version=2)
    assert (caught.value.expected, caught.value.actual) == (2, 3)


def test_a_stale_version_is_reported_before_an_illegal_move() -> None:
    with pytest.raises(workflow.StaleVersion):
        step("rejected", "accept", roles=frozenset({"admin"}), expected_version=1)


def test_an_illegal_move_is_reported_before_a_role_refusal() -> None:
    with pytest.raises(workflow.IllegalTransition):
        step("reported", "start", roles=frozenset({"resident"}))


def test_a_role_refusal_is_reported_before_a_missing_field() -> None:
    with pytest.raises(workflow.TransitionNotPermitted):
        step("reported", "reject", roles=frozenset({"resident"}), fields={})


@pytest.mark.parametrize(
    ("state", "action", "role"),
    [
        ("reported", "accept", "resident"),
        ("reported", "reject", "grid_worker"),
        ("accepted", "dispatch", "department"),
        ("dispatched", "return_case", "community_staff"),
        ("dispatched", "start", "grid_worker"),
        ("in_progress", "report_handled", "admin"),
        ("handled", "check", "department"),
        ("in_progress", "defer", "department"),
        ("deferred", "resume", "grid_worker"),
        ("closed_resolved", "reopen", "community_staff"),
    ],
)
def test_a_role_not_listed_for_the_action_is_refused(state: str, action: str, role: str) -> None:
    with pytest.raises(workflow.TransitionNotPermitted, match=action):
        step(state, action, roles=frozenset({role}))


def test_a_caller_with_no_roles_is_refused() -> None:
    with pytest.raises(workflow.TransitionNotPermitted):
        step("reported", "accept", roles=frozenset())


def test_roles_used_records_only_the_roles_that_granted_the_move() -> None:
    transition = step("reported", "accept", roles=frozenset({"grid_worker", "resident"}))
    assert transition.roles_used == frozenset({"grid_worker"})


@pytest.mark.parametrize(
    ("state", "action", "missing"),
    [
        ("reported", "reject", "reason"),
        ("accepted", "dispatch", "department"),
        ("dispatched", "return_case", "reason"),
        ("in_progress", "report_handled", "feedback"),
        ("handled", "check", "outcome"),
        ("in_progress", "defer", "reason"),
        ("in_progress", "defer", "target_date"),
        ("closed_unresolved", "reopen", "reason"),
    ],
)
def test_a_missing_required_field_is_named(state: str, action: str, missing: str) -> None:
    fields = {name: GOOD_FIELDS[name] for name in RULES[action].requires if name != missing}
    with pytest.raises(workflow.MissingField) as caught:
        step(state, action, fields=fields)
    assert caught.value.field == missing


def test_a_blank_reason_counts_as_missing() -> None:
    with pytest.raises(workflow.MissingField) as caught:
        step("reported", "reject", fields={"reason": "   "})
    assert caught.value.field == "reason"


def test_a_check_outcome_outside_the_three_choices_is_invalid() -> None:
    with pytest.raises(workflow.InvalidField) as caught:
        step("handled", "check", fields={"outcome": "maybe"})
    assert caught.value.field == "outcome"


def test_a_defer_target_date_that_is_not_a_date_is_invalid() -> None:
    with pytest.raises(workflow.InvalidField, match="target_date"):
        step("in_progress", "defer", fields={"reason": "等待资金", "target_date": "next spring"})


def test_a_defer_target_date_string_is_kept_as_a_date() -> None:
    transition = step(
        "in_progress", "defer", fields={"reason": "等待资金", "target_date": "2027-03-01"}
    )
    assert transition.fields["target_date"] == date(2027, 3, 1)


def test_fields_the_action_does_not_know_are_left_out_of_the_transition() -> None:
    transition = step(
        "reported", "reject", fields={"reason": "重复上报", "note": "见INC-1", "phone": "138"}
    )
    assert transition.fields == {"reason": "重复上报", "note": "见INC-1"}


def test_a_resolved_and_an_unresolved_check_close_into_different_states() -> None:
    resolved = step("handled", "check", fields={"outcome": "resolved"})
    unresolved = step("handled", "check", fields={"outcome": "unresolved"})
    assert resolved.to_state == "closed_resolved"
    assert unresolved.to_state == "closed_unresolved"
    assert resolved.to_state != unresolved.to_state


def test_a_returned_case_is_accepted_again_and_can_be_dispatched_anew() -> None:
    returned = step("dispatched", "return_case")
    assert returned.to_state == "accepted"
    assert step(returned.to_state, "dispatch").to_state == "dispatched"


def test_the_reporter_may_reopen_inside_the_window() -> None:
    transition = step("closed_resolved", "reopen", at=CLOSED_AT + timedelta(days=6))
    assert transition.to_state == "reopened"


def test_a_reopen_exactly_at_the_end_of_the_window_is_accepted() -> None:
    transition = step("closed_resolved", "reopen", at=CLOSED_AT + timedelta(days=7))
    assert transition.to_state == "reopened"


def test_a_reopen_after_the_window_is_refused() -> None:
    late = CLOSED_AT + timedelta(days=7, microseconds=1)
    with pytest.raises(workflow.ReopenWindowClosed):
        step("closed_unresolved", "reopen", at=late)


def test_the_reopen_window_is_a_parameter() -> None:
    with pytest.raises(workflow.ReopenWindowClosed):
        step(
            "closed_resolved",
            "reopen",
            at=CLOSED_AT + timedelta(days=2),
            reopen_window=timedelta(days=1),
        )


def test_a_resident_who_did_not_report_the_case_may_not_reopen_it() -> None:
    with pytest.raises(workflow.TransitionNotPermitted, match="reporter"):
        step("closed_resolved", "reopen", reporter="someone-else")


def test_a_reopen_without_the_reporter_given_is_refused() -> None:
    with pytest.raises(workflow.TransitionNotPermitted):
        step("closed_resolved", "reopen", reporter=None)


def test_a_reopen_without_closed_at_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="closed_at"):
        step("closed_resolved", "reopen", closed_at=None)


def test_describe_lists_one_row_per_action_with_its_rules() -> None:
    rows = {row["action"]: row for row in workflow.describe()}
    assert set(rows) == set(RULES)
    assert rows["defer"]["from_states"] == ["dispatched", "in_progress"]
    assert rows["defer"]["requires"] == ["reason", "target_date"]
    assert rows["check"]["to_states"] == ["closed_resolved", "closed_unresolved", "reopened"]
    assert rows["reject"]["roles"] == ["admin", "community_staff"]
