from datetime import UTC, datetime

from shequ_services.disclosure import domain as disclosure
from shequ_services.mediation import domain as mediation
from shequ_services.volunteer import domain as volunteer

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_a_sensitive_incident_is_disclosed_without_category_or_reference() -> None:
    draft = disclosure.incident_received(
        incident_id="INC-9", category="new_pregnancy", category_name="发现新增孕妇",
        sensitive=True, community="c1", urgency="ordinary", reported_at=NOW,
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
