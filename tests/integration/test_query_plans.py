"""The hot queries' plans on the real embedded store: each reads what it needs, not the collection.

SecantusDB plans an index only for a filter whose fields an index covers (or
a bare ``_id``); a filter naming one more field (a lease's ``$or``, a
``$nin`` on the state) scans the whole collection, so a query run once per
event gets slower with every event ever stored, and a hint does not help (the
store walks the hinted index end to end). One exception, which its
``explain`` does not show: a filter opening with an ``_id`` equality is a
point lookup (``as_executed``). These tests record the
commands the repositories really send, with a command listener, then ask the
store to ``explain`` each one, filter and sort as sent, among hundreds of
documents that do not match, and require that only a handful were examined.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from shequ import audit
from shequ.outbox import RELAY_LEASE, OutboxRelay
from shequ.store import OUTBOX, OUTBOX_PUBLISHED, BacklogWindow, Repository, ensure_indexes
from shequ_services.disclosure import domain as disclosure_domain
from shequ_services.disclosure.store import PENDING, EntryRepository
from shequ_services.grid.domain import DuplicateScope, Incident, Rating
from shequ_services.grid.store import INCIDENTS, IncidentRepository
from shequ_services.mediation.store import CASES, CaseRepository
from shequ_services.notify.store import ATTEMPTS, DELIVERIES, NotifyRepository
from shequ_services.volunteer.store import TASKS, VolunteerRepository
from tests.conftest import Servers
from tests.support.flaky import THING_HAPPENED_V1

pytestmark = pytest.mark.integration

#: Documents that match none of the queries; a scan would examine all of them.
BYSTANDERS = 300
#: What a query may examine: the few documents it is about, never the bystanders.
FEW = 10
NOW = datetime.now(UTC).replace(microsecond=0)


class Recorder(monitoring.CommandListener):
    """Keeps every read and write command sent, to be explained afterwards."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "update", "findAndModify", "delete"):
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def as_finds(command: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``find`` that reads what a recorded command reads (an update's ``q``, and so on)."""
    name = next(iter(command))
    collection = command[name]
    if name == "find":
        parts = [(command.get("filter", {}), command.get("sort"), command.get("hint"))]
    elif name == "findAndModify":
        parts = [(command.get("query", {}), command.get("sort"), command.get("hint"))]
    else:
        key = "updates" if name == "update" else "deletes"
        parts = [(one["q"], None, one.get("hint")) for one in command.get(key, [])]
    finds = []
    for filter_, sort, hint in parts:
        find: dict[str, Any] = {"find": collection, "filter": filter_}
        if sort:
            find["sort"] = sort
        if hint:
            find["hint"] = hint
        finds.append((collection, find))
    return finds


@pytest.fixture
def recorded(servers: Servers) -> Iterator[tuple[Any, Recorder, str]]:
    recorder = Recorder()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        servers.mongo_uri, tz_aware=True, event_listeners=[recorder]
    )
    name = f"plans_{uuid.uuid4().hex[:8]}"
    yield client[name], recorder, name
    client.drop_database(name)
    client.close()


def as_executed(find: dict[str, Any]) -> dict[str, Any]:
    """The ``find`` whose plan the store follows when it runs ``find``.

    A filter that opens with an equality on ``_id`` and names more fields is
    run as a point lookup by ``_id``, the rest checked on that one document:
    SecantusDB 0.7.0b3 looks a filter it has no plan for up by its first
    clause an index serves. Its ``explain`` shows a scan of the collection
    for it all the same. Measured on 25 November 2026: ``update_one`` and
    ``find_one`` by ``_id``, ``status`` and ``lease_until`` took 1.0 and 0.8 ms
    at 1,000 documents and 1.6 and 0.9 ms at 30,000 (medians of 20), while
    ``explain`` counted 1,000 and 30,000 documents examined. So such a filter
    is explained by its ``_id`` alone. Only when ``_id`` comes first: a
    clause before it that an index serves is the one the store would follow.
    """
    filter_ = find.get("filter", {})
    first = next(iter(filter_), None)
    if first != "_id" or len(filter_) == 1 or isinstance(filter_["_id"], dict):
        return find
    return {**find, "filter": {"_id": filter_["_id"]}}


def examined(db: Any, recorder: Recorder, collections: set[str]) -> list[tuple[str, int]]:
    """Each recorded read of ``collections``, explained: its filter and documents examined."""
    found = []
    for command in recorder.commands:
        for collection, find in as_finds(command):
            if collection not in collections:
                continue
            plan = db.command("explain", as_executed(find), verbosity="executionStats")
            found.append((repr(find), plan["executionStats"]["totalDocsExamined"]))
    return found


def assert_few(found: list[tuple[str, int]]) -> None:
    assert found, "the repository sent no query to explain"
    scans = [(query, count) for query, count in found if count > FEW]
    assert not scans, f"queries examining more than {FEW} documents: {scans}"


class Things(Repository):
    def happen(self, thing_id: str) -> None:
        self.emit(THING_HAPPENED_V1, subject=thing_id, sequence=1,
                  data={"thing_id": thing_id, "poison": False})  # fmt: skip


def test_the_relay_resumes_publishes_and_gauges_without_reading_the_published_events(
    recorded: tuple[Any, Recorder, str], servers: Servers
) -> None:
    """A relay taking over a service's outbox after many events were published:
    its reads of the lease, the position and the backlog gauges stay small."""
    db, recorder, _ = recorded
    ensure_indexes(db, Things)
    things = Things(db, service="testsource", district="test")
    things.run_in_transaction(
        lambda: things.emit_many(
            THING_HAPPENED_V1,
            [(f"old-{n}", 1, {"thing_id": f"old-{n}", "poison": False}) for n in range(BYSTANDERS)],
        )
    )
    earlier = OutboxRelay(db, amqp_uri=servers.amqp_uri, service="testsource", poll_interval=0.1)
    try:
        while earlier.relay_once():
            pass
    finally:
        earlier.stop()
    for n in range(2):
        things.run_in_transaction(lambda n=n: things.happen(f"t-{n}"))
    relay = OutboxRelay(db, amqp_uri=servers.amqp_uri, service="testsource", poll_interval=0.1)
    recorder.commands.clear()
    try:
        assert relay.relay_once() == 2
        relay._report_pending()
    finally:
        relay.stop()
    assert_few(examined(db, recorder, {OUTBOX, OUTBOX_PUBLISHED, RELAY_LEASE}))


def test_notify_claims_a_due_delivery_and_counts_recent_sends_without_a_scan(
    recorded: tuple[Any, Recorder, str],
) -> None:
    db, recorder, _ = recorded
    ensure_indexes(db, NotifyRepository)
    notify = NotifyRepository(db, service="notify", district="test")
    db[DELIVERIES].insert_many(
        [{"_id": f"d-{n}", "key": f"k-{n}", "kind": "notification", "status": "sent",
          "due_at": NOW - timedelta(hours=1), "lease_until": None} for n in range(BYSTANDERS)]
    )  # fmt: skip
    db[DELIVERIES].insert_one(
        {"_id": "due", "key": "due", "kind": "notification", "status": "pending",
         "due_at": NOW - timedelta(minutes=1), "lease_until": None}
    )  # fmt: skip
    db[ATTEMPTS].insert_many(
        [{"_id": f"a-{n}", "recipient": f"staff:{n}", "outcome": "sent", "urgent": False,
          "at": NOW - timedelta(minutes=5), "delivery_id": f"d-{n}"} for n in range(BYSTANDERS)]
    )  # fmt: skip
    recorder.commands.clear()
    claimed = notify.claim_due(NOW, timedelta(minutes=2), ("notification",))
    assert claimed is not None and claimed["_id"] == "due"
    assert notify.sends_to("staff:nobody", NOW - timedelta(hours=1)) == []
    assert_few(examined(db, recorder, {DELIVERIES, ATTEMPTS}))

    # Due, but another pass's: the bureau pass must not read them to find it has nothing.
    db[DELIVERIES].insert_many(
        [{"_id": f"p-{n}", "key": f"p-{n}", "kind": "notification", "status": "pending",
          "due_at": NOW - timedelta(minutes=2), "lease_until": None} for n in range(BYSTANDERS)]
    )  # fmt: skip
    recorder.commands.clear()
    assert notify.claim_due(NOW, timedelta(minutes=2), ("subscription",)) is None
    assert_few(examined(db, recorder, {DELIVERIES}))


def test_grid_checks_duplicates_and_rates_without_reading_every_incident(
    recorded: tuple[Any, Recorder, str],
) -> None:
    db, recorder, _ = recorded
    ensure_indexes(db, IncidentRepository)
    grid = IncidentRepository(db, service="grid", district="test")

    def incident(incident_id: str, category: str, cell: str, status: str) -> Incident:
        return Incident(
            id=incident_id, category=category, grid_cell=cell, community="hx-qingyuan",
            description="", location=None, reporter="res-1", channel="resident_app",
            urgency="simple", status=status, reported_at=NOW - timedelta(hours=2), clocks={},
        )  # fmt: skip

    documents = []
    for n in range(BYSTANDERS):
        stored = asdict(incident(f"i-{n}", "alley_unclean", "qy-03", "closed_resolved"))
        stored["_id"] = stored.pop("id")
        documents.append(stored)
    db[INCIDENTS].insert_many(documents)
    target = asdict(incident("target", "facility_damaged", "qy-01", "dispatched"))
    rateable = asdict(incident("rateable", "facility_damaged", "qy-09", "closed_resolved"))
    rateable["_id"] = rateable.pop("id")
    target["_id"] = target.pop("id")
    db[INCIDENTS].insert_many([target, rateable])
    recorder.commands.clear()
    scope = DuplicateScope(
        category="facility_damaged", cells=("qy-01",), since=NOW - timedelta(days=1),
        until=NOW, exclude="new",
    )  # fmt: skip
    assert [found.id for found in grid.open_in(scope)] == ["target"]
    rated = grid.record_rating(grid.get("rateable"), Rating(score=5, at=NOW, closure=1), "res-1")
    assert rated.version == rateable["version"] + 1
    assert_few(examined(db, recorder, {INCIDENTS}))


def test_a_burst_of_reports_in_one_cell_is_not_read_whole_for_each_new_report(
    recorded: tuple[Any, Recorder, str],
) -> None:
    """After a storm one cell takes hundreds of reports of one category in an
    hour; each new report's duplicate check reads the newest span of them,
    never the whole burst, and still finds the newest open ones."""
    db, recorder, _ = recorded
    ensure_indexes(db, IncidentRepository)
    grid = IncidentRepository(db, service="grid", district="test")
    burst = [
        {"_id": f"b-{n:03d}", "category": "facility_damaged", "grid_cell": "qy-01",
         "community": "hx-qingyuan", "description": "", "location": None, "reporter": "r",
         "channel": "patrol", "urgency": "simple", "status": "reported", "clocks": {},
         "reported_at": NOW - timedelta(seconds=10 * n)}
        for n in range(BYSTANDERS)
    ]  # fmt: skip
    db[INCIDENTS].insert_many(burst)
    recorder.commands.clear()
    scope = DuplicateScope(
        category="facility_damaged", cells=("qy-01",), since=NOW - timedelta(days=2),
        until=NOW, exclude="new",
    )  # fmt: skip
    found = grid.open_in(scope)
    assert [incident.id for incident in found] == [f"b-{n:03d}" for n in range(20)]
    reads = examined(db, recorder, {INCIDENTS})
    # The newest minute holds 6 of the burst; the next span is sized for the
    # 14 still wanted, twice over: about 34 read, not all 300.
    assert sum(count for _, count in reads) < BYSTANDERS // 2, reads


def record_after_trail(recorded: tuple[Any, Recorder, str], *, taken: int) -> list[Any]:
    """A trail of ``BYSTANDERS`` records with ``taken`` numbers used, then one change
    recorded: the reads it took, explained. It must link to the last record."""
    db, recorder, _ = recorded
    ensure_indexes(db, Things)
    db[audit.AUDIT].insert_many(
        [{"_id": f"a-{n}", "seq": n, "hash": f"h-{n}"} for n in range(1, BYSTANDERS + 1)]
    )
    db[audit.COUNTER].insert_one({"_id": audit.AUDIT, "seq": taken})
    recorder.commands.clear()
    things = Things(db, service="testsource", district="test")
    things.actor, things.action = {"sub": "u-1", "roles": ["admin"]}, "test.change"
    things.run_in_transaction(lambda: things.audit("thing", "t-1", None, {"v": 1}))
    assert db[audit.AUDIT].find_one({"seq": taken + 1})["prev"] == f"h-{BYSTANDERS}"
    return examined(db, recorder, {audit.AUDIT})


def test_an_audit_record_finds_the_one_it_links_to_without_reading_the_trail(
    recorded: tuple[Any, Recorder, str],
) -> None:
    reads = record_after_trail(recorded, taken=BYSTANDERS)
    # The window below its number (and the store's look one past its end), not all 300.
    assert sum(count for _, count in reads) <= audit.PREV_WINDOW + 1, reads


def test_a_record_past_a_wide_gap_looks_further_down_a_range_at_a_time(
    recorded: tuple[Any, Recorder, str],
) -> None:
    """What a long transaction sees: the last 40 numbers taken by records it cannot
    see. It read the whole trail, sorted, for every such record (1.1 s a record
    in a soak run's sequencer batch); now it reads ranges four times wider each."""
    reads = record_after_trail(recorded, taken=BYSTANDERS + 40)
    # The empty 16 below, then the next 64 (of which 24 hold records): not all 300.
    assert sum(count for _, count in reads) <= 2 * audit.PREV_WINDOW + 40, reads


def test_mediation_and_volunteer_find_an_incidents_case_and_task_without_a_scan(
    recorded: tuple[Any, Recorder, str],
) -> None:
    db, recorder, _ = recorded
    ensure_indexes(db, CaseRepository)
    ensure_indexes(db, VolunteerRepository)
    for collection in (CASES, TASKS):
        db[collection].insert_many(
            [{"_id": f"{collection}-{n}", "incident_id": f"inc-{n}"} for n in range(BYSTANDERS)]
        )
    recorder.commands.clear()
    cases = CaseRepository(db, service="mediation", district="test")
    tasks = VolunteerRepository(db, service="volunteer", district="test")
    assert cases.for_incident("inc-new") == []
    assert tasks.for_incident("inc-new") == []
    assert_few(examined(db, recorder, {CASES, TASKS}))


def test_the_sequencer_reads_the_oldest_queued_drafts_not_the_whole_queue(
    recorded: tuple[Any, Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its read of ``{"refused": None}``, sorted, examined every queued draft for
    every batch, and at 2,900 queued took the embedded store 20 s: the log fell
    ever further behind (the soak run of 24 November 2026)."""
    db, recorder, _ = recorded
    ensure_indexes(db, EntryRepository)
    monkeypatch.setattr(EntryRepository, "PENDING_WINDOW", BacklogWindow("accepted_at", batches=2))
    log = EntryRepository(db, service="disclosure", district="test")
    month = disclosure_domain.month_of(NOW)

    def queue() -> None:
        for number in range(6 * 100):
            draft = disclosure_domain.EntryDraft(
                kind="notice", cadence="ad_hoc", community="hx-qingyuan", period=month,
                title=f"通知 {number}", body={"text": f"第 {number} 号"},
            )  # fmt: skip
            log.enqueue(draft)

    log.run_in_transaction(queue)
    assert len(log.integrate()) == 100  # the first batch reads the queue and notes where
    recorder.commands.clear()
    second = log.integrate()
    assert [entry.index for entry in second] == list(range(100, 200))
    reads = examined(db, recorder, {PENDING})
    assert reads, "the sequencer sent no query to explain"
    # The window up to its horizon (200 drafts in, 100 of them appended) and the
    # batch itself: never the 500 still queued.
    assert max(count for _, count in reads) <= 150, reads
