"""The mediation case lifecycle: every path through the table, refusals and versions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shequ_services.mediation import domain, workflow
from shequ_services.mediation.domain import Case, Party, Policy

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
POLICY = Policy()
MEDIATOR = frozenset({"mediator"})
STAFF = frozenset({"community_staff"})


def new_case() -> Case:
    return Case(
        id="MED-c1-2026-00000001", incident_id="INC-1", community="c1",
        dispute_type="neighbour_dispute", status="intake", opened_at=NOW,
        clock=domain.new_clock(NOW, POLICY),
        parties=[Party("P1", "applicant", "张三"), Party("P2", "respondent", "李四")],
    )  # fmt: skip


def step(
    case: Case, action: str, roles: frozenset[str] = MEDIATOR, actor: str = "med-1",
    at: datetime = NOW, **fields: Any,
) -> Case:  # fmt: skip
    _, updated = workflow.decide(
        case, action, expected_version=case.version, actor=actor, roles=roles, fields=fields,
        at=at, policy=POLICY,
    )  # fmt: skip
    # The store bumps the version on write; do the same so the next step is current.
    return replace(updated, version=case.version + 1)


def assigned() -> Case:
    return step(new_case(), "assign", STAFF, actor="staff-1",
                assignment={"mediator_id": "med-1", "method": "auto"})  # fmt: skip


def in_session() -> Case:
    return step(assigned(), "schedule_session", session_at=NOW + timedelta(days=2), place="调解室")


AGREEMENT = {
    "facts": "楼上漏水", "issues": "维修费用", "responsibilities": None,
    "obligations": [{"party_id": "P2", "obligation": "赔偿800元", "manner": "转账",
                     "due_on": date(2026, 12, 31)}],
    "signatures": [{"party_id": "P1", "signed": True}, {"party_id": "P2", "signed": True}],
    "mediator_signed": True, "signed_on": date(2026, 11, 23),
}  # fmt: skip


def agreed() -> Case:
    return step(in_session(), "agree", agreement=AGREEMENT)


def test_a_case_goes_from_intake_to_agreement_confirmation_and_closing() -> None:
    case = agreed()
    assert case.status == "agreed" and case.clock.stopped_at == NOW
    assert case.confirmation == {"status": "none", "deadline": "2026-12-23", "court": None}
    case = step(case, "follow_up", performance="performed", notes="已付款")
    case = step(case, "file_confirmation", STAFF, court="hx-court", filed_on=date(2026, 11, 23))
    with pytest.raises(workflow.CaseBlocked):
        step(case, "close", STAFF)
    case = step(case, "decide_confirmation", STAFF, decision="confirmed")
    case = step(case, "close", STAFF)
    assert (case.status, case.outcome, case.closed_at) == ("closed", "agreed", NOW)
    assert [h["action"] for h in case.history] == [
        "assign", "schedule_session", "agree", "follow_up", "file_confirmation",
        "decide_confirmation", "close",
    ]  # fmt: skip


def test_a_failed_case_is_referred_and_closes_as_referred() -> None:
    case = step(in_session(), "fail", reason="分歧过大")
    case = step(case, "refer", STAFF, court="hx-court")
    assert case.referral is not None and case.referral["court"] == "hx-court"
    assert step(case, "close", STAFF).outcome == "referred"


def test_a_withdrawn_case_closes_as_withdrawn() -> None:
    case = step(new_case(), "withdraw", STAFF, reason="申请人撤回")
    assert step(case, "close", STAFF).outcome == "withdrawn"


def test_an_illegal_step_says_what_is_allowed() -> None:
    with pytest.raises(workflow.IllegalTransition) as refused:
        step(new_case(), "agree", agreement=AGREEMENT)
    assert refused.value.allowed == ["assign", "extend", "withdraw"]
    with pytest.raises(workflow.IllegalTransition):
        step(step(agreed(), "close", STAFF), "fail", reason="x")


def test_a_stale_version_is_refused() -> None:
    case = new_case()
    with pytest.raises(workflow.StaleVersion):
        workflow.decide(case, "withdraw", expected_version=7, actor="s", roles=STAFF,
                        fields={"reason": "x"}, at=NOW, policy=POLICY)  # fmt: skip


def test_only_the_assigned_mediator_runs_the_sessions() -> None:
    with pytest.raises(workflow.NotPermitted):
        step(assigned(), "schedule_session", actor="med-2",
             session_at=NOW + timedelta(days=1), place="调解室")  # fmt: skip
    with pytest.raises(workflow.NotPermitted):
        step(new_case(), "assign", MEDIATOR, assignment={"mediator_id": "med-1"})
    admin = step(assigned(), "schedule_session", frozenset({"admin"}), actor="root",
                 session_at=NOW + timedelta(days=1), place="调解室")  # fmt: skip
    assert admin.status == "in_session"


def test_missing_fields_are_named() -> None:
    with pytest.raises(domain.InvalidCase) as refused:
        step(assigned(), "schedule_session")
    assert set(refused.value.errors) == {"session_at", "place"}


def test_a_session_is_recorded_with_known_parties_only() -> None:
    case = in_session()
    with pytest.raises(domain.InvalidCase):
        step(case, "record_session", session_id="S1", attendance=["P1", "P9"])
    held = step(case, "record_session", session_id="S1", attendance=["P2", "P1"], notes="记录")
    assert held.sessions[0] | {"session_at": None} == {
        "id": "S1", "session_at": None, "place": "调解室", "held": True,
        "attendance": ["P1", "P2"], "notes": "记录",
    }  # fmt: skip


def test_an_extension_needs_consent_and_stays_within_policy() -> None:
    case = in_session()
    with pytest.raises(domain.InvalidCase):
        step(case, "extend", STAFF, days=10, reason="需要鉴定", parties_consent=False)
    with pytest.raises(domain.InvalidCase):
        step(case, "extend", STAFF, days=31, reason="需要鉴定", parties_consent=True)
    extended = step(case, "extend", STAFF, days=10, reason="需要鉴定", parties_consent=True)
    assert extended.clock.deadline == case.clock.deadline + timedelta(days=10)
    assert extended.status == "in_session"


def test_filing_after_the_window_is_refused() -> None:
    late = NOW + timedelta(days=40)
    with pytest.raises(domain.ConfirmationWindowClosed):
        step(agreed(), "file_confirmation", STAFF, at=late, court="hx-court",
             filed_on=date(2026, 12, 24))  # fmt: skip


def test_a_decision_needs_a_filing_first() -> None:
    with pytest.raises(workflow.CaseBlocked):
        step(agreed(), "decide_confirmation", STAFF, decision="confirmed")


def test_free_text_stays_out_of_the_history_except_reasons() -> None:
    case = step(agreed(), "follow_up", performance="performed", notes="张三已付款")
    fields = [h["fields"] for h in case.history]
    assert all("agreement" not in f and "notes" not in f for f in fields)


def test_every_state_is_reachable_and_every_action_leads_somewhere_known() -> None:
    reachable = {"intake"}
    for rule in workflow.RULES.values():
        assert set(rule.from_states) <= set(workflow.STATES)
        if rule.to_state:
            reachable.add(rule.to_state)
    assert reachable == set(workflow.STATES)
