"""Mediation's pure rules: who sees parties, time limits, recusal, the document."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from shequ import sealing
from shequ_services.mediation import document, domain, roster
from shequ_services.mediation.domain import Case, Party, Policy

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
POLICY = Policy()


def keyring(active: str = "k1") -> sealing.Keyring:
    keys = f"k1:{sealing.new_key()},k2:{sealing.new_key()}"
    return sealing.Keyring.from_config(keys, active, sealing.new_key())


# -- who sees parties ------------------------------------------------------------------


def test_a_bad_id_number_or_a_missing_name_is_refused_per_field() -> None:
    with pytest.raises(domain.InvalidCase) as refused:
        domain.check_parties(
            [Party("P1", "applicant", "", id_number="12345678901234567Y"), Party("P2", "x", "李四")]
        )
    assert set(refused.value.errors) == {"parties.0.name", "parties.0.id_number", "parties.1.role"}


# -- time limits --------------------------------------------------------------------


def test_the_time_limit_ends_a_calendar_month_later_at_local_midnight() -> None:
    clock = domain.new_clock(datetime(2026, 1, 31, 3, 0, tzinfo=UTC), POLICY)
    local = clock.deadline.astimezone(POLICY.timezone)
    assert (local.date(), local.hour, local.minute) == (date(2026, 2, 28), 23, 59)
    assert clock.deadline - clock.warn_at == timedelta(days=5)


def test_alerts_fall_due_once_each_and_not_after_the_clock_stops() -> None:
    clock = domain.new_clock(NOW, POLICY)
    assert domain.due_alerts(clock, NOW) == []
    assert domain.due_alerts(clock, clock.warn_at) == ["warned"]
    warned = domain.mark_raised(clock, ["warned"], clock.warn_at)
    assert domain.due_alerts(warned, clock.deadline) == ["overdue"]
    both = domain.mark_raised(warned, ["overdue"], clock.deadline)
    assert domain.due_alerts(both, clock.deadline + timedelta(days=9)) == []
    assert both.next_due() is None
    assert domain.due_alerts(domain.stop_clock(clock, NOW), clock.deadline) == []


def test_an_extension_moves_the_deadline_and_rearms_the_alerts() -> None:
    clock = domain.mark_raised(domain.new_clock(NOW, POLICY), ["warned"], NOW)
    extended = domain.extend_clock(clock, 10, POLICY)
    assert extended.deadline == clock.deadline + timedelta(days=10)
    assert extended.warned_at is None


# -- judicial confirmation window -----------------------------------------------------


def test_the_confirmation_window_is_thirty_days_from_the_agreement() -> None:
    assert domain.confirmation_deadline(date(2026, 11, 23), POLICY) == date(2026, 12, 23)


@pytest.mark.parametrize(
    ("filed_on", "accepted"),
    [(date(2026, 11, 23), True), (date(2026, 12, 23), True), (date(2026, 12, 24), False)],
)
def test_filing_is_accepted_up_to_the_last_day_of_the_window(
    filed_on: date, accepted: bool
) -> None:
    case = _agreed(signed_on=date(2026, 11, 23))
    today = date(2027, 1, 10)
    if accepted:
        domain.check_filing(case, filed_on, today)
    else:
        with pytest.raises(domain.ConfirmationWindowClosed):
            domain.check_filing(case, filed_on, today)


def test_a_filing_before_the_agreement_or_in_the_future_is_invalid() -> None:
    case = _agreed(signed_on=date(2026, 11, 23))
    with pytest.raises(domain.InvalidCase):
        domain.check_filing(case, date(2026, 11, 22), date(2026, 11, 30))
    with pytest.raises(domain.InvalidCase):
        domain.check_filing(case, date(2026, 12, 1), date(2026, 11, 30))


def test_an_agreement_needs_every_party_signature_and_the_mediator() -> None:
    case = _case()
    agreement = _agreement(signatures=[{"party_id": "P1", "signed": True}], mediator_signed=False)
    with pytest.raises(domain.InvalidCase) as refused:
        domain.check_agreement(case, agreement, date(2026, 11, 30))
    assert set(refused.value.errors) == {"agreement.signatures", "agreement.mediator_signed"}


# -- the referral packet ----------------------------------------------------------------


def test_the_referral_packet_carries_parties_and_the_failure_but_no_notes_or_buildings() -> None:
    case = _case(
        status="referred",
        sessions=[{"id": "S1", "held": True, "notes": "张三说了很多私事", "attendance": ["P1"]}],
        referral={"court": "hx-court"},
        history=[{"action": "fail", "at": NOW, "fields": {"reason": "双方分歧过大"}}],
    )
    packet = domain.referral_packet(case)
    text = json.dumps(packet, default=str, ensure_ascii=False)
    assert packet["parties"][0]["name"] == "张三" and packet["failure_reason"] == "双方分歧过大"
    assert packet["sessions_held"] == 1 and packet["court"] == "hx-court"
    assert "私事" not in text and "qy-01-b02" not in text and "building" not in text


# -- roster and recusal -----------------------------------------------------------------


def _mediators(ring: sealing.Keyring) -> list[roster.Mediator]:
    def m(
        mid: str, name: str, building: str, expertise: tuple[str, ...] = (), **kw
    ) -> roster.Mediator:
        return roster.Mediator(
            id=mid, name=name, community="c1", expertise=expertise,
            name_index=ring.blind_index("name", name),
            building_index=ring.blind_index("building", building), **kw,
        )  # fmt: skip

    return [
        m("m1", "陈桂兰", "b1", ("neighbour_dispute",)),
        m("m2", "刘建华", "b2", ("neighbour_dispute",),
          relative_indexes=(ring.blind_index("name", "李四"),)),
        m("m3", "张三", "b3"),
        m("m4", "王五", "b4", ("neighbour_dispute",), available=False),
    ]  # fmt: skip


def _parties(ring: sealing.Keyring) -> roster.PartyIndexes:
    return roster.PartyIndexes(
        names=frozenset({ring.blind_index("name", "张三"), ring.blind_index("name", "李四")}),
        buildings=frozenset({ring.blind_index("building", "b1")}),
    )


def test_recusal_excludes_a_party_a_relative_and_a_neighbour() -> None:
    ring = keyring()
    reasons = {m.id: roster.recusal_reasons(m, _parties(ring)) for m in _mediators(ring)}
    assert reasons == {"m1": ["same_building"], "m2": ["relative"], "m3": ["party"], "m4": []}


def test_nobody_eligible_means_no_automatic_assignment() -> None:
    ring = keyring()
    with pytest.raises(roster.AssignmentRefused):
        roster.assign(_mediators(ring), {}, community="c1", dispute_type="neighbour_dispute",
                      parties=_parties(ring), at=NOW)  # fmt: skip


def test_the_rule_prefers_experts_then_the_lightest_load() -> None:
    ring = keyring()
    free = roster.PartyIndexes(frozenset(), frozenset())
    decide = lambda loads: roster.assign(  # noqa: E731
        _mediators(ring), loads, community="c1", dispute_type="neighbour_dispute",
        parties=free, at=NOW,
    )["mediator_id"]  # fmt: skip
    assert decide({}) == "m1"
    assert decide({"m1": 3, "m2": 1}) == "m2"
    assert decide({"m1": 10, "m2": 10}) == "m3"  # full experts: the non-expert takes it


def test_a_recused_mediator_needs_an_override_reason_which_is_recorded() -> None:
    ring = keyring()
    args = dict(community="c1", dispute_type="neighbour_dispute", parties=_parties(ring), at=NOW)
    with pytest.raises(roster.AssignmentRefused) as refused:
        roster.assign(_mediators(ring), {}, chosen="m2", **args)
    assert refused.value.reasons == ["relative"]
    decision = roster.assign(
        _mediators(ring), {}, chosen="m2", override_reason="当事人同意", **args
    )
    assert decision["method"] == "override" and decision["override_reason"] == "当事人同意"
    assert {c["mediator_id"]: c["excluded"] for c in decision["checked"]}["m2"] == ["relative"]
    with pytest.raises(roster.UnknownMediator):
        roster.assign(_mediators(ring), {}, chosen="m9", **args)


# -- the document ------------------------------------------------------------------------


def test_the_agreement_renders_in_chinese_with_print_css_and_escapes_markup() -> None:
    case = _agreed(signed_on=date(2026, 11, 23))
    case = Case(**{**case.__dict__, "parties": [
        Party("P1", "applicant", "张三<script>", "13812341234", "110101199003078515", "清源里1幢"),
        Party("P2", "respondent", "李四"),
    ]})  # fmt: skip
    html = document.render_agreement(case, committee="清源社区人民调解委员会")
    assert "人民调解协议书" in html and '<html lang="zh-CN">' in html and "@media print" in html
    assert "张三&lt;script&gt;" in html and "<script>" not in html
    assert "2026年11月23日" in html and "2026年12月31日前" in html
    assert "三十日内共同向人民法院申请司法确认" in html


# -- helpers -------------------------------------------------------------------------------


def _case(**changes: object) -> Case:
    base = Case(
        id="MED-c1-2026-abcd1234", incident_id=None, community="c1",
        dispute_type="neighbour_dispute", status="in_session", opened_at=NOW,
        clock=domain.new_clock(NOW, POLICY), facts="楼上漏水",
        parties=[
            Party("P1", "applicant", "张三", "13812341234", "110101199003078515", "清源里1幢",
                  "qy-01-b02"),
            Party("P2", "respondent", "李四"),
        ],
    )  # fmt: skip
    return Case(**{**base.__dict__, **changes})


def _agreement(**changes: object) -> dict[str, object]:
    base = {
        "facts": "楼上漏水致楼下天花板受损", "issues": "维修费用由谁承担",
        "obligations": [{"party_id": "P2", "obligation": "赔偿维修费800元", "manner": "现金",
                         "due_on": date(2026, 12, 31)}],
        "signatures": [{"party_id": "P1", "signed": True}, {"party_id": "P2", "signed": True}],
        "mediator_signed": True, "signed_on": date(2026, 11, 23),
    }  # fmt: skip
    return {**base, **changes}


def _agreed(signed_on: date) -> Case:
    agreement = _agreement(signed_on=signed_on)
    stored = {**agreement, "signed_on": signed_on.isoformat(), "obligations": [
        {**o, "due_on": o["due_on"].isoformat()} for o in agreement["obligations"]  # type: ignore[attr-defined]
    ]}  # fmt: skip
    deadline = domain.confirmation_deadline(signed_on, POLICY).isoformat()
    return _case(status="agreed", agreement=stored,
                 confirmation={"status": "none", "deadline": deadline, "court": None})  # fmt: skip


def test_the_agreement_rate_is_agreed_over_closed_and_undefined_without_closures() -> None:
    assert domain.agreement_rate({"agreed": 3, "failed": 1}) == 0.75
    assert domain.agreement_rate({}) is None


def test_parties_are_added_with_new_ids_and_a_history_entry_while_mediation_runs() -> None:
    case = _case()
    added = domain.add_parties(case, [{"role": "third_party", "name": "孙丽"}], facts=None,
                               expected_version=1, actor="staff-1", at=NOW)  # fmt: skip
    assert [p.id for p in added.parties] == ["P1", "P2", "P3"] and added.facts == "楼上漏水"
    assert added.history[-1]["fields"] == {"party_ids": ["P3"]}
    with pytest.raises(domain.StaleCase):
        domain.add_parties(case, [], facts=None, expected_version=2, actor="s", at=NOW)
    with pytest.raises(domain.CaseNotRunning):
        domain.add_parties(_case(status="agreed"), [], facts=None, expected_version=1,
                           actor="s", at=NOW)  # fmt: skip
