from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shequ_services.grid import workflow
from shequ_services.grid.domain import Incident
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
    "duplicate_of": "INC-20261123-0123456789ab",
}


LEAD = "city_management"
CO_HANDLER = "police"


def ready_case(action: str) -> workflow.Case:
    """Facts under which ``action`` is possible: a co-handler's part open only where needed."""
    return workflow.Case(
        lead_department=LEAD,
        co_handlers=(CO_HANDLER,),
        open_subtasks=(CO_HANDLER,) if action == "report_subtask" else (),
        extension_requested=action in ("approve_extension", "refuse_extension"),
        resolve_deadline=date(2026, 11, 26),
    )


def step(
    state: str, action: str, *, roles: frozenset[str] | None = None, **overrides: Any
) -> workflow.Transition:
    """Apply ``action`` with a role, department and fields that satisfy it unless overridden."""
    rule = RULES[action]
    args: dict[str, Any] = {
        "expected_version": 3,
        "actor": "u-1",
        "roles": roles if roles is not None else frozenset({sorted(rule.roles)[0]}),
        "fields": {name: GOOD_FIELDS[name] for name in rule.requires},
        "at": AT,
        "closed_at": CLOSED_AT,
        "reporter": "u-1",
        "actor_department": CO_HANDLER if rule.department_scope == "co_handler" else LEAD,
        "case": ready_case(action),
    }
    args.update(overrides)
    return workflow.apply(state, 3, action, **args)


def legal_moves() -> list[tuple[str, str, str, str | None]]:
    """Every (action, from, to, choice value) the table allows."""
    moves = []
    for action, rule in RULES.items():
        for from_state in rule.from_states:
            if rule.keeps_state:
                moves.append((action, from_state, from_state, None))
            elif rule.choice is None:
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


def test_rejected_and_merged_are_the_only_states_with_no_way_out() -> None:
    terminal = [state for state in STATES if not workflow.allowed_actions(state)]
    assert terminal == ["rejected", "merged"]


def test_a_duplicate_merges_before_dispatch_only_and_names_its_original() -> None:
    merged = step("accepted", "merge", fields={"duplicate_of": " INC-1 "})
    assert (merged.to_state, merged.fields) == ("merged", {"duplicate_of": "INC-1"})
    with pytest.raises(workflow.MissingField):
        step("reported", "merge", fields={})
    with pytest.raises(workflow.IllegalTransition):
        step("dispatched", "merge", fields={"duplicate_of": "INC-1"})


def test_allowed_actions_from_dispatched_follow_the_table_order() -> None:
    assert workflow.allowed_actions("dispatched") == [
        "return_case", "start", "defer",
        "report_subtask", "request_extension", "approve_extension", "refuse_extension",
    ]  # fmt: skip


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
    assert caught.value.allowed == ["accept", "reject", "merge"]


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


# Co-handling (吹哨报到)


def test_a_dispatch_may_name_co_handling_departments() -> None:
    transition = step(
        "accepted",
        "dispatch",
        fields={"department": LEAD, "co_departments": [" police ", "housing"]},
    )
    assert transition.fields["co_departments"] == ["police", "housing"]


def test_a_dispatch_without_co_handlers_names_none() -> None:
    assert step("accepted", "dispatch").fields["co_departments"] == []


@pytest.mark.parametrize(
    ("co_departments", "message"),
    [
        (["police", "police"], "named twice"),
        ([LEAD], "leads the case"),
        (["police", " "], "blank"),
        ("police", "list of department ids"),
        ([3], "list of department ids"),
    ],
)
def test_bad_co_handlers_are_invalid(co_departments: Any, message: str) -> None:
    with pytest.raises(workflow.InvalidField, match=message) as caught:
        step(
            "accepted",
            "dispatch",
            fields={"department": LEAD, "co_departments": co_departments},
        )
    assert caught.value.field == "co_departments"


def test_the_lead_cannot_report_handled_while_a_sub_task_is_open() -> None:
    case = workflow.Case(lead_department=LEAD, co_handlers=("police", "housing"),
                         open_subtasks=("housing",))  # fmt: skip
    with pytest.raises(workflow.CaseBlocked, match="housing") as caught:
        step("in_progress", "report_handled", case=case)
    assert caught.value.open_subtasks == ("housing",)


def test_the_lead_may_report_handled_once_every_sub_task_is_reported() -> None:
    case = workflow.Case(lead_department=LEAD, co_handlers=("police",), open_subtasks=())
    assert step("in_progress", "report_handled", case=case).to_state == "handled"


def test_a_co_handler_reports_its_sub_task_without_moving_the_case() -> None:
    transition = step("in_progress", "report_subtask")
    assert transition.to_state == transition.from_state == "in_progress"
    assert transition.fields == {"feedback": GOOD_FIELDS["feedback"], "co_department": CO_HANDLER}


def test_a_sub_task_reported_twice_is_refused() -> None:
    case = workflow.Case(lead_department=LEAD, co_handlers=(CO_HANDLER,), open_subtasks=())
    with pytest.raises(workflow.CaseBlocked, match="already reported"):
        step("in_progress", "report_subtask", case=case)


@pytest.mark.parametrize("department", [LEAD, "housing", None])
def test_only_a_co_handler_may_report_a_sub_task(department: str | None) -> None:
    with pytest.raises(workflow.TransitionNotPermitted, match="co-handling department"):
        step("in_progress", "report_subtask", actor_department=department)


@pytest.mark.parametrize("action", ["start", "return_case", "request_extension"])
def test_a_co_handler_may_not_act_for_the_lead(action: str) -> None:
    with pytest.raises(workflow.TransitionNotPermitted, match="lead department"):
        step("dispatched", action, actor_department=CO_HANDLER)


def test_community_staff_resume_a_deferred_case_without_being_its_department() -> None:
    transition = step("deferred", "resume", roles=frozenset({"community_staff"}),
                      actor_department=None)  # fmt: skip
    assert transition.to_state == "in_progress"


def test_a_sub_task_report_needs_feedback() -> None:
    with pytest.raises(workflow.MissingField) as caught:
        step("dispatched", "report_subtask", fields={})
    assert caught.value.field == "feedback"


def test_a_sub_task_report_from_a_closed_case_is_illegal() -> None:
    with pytest.raises(workflow.IllegalTransition):
        step("closed_resolved", "report_subtask")


def test_a_stale_sub_task_report_is_refused() -> None:
    with pytest.raises(workflow.StaleVersion):
        step("in_progress", "report_subtask", expected_version=2)


# Extensions (延期)


def test_the_lead_requests_an_extension_without_moving_the_case() -> None:
    transition = step("in_progress", "request_extension")
    assert transition.to_state == "in_progress"
    assert transition.fields["target_date"] == date(2026, 12, 31)


def test_an_extension_must_end_after_the_current_deadline() -> None:
    with pytest.raises(workflow.InvalidField, match="current deadline") as caught:
        step("in_progress", "request_extension",
             fields={"reason": "等待配件", "target_date": "2026-11-26"})  # fmt: skip
    assert caught.value.field == "target_date"


def test_an_extension_must_end_after_today() -> None:
    case = workflow.Case(lead_department=LEAD)
    with pytest.raises(workflow.InvalidField, match="after today"):
        step("in_progress", "request_extension", case=case,
             fields={"reason": "等待配件", "target_date": AT.date().isoformat()})  # fmt: skip


def test_a_second_extension_request_waits_for_the_first_decision() -> None:
    case = workflow.Case(lead_department=LEAD, extension_requested=True)
    with pytest.raises(workflow.CaseBlocked, match="already waiting"):
        step("in_progress", "request_extension", case=case)


@pytest.mark.parametrize("action", ["approve_extension", "refuse_extension"])
def test_a_decision_without_a_waiting_request_is_refused(action: str) -> None:
    with pytest.raises(workflow.CaseBlocked, match="no extension request"):
        step("in_progress", action, case=workflow.Case(lead_department=LEAD))


@pytest.mark.parametrize("role", ["department", "grid_worker", "resident"])
def test_only_community_staff_and_admins_approve_an_extension(role: str) -> None:
    with pytest.raises(workflow.TransitionNotPermitted):
        step("in_progress", "approve_extension", roles=frozenset({role}))


def test_a_refusal_needs_a_reason() -> None:
    with pytest.raises(workflow.MissingField) as caught:
        step("in_progress", "refuse_extension", fields={})
    assert caught.value.field == "reason"


@pytest.mark.parametrize("state", ["accepted", "handled", "deferred", "closed_resolved"])
def test_an_extension_outside_dispatched_or_in_progress_is_illegal(state: str) -> None:
    with pytest.raises(workflow.IllegalTransition):
        step(state, "request_extension")


def test_a_stale_extension_approval_is_refused() -> None:
    with pytest.raises(workflow.StaleVersion):
        step("in_progress", "approve_extension", expected_version=4)


# What a step changes on the incident


def incident(**overrides: Any) -> Incident:
    values: dict[str, Any] = {
        "id": "INC-1", "category": "facility_damaged", "grid_cell": "qy-01",
        "community": "hx-qingyuan", "description": "路灯", "location": None,
        "reporter": "u-9", "channel": "patrol", "urgency": "simple",
        "status": "in_progress", "reported_at": CLOSED_AT, "department": LEAD,
    }  # fmt: skip
    values.update(overrides)
    return Incident(**values)


def open_task(name: str) -> dict[str, Any]:
    return {"department": name, "status": "open", "dispatched_at": CLOSED_AT, "handled_at": None}


def test_a_dispatch_opens_one_sub_task_per_co_handler() -> None:
    case = incident(status="accepted", department=None)
    named = {"department": LEAD, "co_departments": ["police", "housing"]}
    decided = step("accepted", "dispatch", fields=named)
    effects = workflow.consequences(case, decided, None)
    assert effects.changes["department"] == LEAD
    assert [t["department"] for t in effects.changes["subtasks"]] == ["police", "housing"]
    assert effects.open_subtasks == ("police", "housing")
    assert effects.resolve_target is None


def test_a_redispatch_keeps_a_named_open_sub_task_and_drops_the_others() -> None:
    case = incident(status="accepted", subtasks=[open_task("police"), open_task("housing")])
    decided = step("accepted", "dispatch",
                   fields={"department": LEAD, "co_departments": ["police"]})  # fmt: skip
    effects = workflow.consequences(case, decided, None)
    assert effects.changes["subtasks"] == [open_task("police")]


def test_a_sub_task_report_closes_that_sub_task_only() -> None:
    case = incident(subtasks=[open_task("police"), open_task("housing")])
    effects = workflow.consequences(case, step("in_progress", "report_subtask"), "police")
    police, housing = effects.changes["subtasks"]
    assert (police["status"], police["handled_at"]) == ("handled", AT)
    assert housing == open_task("housing")
    assert effects.open_subtasks == ("housing",)


def test_an_extension_moves_the_resolve_target_only_when_approved() -> None:
    requested = workflow.consequences(incident(), step("in_progress", "request_extension"), LEAD)
    assert requested.resolve_target is None
    assert requested.changes["extension"]["status"] == "requested"
    assert requested.changes["extension"]["target_date"] == "2026-12-31"
    waiting = incident(extension=requested.changes["extension"])
    assert workflow.case_of(waiting).extension_requested
    approved = workflow.consequences(waiting, step("in_progress", "approve_extension"), None)
    assert approved.resolve_target == date(2026, 12, 31)
    assert approved.changes["extension"]["status"] == "approved"
    assert not workflow.case_of(
        incident(extension=approved.changes["extension"])
    ).extension_requested
    refused = workflow.consequences(waiting, step("in_progress", "refuse_extension"), None)
    assert refused.resolve_target is None
    assert refused.changes["extension"]["status"] == "refused"


def test_a_deferral_moves_the_resolve_target_like_an_approved_extension() -> None:
    effects = workflow.consequences(incident(), step("in_progress", "defer"), None)
    assert effects.resolve_target == date(2026, 12, 31)


def test_case_of_reads_lead_co_handlers_and_open_sub_tasks() -> None:
    done = {**open_task("housing"), "status": "handled"}
    case = workflow.case_of(incident(subtasks=[open_task("police"), done]), date(2026, 11, 26))
    assert case == workflow.Case(
        lead_department=LEAD,
        co_handlers=("police", "housing"),
        open_subtasks=("police",),
        extension_requested=False,
        resolve_deadline=date(2026, 11, 26),
    )


def test_describe_documents_the_co_handling_and_extension_rows() -> None:
    rows = {row["action"]: row for row in workflow.describe()}
    assert rows["dispatch"]["optional"] == ["co_departments", "note"]
    assert rows["report_subtask"]["department_scope"] == "co_handler"
    assert rows["request_extension"]["keeps_state"] is True
    assert rows["approve_extension"]["to_states"] == ["dispatched", "in_progress"]
