"""The disclosure log's pure parts: entries, monthly figures, checkpoints, offline verification."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shequ_services.disclosure import checkpoint, domain, merkle, verify

NOW = datetime(2026, 11, 23, 9, 30, 0, 123000, tzinfo=UTC)
COMMUNITY = "hx-guihua"


def notice(**changes: Any) -> domain.EntryDraft:
    fields: dict[str, Any] = {
        "kind": "notice", "cadence": "ad_hoc", "community": COMMUNITY, "period": "2026-11",
        "title": "停水通知", "body": {"text": "周三上午停水"},
    }  # fmt: skip
    fields.update(changes)
    return domain.EntryDraft(**fields)


def log_of(drafts: list[domain.EntryDraft]) -> list[domain.Entry]:
    return [domain.seal(d, index=i, published_at=NOW) for i, d in enumerate(drafts)]


# Entries.


def test_an_entrys_bytes_are_canonical_json_with_its_index_and_time() -> None:
    entry = domain.seal(notice(), index=7, published_at=NOW)
    assert (
        entry.leaf
        == (
            '{"body":{"text":"周三上午停水"},"cadence":"ad_hoc","community":"hx-guihua",'
            '"index":7,"kind":"notice","origin":"events","period":"2026-11","published_at":'
            '"2026-11-23T09:30:00.123+00:00","references":[],"supersedes":null,'
            '"title":"停水通知","v":1}'
        ).encode()
    )
    assert domain.fields_match_leaf(entry)


def test_a_float_has_no_single_spelling_and_is_refused() -> None:
    with pytest.raises(domain.InvalidEntry) as refused:
        domain.seal(notice(body={"amount": 12.5}), index=0, published_at=NOW)
    assert refused.value.field == "body.amount"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "gossip"}, "kind"),
        ({"cadence": "weekly"}, "cadence"),
        ({"period": "2026-13"}, "period"),
        ({"period": "November"}, "period"),
        ({"supersedes": 3}, "supersedes"),
    ],
)
def test_a_draft_that_breaks_a_rule_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(domain.InvalidEntry) as refused:
        domain.seal(notice(**changes), index=3, published_at=NOW)
    assert refused.value.field == field


def test_a_correction_may_only_name_an_earlier_entry() -> None:
    assert domain.seal(notice(supersedes=2), index=3, published_at=NOW).supersedes == 2


def test_the_board_month_is_the_month_in_shanghai() -> None:
    late_utc = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 1 December, 01:00 in Shanghai
    assert domain.month_of(late_utc) == "2026-12"
    assert domain.previous_month(datetime(2026, 1, 5).date()) == "2025-12"


def test_a_sensitive_conclusion_carries_no_category_and_no_reference() -> None:
    draft = domain.incident_concluded(
        incident_id="INC-9", category="new_pregnancy", sensitive=True, community=COMMUNITY,
        outcome="closed_resolved", answered_in_time=True, at=NOW,
    )  # fmt: skip
    assert draft.references == () and draft.body["category"] is None
    assert "INC-9" not in draft.title and "孕" not in json.dumps(draft.body, ensure_ascii=False)


# Monthly figures.


def incident_log() -> list[domain.Entry]:
    def received(incident: str, category: str, sensitive: bool = False) -> domain.EntryDraft:
        return domain.incident_received(
            incident_id=incident, category=category, category_name="类别", sensitive=sensitive,
            community=COMMUNITY, urgency="ordinary", reported_at=NOW,
        )  # fmt: skip

    def concluded(incident: str, outcome: str, in_time: bool | None) -> domain.EntryDraft:
        return domain.incident_concluded(
            incident_id=incident, category="facility_damaged", sensitive=False,
            community=COMMUNITY, outcome=outcome, answered_in_time=in_time, at=NOW,
        )  # fmt: skip

    def rated(incident: str, score: int, sensitive: bool = False) -> domain.EntryDraft:
        return domain.incident_rated(
            incident_id=incident, category="facility_damaged", sensitive=sensitive,
            community=COMMUNITY, outcome="closed_resolved", score=score, at=NOW,
        )  # fmt: skip

    return log_of(
        [
            received("A", "facility_damaged"),
            received("B", "facility_damaged"),
            received("C", "alley_unclean"),
            received("S", "new_pregnancy", sensitive=True),
            concluded("A", "closed_resolved", True),
            concluded("B", "closed_unresolved", False),
            concluded("C", "rejected", True),
            rated("A", 2),
            rated("A", 5),  # A reopened, closed and rated again: one voice, the latest
            rated("B", 1),
            rated("S", 4, sensitive=True),
            notice(community="hx-qingyuan"),  # another community: not counted
            domain.mediation_statistics({"agreed": 1}, community=COMMUNITY, month="2026-11",
                                        supersedes=None),
            domain.mediation_statistics({"agreed": 3, "failed": 1}, community=COMMUNITY,
                                        month="2026-11", supersedes=12),
            domain.volunteer_hours(150, 2, community=COMMUNITY, month="2026-11", supersedes=None),
        ]
    )  # fmt: skip


def test_monthly_figures_follow_their_written_definitions() -> None:
    figures = domain.monthly_figures(incident_log(), community=COMMUNITY, month="2026-11")
    assert figures["received"] == {"alley_unclean": 1, "facility_damaged": 2, "personal": 1}
    assert figures["concluded"] == {"closed_resolved": 1, "closed_unresolved": 1, "rejected": 1}
    assert figures["response_rate"] == {"numerator": 2, "denominator": 3, "permille": 667}
    assert figures["resolution_rate"] == {"numerator": 1, "denominator": 2, "permille": 500}
    # A's latest 5, B's 1, the unlinked sensitive 4: two of three satisfied.
    assert figures["satisfaction_rate"] == {"numerator": 2, "denominator": 3, "permille": 667}
    # The correction replaces the counts it supersedes; they are not added.
    assert figures["mediation_closed"] == {"agreed": 3, "failed": 1}
    assert figures["mediation_agreement_rate"]["permille"] == 750
    assert (figures["volunteer_minutes"], figures["volunteer_records"]) == (150, 2)


def test_published_figures_are_never_counted_as_inputs() -> None:
    entries = incident_log()
    figures = domain.monthly_figures(entries, community=COMMUNITY, month="2026-11")
    published = domain.seal(
        domain.figures_entry(figures, community=COMMUNITY, month="2026-11", supersedes=None),
        index=len(entries),
        published_at=NOW,
    )
    assert domain.monthly_figures([*entries, published], community=COMMUNITY, month="2026-11") == (
        figures
    )


def test_what_staff_publish_is_shown_but_never_counted_in_the_figures() -> None:
    entries = incident_log()
    staff_rating = domain.seal(
        notice(kind="staff_evaluation", body={"score": 1}, origin="staff"),
        index=len(entries),
        published_at=NOW,
    )
    counted = domain.monthly_figures(entries, community=COMMUNITY, month="2026-11")
    assert (
        domain.monthly_figures([*entries, staff_rating], community=COMMUNITY, month="2026-11")
        == counted
    )


def test_an_empty_month_has_rates_without_a_value() -> None:
    figures = domain.monthly_figures([], community=COMMUNITY, month="2026-10")
    assert figures["response_rate"] == {"numerator": 0, "denominator": 0, "permille": None}


# Checkpoints and witnesses.


def signer(**witnesses: bytes) -> checkpoint.LogSigner:
    key = checkpoint.load_private_key(checkpoint.new_private_key())
    return checkpoint.LogSigner("shequ.test/disclosure", key, witnesses)


def test_a_checkpoint_signature_covers_origin_size_and_root() -> None:
    log = signer()
    signed = log.sign_checkpoint(5, b"r" * 32, NOW)
    assert (
        signed.body
        == f"shequ.test/disclosure\n5\n{base64.b64encode(b'r' * 32).decode()}\n".encode()
    )
    assert checkpoint.signature_valid(log.public_key, signed.body, signed.signature)
    other = checkpoint.checkpoint_body("shequ.test/disclosure", 6, b"r" * 32)
    assert not checkpoint.signature_valid(log.public_key, other, signed.signature)


def test_a_witness_cosignature_is_accepted_only_from_its_configured_key() -> None:
    witness_key = checkpoint.load_private_key(checkpoint.new_private_key())
    log = signer(office=checkpoint.public_key_of(witness_key))
    signed = log.sign_checkpoint(5, b"r" * 32, NOW)
    good = checkpoint.sign(witness_key, checkpoint.cosignature_message(signed.body, 1700000000))
    assert log.check_cosignature(signed, "office", 1700000000, good).witness == "office"
    with pytest.raises(checkpoint.BadSignature):
        log.check_cosignature(signed, "office", 1700000001, good)  # another time
    with pytest.raises(checkpoint.UnknownWitness):
        log.check_cosignature(signed, "stranger", 1700000000, good)


@pytest.mark.parametrize(
    "value",
    ["office", "office=not-base64!", f"office={base64.b64encode(b'short').decode()}",
     f"of fice={base64.b64encode(b'k' * 32).decode()}"],
)  # fmt: skip
def test_a_bad_witness_setting_is_refused_with_a_reason(value: str) -> None:
    with pytest.raises(checkpoint.InvalidKey):
        checkpoint.parse_witnesses(value)


# Offline verification of a downloaded copy.


def copy_of(entries: list[domain.Entry], log: checkpoint.LogSigner) -> dict[str, Any]:
    frontier: list[bytes] = []
    for entry in entries:
        frontier, _ = merkle.append(frontier, entry.index, entry.leaf)
    signed = log.sign_checkpoint(len(entries), merkle.root_from_frontier(frontier), NOW)
    return {
        "checkpoint": {
            "origin": signed.origin, "size": signed.size, "cosignatures": [],
            "root_hash": checkpoint.b64(signed.root_hash),
            "signature": checkpoint.b64(signed.signature),
        },
        "public_key": {"public_key": checkpoint.b64(log.public_key), "witnesses": []},
        "entries": [
            {"index": e.index, "kind": e.kind, "cadence": e.cadence, "community": e.community,
             "period": e.period, "title": e.title, "body": dict(e.body),
             "references": list(e.references), "supersedes": e.supersedes, "origin": e.origin,
             "published_at": e.published_at.isoformat(), "leaf": checkpoint.b64(e.leaf)}
            for e in entries
        ],
    }  # fmt: skip


def test_an_untouched_copy_verifies_against_the_pinned_key() -> None:
    log = signer()
    report = verify.verify_copy(copy_of(incident_log(), log), pinned_key=log.public_key)
    assert report.ok and report.checked_entries == 15 and not report.warnings


def test_a_copy_verified_with_its_own_key_says_so() -> None:
    report = verify.verify_copy(copy_of(incident_log(), signer()))
    assert report.ok and report.warnings


def test_a_copy_signed_by_another_key_fails() -> None:
    report = verify.verify_copy(copy_of(incident_log(), signer()), pinned_key=signer().public_key)
    assert not report.ok and "not signed" in report.problems[0]


def test_an_edited_field_fails_at_that_entry() -> None:
    log = signer()
    copy = copy_of(incident_log(), log)
    copy["entries"][3]["title"] = "（已改）"
    report = verify.verify_copy(copy, pinned_key=log.public_key)
    assert report.problems == ["entry 3: title shown differ from its hashed bytes"]


def test_edited_bytes_break_the_signed_root() -> None:
    log = signer()
    copy = copy_of(incident_log(), log)
    forged = domain.seal(notice(title="（已改）"), index=3, published_at=NOW)
    copy["entries"][3].update(
        title="（已改）", kind="notice", cadence="ad_hoc", body=dict(forged.body), references=[],
        leaf=checkpoint.b64(forged.leaf),
    )  # fmt: skip
    report = verify.verify_copy(copy, pinned_key=log.public_key)
    assert len(report.problems) == 1 and "do not make the signed tree" in report.problems[0]


def test_a_removed_or_swapped_entry_fails() -> None:
    log = signer()
    removed = copy_of(incident_log(), log)
    del removed["entries"][-1]
    assert not verify.verify_copy(removed, pinned_key=log.public_key).ok
    swapped = copy_of(incident_log(), log)
    swapped["entries"][1], swapped["entries"][2] = swapped["entries"][2], swapped["entries"][1]
    assert not verify.verify_copy(swapped, pinned_key=log.public_key).ok


def test_a_file_that_is_not_a_copy_is_reported_not_raised() -> None:
    report = verify.verify_copy({"entries": []})
    assert not report.ok and "not a disclosure log copy" in report.problems[0]
