"""The SLA board's queries on the real store: order and pages across the two parts, counts,
scope, the 30 days' history, and the backfill of ``next_deadline``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ.store import ensure_indexes
from shequ_services.grid import sla
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.domain import Incident, ReaderClaims, open_deadline
from shequ_services.grid.store import INCIDENTS, IncidentRepository
from tests.conftest import Servers

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
ORDINARY = frozenset({"facility_damaged"})
ADMIN = sla.board_grants(ReaderClaims("a", frozenset({"admin"})))


@pytest.fixture
def store(servers: Servers) -> Iterator[IncidentRepository]:
    client = servers.mongo()
    name = f"grid_sla_{uuid.uuid4().hex[:8]}"
    repository = IncidentRepository(client[name], service="grid", district="test")
    ensure_indexes(client[name], IncidentRepository)
    yield repository
    client.drop_database(name)
    client.close()


def clock(name: str, deadline: datetime, **kw: Any) -> Clock:
    return Clock(name, deadline - timedelta(hours=4), deadline, deadline, **kw)


def put(
    store: IncidentRepository,
    incident_id: str,
    *clocks: Clock,
    community: str = "hx-qingyuan",
    **kw: Any,
) -> None:
    """Store an incident document as the repository writes one (``add_reported``'s shape)."""
    named = {c.name: c for c in clocks}
    status = kw.pop("status", "reported")
    incident = Incident(
        id=incident_id,
        category=kw.pop("category", "facility_damaged"),
        grid_cell="qy-01",
        community=community,
        description="不应出现",
        location=None,
        reporter="res-1",
        channel="resident_app",
        urgency="simple",
        status=status,
        reported_at=kw.pop("reported_at", NOW - timedelta(days=1)),
        clocks=named,
        next_deadline=open_deadline(status, named),
        **kw,
    )
    document = asdict(incident)
    document["_id"] = document.pop("id")
    document["clocks"] = {k: c.to_document() for k, c in named.items()}
    store.db[INCIDENTS].insert_one(document)


def listed(
    store: IncidentRepository, grants: Any, filters: dict[str, str], *, skip: int, limit: int
) -> tuple[list[sla.SlaRecord], int]:
    """A page as the board reads it: the total from the counts, then the page."""
    total = sla.total_of(store.sla_counts(grants, ORDINARY, {}, NOW), filters)
    found = store.sla_page(grants, ORDINARY, filters, skip=skip, limit=limit, total=total)
    return found, total


def test_pages_walk_the_timed_part_by_deadline_then_the_untimed_part(
    store: IncidentRepository,
) -> None:
    put(store, "t-late", clock("acknowledge", NOW - timedelta(hours=3)))
    put(store, "t-soon", clock("resolve", NOW + timedelta(hours=1)))
    put(store, "t-later", clock("resolve", NOW + timedelta(days=2)))
    put(store, "u-b", status="accepted")
    put(store, "u-a", status="accepted")
    put(store, "closed", clock("feedback", NOW - timedelta(days=1)), status="closed_resolved")
    pages = [listed(store, ADMIN, {}, skip=skip, limit=2) for skip in (0, 2, 4, 6)]
    assert [[r.id for r in found] for found, _ in pages] == [
        ["t-late", "t-soon"],
        ["t-later", "u-a"],
        ["u-b"],
        [],
    ]
    assert {total for _, total in pages} == {5}, "closed incidents are not counted"
    whole, _ = listed(store, ADMIN, {}, skip=0, limit=10)
    assert [r.id for r in whole] == [r.id for r in sla.order(whole)], "the pure order agrees"


def test_scope_and_filters_narrow_the_list_and_the_counts(store: IncidentRepository) -> None:
    put(store, "q-1", clock("acknowledge", NOW - timedelta(hours=1)))
    put(store, "q-2", clock("resolve", NOW + timedelta(hours=5)), department="municipal")
    put(store, "q-3", clock("resolve", NOW + timedelta(days=5)), department="municipal")
    put(store, "l-1", clock("acknowledge", NOW - timedelta(hours=1)), community="hx-liushu")
    put(
        store,
        "l-secret",
        clock("acknowledge", NOW - timedelta(minutes=1)),
        community="hx-liushu",
        category="new_pregnancy",
    )
    staff = sla.board_grants(
        ReaderClaims("s", frozenset({"community_staff"}), communities=("hx-liushu",))
    )
    found, total = listed(store, staff, {}, skip=0, limit=10)
    assert ([r.id for r in found], total) == (["l-1"], 1)
    assert listed(store, staff, {"community": "hx-qingyuan"}, skip=0, limit=10) == (
        [],
        0,
    )
    by_department, _ = listed(store, ADMIN, {"department": "municipal"}, skip=0, limit=9)
    assert [r.id for r in by_department] == ["q-2", "q-3"]

    cells = {(c.community, c.department): c for c in store.sla_counts(ADMIN, ORDINARY, {}, NOW)}
    assert cells[("hx-qingyuan", None)] == sla.Cell("hx-qingyuan", None, 1, 1, 0)
    assert cells[("hx-qingyuan", "municipal")] == sla.Cell("hx-qingyuan", "municipal", 2, 0, 1)
    assert cells[("hx-liushu", None)] == sla.Cell("hx-liushu", None, 2, 2, 0)
    assert store.sla_counts(staff, ORDINARY, {}, NOW) == [sla.Cell("hx-liushu", None, 1, 1, 0)]


def test_the_history_holds_the_windows_incidents_and_their_closures(
    store: IncidentRepository,
) -> None:
    start = NOW - timedelta(days=30)
    closed_at = NOW - timedelta(days=2)
    put(
        store,
        "open-old",
        clock("resolve", NOW - timedelta(days=40)),
        reported_at=NOW - timedelta(days=60),
    )
    put(
        store, "closed-recently", status="closed_resolved", reported_at=NOW - timedelta(days=50),
        history=[{"at": closed_at, "actor": "x", "action": "check", "to": "closed_resolved"}],
    )  # fmt: skip
    put(
        store, "closed-long-ago", status="closed_resolved", reported_at=NOW - timedelta(days=90),
        history=[{"at": NOW - timedelta(days=80), "actor": "x", "action": "check",
                  "to": "closed_resolved"}],
    )  # fmt: skip
    found = store.sla_history(ADMIN, ORDINARY, {}, start=start, end=NOW + timedelta(days=1))
    assert len(found) == 2
    assert sorted(record.closures for record in found) == [(), (closed_at,)]
    assert all(record.facts.community == "hx-qingyuan" for record in found)


def test_incidents_stored_before_next_deadline_are_filled_in_once(
    store: IncidentRepository,
) -> None:
    put(store, "legacy", clock("acknowledge", NOW + timedelta(minutes=30)))
    put(store, "legacy-closed", status="closed_resolved")
    put(store, "current", clock("resolve", NOW + timedelta(hours=1)))
    store.db[INCIDENTS].update_many(
        {"_id": {"$in": ["legacy", "legacy-closed"]}}, {"$unset": {"next_deadline": ""}}
    )
    before, _ = listed(store, ADMIN, {}, skip=0, limit=10)
    assert [r.id for r in before] == ["current", "legacy"], "unknown deadline: listed last"
    assert store.fill_next_deadlines(limit=10) == 1
    assert store.fill_next_deadlines(limit=10) == 0
    after, _ = listed(store, ADMIN, {}, skip=0, limit=10)
    assert [r.id for r in after] == ["legacy", "current"], "now by its deadline"
    stored = store.db[INCIDENTS].find_one({"_id": "legacy-closed"})
    assert "next_deadline" not in stored, "closed incidents are left alone"
