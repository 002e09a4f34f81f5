"""``shequ reconcile`` finds each kind of gap it is there to find, on the real store.

The fault suite and the soak run use reconciliation to say "nothing lost,
nothing doubled"; a reconciliation that always came back clean would pass
them all. Here the grid's outbox, the consumers' processed marks and their
effects are written directly, each case breaking one thing, and the report
must name it. The consumers are the real service classes, so what is
checked is what they declare in ``report_effects``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ.reconcile import REPORTED_TYPE, Report, reconcile
from shequ.store import OUTBOX, OUTBOX_PUBLISHED, PROCESSED, database_name
from shequ.topology import subscriptions
from shequ_services.disclosure.service import DisclosureService
from shequ_services.mediation.service import MediationService
from shequ_services.notify.service import NotifyService
from tests.conftest import Servers

pytestmark = pytest.mark.integration

CONSUMERS = (MediationService, DisclosureService, NotifyService)
START = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
DISPUTE = {"code": "neighbour_dispute", "opens_mediation": True, "sensitive": False}
HAZARD = {"code": "facility_damaged", "opens_mediation": False, "sensitive": False}
SENSITIVE = {"code": "resident_hospitalised", "opens_mediation": False, "sensitive": True}


@dataclass
class Platform:
    """The databases of one platform (a prefix of its own) and what is in them."""

    client: Any
    prefix: str
    reported: int = 0

    def db(self, service: str) -> Any:
        return self.client[database_name(service, self.prefix)]

    def report(self, category: dict[str, Any], *, published: bool = True) -> tuple[str, str]:
        """An ``incident.reported`` in grid's outbox, and in its relay's publication
        log if ``published``: (event id, incident id)."""
        self.reported += 1
        event_id, incident_id = f"evt-{self.reported}", f"INC-{self.reported}"
        self.db("grid")[OUTBOX].insert_one(
            {
                "_id": event_id,
                "type": REPORTED_TYPE,
                "created_at": START + timedelta(seconds=self.reported),
                "body": {"subject": incident_id, "data": {"category": category}},
            }
        )
        if published:
            self.db("grid")[OUTBOX_PUBLISHED].insert_one(
                {"_id": f"batch-{self.reported}", "ids": [event_id], "through": START}
            )
        return event_id, incident_id

    def handled(self, event_id: str, incident_id: str, category: dict[str, Any]) -> None:
        """What every consumer's handlers commit for one report, once each."""
        for service_cls in CONSUMERS:
            self.mark(service_cls, event_id)
        if category["opens_mediation"]:
            self.case(incident_id)
        if not category["sensitive"]:
            self.db("disclosure")["entries"].insert_one(
                {"kind": "incident_summary", "cadence": "ad_hoc", "references": [incident_id]}
            )
        self.delivery(event_id, incident_id, "grid_worker:qy-01")

    def mark(self, service_cls: type, event_id: str) -> None:
        for sub in subscriptions(service_cls):
            if sub.source_service == "grid" and sub.event_name == "incident.reported":
                self.db(service_cls.name)[PROCESSED].insert_one(
                    {"handler": sub.method, "event_id": event_id, "type": REPORTED_TYPE}
                )

    def case(self, incident_id: str) -> None:
        self.db("mediation")["cases"].insert_one({"incident_id": incident_id})

    def delivery(self, event_id: str, incident_id: str, recipient: str) -> None:
        self.db("notify")["deliveries"].insert_one(
            {
                "kind": "notification",
                "event_type": REPORTED_TYPE,
                "subject_ref": incident_id,
                "event_id": event_id,
                "recipient": recipient,
                "rule": "reported-to-cell",
            }
        )

    def reconcile(self, limit: int | None = None) -> Report:
        return reconcile(self.client, self.prefix, CONSUMERS, limit=limit)


@pytest.fixture
def platform(servers: Servers) -> Iterator[Platform]:
    client = servers.mongo()
    found = Platform(client, f"r{uuid.uuid4().hex[:8]}_")
    yield found
    for service in ("grid", *(cls.name for cls in CONSUMERS)):
        client.drop_database(database_name(service, found.prefix))
    client.close()


def reported_and_handled(platform: Platform, category: dict[str, Any]) -> tuple[str, str]:
    event_id, incident_id = platform.report(category)
    platform.handled(event_id, incident_id, category)
    return event_id, incident_id


def test_every_report_with_its_effects_once_is_clean(platform: Platform) -> None:
    for category in (DISPUTE, HAZARD, SENSITIVE):
        reported_and_handled(platform, category)
    found = platform.reconcile()
    assert found.as_dict() == {
        "reports": 3,
        "unpublished": 0,
        "missing": [],
        "duplicated": [],
        "effects": {"mediation.cases": 1, "disclosure.entries": 2, "notify.deliveries": 3},
        "clean": True,
    }


def test_a_report_the_broker_has_not_confirmed_is_unpublished_not_missing(
    platform: Platform,
) -> None:
    reported_and_handled(platform, HAZARD)
    platform.report(HAZARD, published=False)
    found = platform.reconcile()
    assert (found.reports, found.unpublished, found.missing, found.clean) == (2, 1, [], False)


def test_a_consumer_that_never_handled_a_report_is_missing_its_mark_and_effect(
    platform: Platform,
) -> None:
    reported_and_handled(platform, HAZARD)
    _, incident_id = platform.report(DISPUTE)  # published; no consumer got it
    found = platform.reconcile()
    assert sorted(found.missing) == sorted(
        [
            f"mediation.on_incident_reported: no processed mark for {incident_id}",
            f"disclosure.on_incident_reported: no processed mark for {incident_id}",
            f"notify.on_incident_reported: no processed mark for {incident_id}",
            f"mediation.cases: none for {incident_id}",
            f"disclosure.entries: none for {incident_id}",
            f"notify.deliveries: none for {incident_id}",
        ]
    )
    assert found.duplicated == []


def test_a_mark_without_its_owed_effect_is_missing(platform: Platform) -> None:
    event_id, incident_id = platform.report(DISPUTE)
    for service_cls in CONSUMERS:
        platform.mark(service_cls, event_id)
    platform.db("disclosure")["entries"].insert_one(
        {"kind": "incident_summary", "cadence": "ad_hoc", "references": [incident_id]}
    )
    platform.delivery(event_id, incident_id, "grid_worker:qy-01")
    assert platform.reconcile().missing == [f"mediation.cases: none for {incident_id}"]


def test_an_effect_made_twice_is_duplicated(platform: Platform) -> None:
    _, incident_id = reported_and_handled(platform, DISPUTE)
    platform.case(incident_id)
    found = platform.reconcile()
    assert found.duplicated == [f"mediation.cases: 2 for {incident_id}"]
    assert found.missing == []
    assert found.effects["mediation.cases"] == 2


def test_an_effect_for_a_report_that_owes_none_is_duplicated(platform: Platform) -> None:
    _, hazard = reported_and_handled(platform, HAZARD)
    _, sensitive = reported_and_handled(platform, SENSITIVE)
    platform.case(hazard)  # a hazard opens no mediation case
    platform.db("disclosure")["entries"].insert_one(  # a sensitive report is never public
        {"kind": "incident_summary", "cadence": "ad_hoc", "references": [sensitive]}
    )
    assert sorted(platform.reconcile().duplicated) == sorted(
        [
            f"mediation.cases: 1 for {hazard}, which owes none",
            f"disclosure.entries: 1 for {sensitive}, which owes none",
        ]
    )


def test_several_effects_are_judged_by_what_makes_each_unique(platform: Platform) -> None:
    event_id, incident_id = reported_and_handled(platform, HAZARD)
    platform.delivery(event_id, incident_id, "grid_worker:qy-02")  # another recipient: fine
    assert platform.reconcile().clean
    platform.delivery(event_id, incident_id, "grid_worker:qy-02")  # the same one again
    duplicated = platform.reconcile().duplicated
    assert len(duplicated) == 1
    assert duplicated[0].startswith(f"notify.deliveries: 2 for {incident_id} ")
    assert "grid_worker:qy-02" in duplicated[0]


def test_an_entry_counts_for_every_report_it_references(platform: Platform) -> None:
    _, first = platform.report(HAZARD)
    _, second = platform.report(HAZARD)
    for event_id, incident_id in (("evt-1", first), ("evt-2", second)):
        for service_cls in CONSUMERS:
            platform.mark(service_cls, event_id)
        platform.delivery(event_id, incident_id, "grid_worker:qy-01")
    platform.db("disclosure")["entries"].insert_one(
        {"kind": "incident_summary", "cadence": "ad_hoc", "references": [first, second]}
    )
    found = platform.reconcile()
    assert found.clean, found.as_dict()
    assert found.effects["disclosure.entries"] == 2


def test_effects_outside_the_compared_reports_are_left_out(platform: Platform) -> None:
    reported_and_handled(platform, DISPUTE)
    _, later = reported_and_handled(platform, DISPUTE)
    platform.case(later)  # a duplicate, but of a report beyond the limit
    platform.case("INC-not-reported")  # a case opened by staff, from no report
    found = platform.reconcile(limit=1)
    assert found.reports == 1
    assert found.clean, found.as_dict()
    assert found.effects["mediation.cases"] == 1
    assert platform.reconcile().duplicated == [f"mediation.cases: 2 for {later}"]
