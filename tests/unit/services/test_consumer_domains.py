from dataclasses import replace
from datetime import UTC, datetime

from shequ_services.disclosure import domain as disclosure
from shequ_services.mediation import domain as mediation
from shequ_services.volunteer import domain as volunteer

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def chain(count: int) -> list[disclosure.Entry]:
    entries, prev = [], disclosure.GENESIS_HASH
    for n in range(1, count + 1):
        draft = disclosure.incident_received(
            incident_id=f"INC-{n}", category="facility_damaged", category_name="公共设施损坏",
            sensitive=False, community="c1", urgency="simple",
        )  # fmt: skip
        entry = disclosure.seal(draft, seq=n, prev_hash=prev, published_at=NOW)
        entries.append(entry)
        prev = entry.entry_hash
    return entries


def test_an_untouched_disclosure_chain_verifies() -> None:
    assert disclosure.verify_chain(chain(4)) is None


def test_a_quietly_edited_entry_breaks_the_chain_at_that_entry() -> None:
    entries = chain(4)
    entries[1] = replace(entries[1], title="受理事项：（已改）")
    assert disclosure.verify_chain(entries) == 2


def test_a_removed_entry_breaks_the_chain_after_the_gap() -> None:
    entries = chain(4)
    del entries[2]
    assert disclosure.verify_chain(entries) == 4


def test_a_sensitive_incident_is_disclosed_without_category_or_reference() -> None:
    draft = disclosure.incident_received(
        incident_id="INC-9", category="new_pregnancy", category_name="发现新增孕妇",
        sensitive=True, community="c1", urgency="ordinary",
    )  # fmt: skip
    assert draft.references == ()
    assert "孕" not in draft.title and draft.body == {"category": None, "urgency": None}


def test_a_dispute_opens_a_case_and_other_categories_do_not() -> None:
    case = mediation.case_for_incident(
        incident_id="INC-1", category="neighbour_dispute", opens_mediation=True,
        community="c1", now=NOW,
    )  # fmt: skip
    assert case is not None and case.id.startswith("MED-c1-2026-") and case.status == "intake"
    assert mediation.case_for_incident(
        incident_id="INC-2", category="facility_damaged", opens_mediation=False,
        community="c1", now=NOW,
    ) is None  # fmt: skip


def test_a_volunteer_category_creates_a_task_of_its_kind() -> None:
    task = volunteer.task_for_incident(
        incident_id="INC-1", category="resident_hospitalised", volunteer_task=True,
        community="c1", grid_cell="g1", now=NOW,
    )  # fmt: skip
    assert task is not None and task.kind == "home_visit" and task.status == "open"
    assert volunteer.task_for_incident(
        incident_id="INC-2", category="safety_hazard", volunteer_task=False,
        community="c1", grid_cell="g1", now=NOW,
    ) is None  # fmt: skip
