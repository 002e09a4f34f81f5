"""The hours ledger: approvals, corrections as new entries, totals and exports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shequ_services.volunteer import ledger
from shequ_services.volunteer.domain import InvalidRecord

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def entry(volunteer: str = "v1", minutes: int = 90, **extra: object) -> ledger.Entry:
    values: dict[str, object] = {
        "volunteer_id": volunteer, "community": "c1", "teams": ("t1",), "minutes": minutes,
        "served_at": NOW - timedelta(hours=3), "task_id": "VT-1", "recorded_by": volunteer,
        "now": NOW,
    }  # fmt: skip
    values.update(extra)
    return ledger.service_entry(**values)  # type: ignore[arg-type]


def approved(e: ledger.Entry) -> ledger.Entry:
    return ledger.approve(e, approver="sw-1", now=NOW)[0]


def test_approval_emits_the_minutes_without_the_volunteer_and_happens_once() -> None:
    done, changes = ledger.approve(entry(), approver="sw-1", now=NOW)
    assert done.status == "approved" and done.approved_by == "sw-1"
    assert [c.event for c in changes] == ["hours.approved"]
    assert set(changes[0].data) == {"ledger_id", "community", "minutes", "at"}
    assert changes[0].data["minutes"] == 90
    with pytest.raises(ledger.AlreadyApproved):
        ledger.approve(done, approver="sw-1", now=NOW)


def test_leaders_and_staff_approve_and_nobody_approves_their_own_time() -> None:
    e = entry()
    common = {"communities": ("c1",), "led_teams": ()}
    assert ledger.may_approve(e, sub="sw-1", roles=frozenset({"community_staff"}), **common)
    assert not ledger.may_approve(e, sub="sw-2", roles=frozenset({"community_staff"}),
                                  communities=("c2",), led_teams=())  # fmt: skip
    assert ledger.may_approve(e, sub="lead", roles=frozenset({"volunteer"}),
                              communities=(), led_teams=("t1",))  # fmt: skip
    assert not ledger.may_approve(e, sub="other", roles=frozenset({"volunteer"}),
                                  communities=(), led_teams=("t2",))  # fmt: skip
    assert not ledger.may_approve(e, sub="v1", roles=frozenset({"admin"}), **common)


def test_corrections_are_new_entries_and_totals_follow_them() -> None:
    original = approved(entry(minutes=90))
    down = ledger.correction(original, [], delta=-30, reason="记多了", recorded_by="sw-1", now=NOW)
    assert down.corrects == original.id and down.id != original.id and down.minutes == -30
    up = ledger.correction(original, [down], delta=10, reason="补记", recorded_by="sw-1", now=NOW)
    before = ledger.totals([original, down, up], by="volunteer", tz=TZ)
    assert before == {("v1", "2026-11"): 90}  # corrections count once approved
    after = ledger.totals([original, approved(down), approved(up)], by="volunteer", tz=TZ)
    assert after == {("v1", "2026-11"): 70}
    assert original.minutes == 90  # the corrected entry itself never changes


def test_a_removal_is_announced_as_corrected_and_an_addition_as_approved() -> None:
    original = approved(entry(minutes=90))
    down = ledger.correction(original, [], delta=-30, reason="x", recorded_by="sw-1", now=NOW)
    _, removed = ledger.approve(down, approver="sw-1", now=NOW)
    assert removed[0].event == "hours.corrected" and removed[0].data["minutes_removed"] == 30
    up = ledger.correction(original, [], delta=15, reason="x", recorded_by="sw-1", now=NOW)
    _, added = ledger.approve(up, approver="sw-1", now=NOW)
    assert added[0].event == "hours.approved"
    assert (added[0].data["minutes"], added[0].data["corrects"]) == (15, original.id)
    assert added[0].data["at"] == original.served_at  # lands in the month of the service


def test_a_correction_cannot_take_an_entry_below_zero_or_correct_a_correction() -> None:
    original = entry(minutes=30)
    down = ledger.correction(original, [], delta=-20, reason="x", recorded_by="s", now=NOW)
    with pytest.raises(InvalidRecord, match="stands at 10 minutes"):
        ledger.correction(original, [down], delta=-11, reason="x", recorded_by="s", now=NOW)
    with pytest.raises(InvalidRecord):
        ledger.correction(down, [], delta=5, reason="x", recorded_by="s", now=NOW)
    with pytest.raises(InvalidRecord):
        ledger.correction(original, [], delta=0, reason="x", recorded_by="s", now=NOW)


def test_totals_by_team_month_and_community() -> None:
    a = approved(entry("v1", 60))
    b = approved(replace(entry("v2", 30), teams=("t1", "t2")))
    first_local = datetime(2026, 10, 31, 17, 0, tzinfo=UTC)  # 1 November in Shanghai
    c = approved(entry("v1", 45, served_at=first_local))
    pending = entry("v3", 500)
    assert ledger.totals([a, b, c, pending], by="team", tz=TZ) == {
        ("t1", "2026-11"): 135, ("t2", "2026-11"): 30,
    }  # fmt: skip
    assert ledger.totals([a, b, c], by="community", tz=TZ, month="2026-11") == {
        ("c1", "2026-11"): 135
    }


def test_the_csv_has_a_header_and_one_row_per_entry() -> None:
    text = ledger.to_csv([approved(entry())])
    lines = text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("ledger_id,kind,volunteer_id")
    assert len(lines) == 2 and ",90," in lines[1]


def test_hours_read_in_chinese() -> None:
    assert ledger.hours_text(95) == "1小时35分钟"
    assert ledger.hours_text(45) == "45分钟"
