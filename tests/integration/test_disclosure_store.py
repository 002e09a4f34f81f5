"""The disclosure log's repository on the real store: appends, proofs, figures, the guard.

Roots and proofs are checked against the RFC 9162 reference of the test
support code, computed from the stored leaf bytes, not against the
repository's own answers.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from shequ_services.disclosure import domain, guard
from shequ_services.disclosure.store import ENTRIES, NODES, PENDING, EntryRepository
from tests.conftest import Servers
from tests.support import rfc9162
from tests.support.personal_data import FREE_TEXT, personal_data, traces

pytestmark = pytest.mark.integration

COMMUNITY = "hx-guihua"
MONTH = domain.month_of(datetime.now(UTC))


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"disclosure_{uuid.uuid4().hex[:8]}"
    database = client[name]
    for collection, models in EntryRepository.INDEXES.items():
        database[collection].create_indexes(models)
    yield database
    client.drop_database(name)
    client.close()


def repository(database: Any) -> EntryRepository:
    return EntryRepository(database, service="disclosure", district="test")


def notice(number: int, **changes: Any) -> domain.EntryDraft:
    fields: dict[str, Any] = {
        "kind": "notice", "cadence": "ad_hoc", "community": COMMUNITY, "period": MONTH,
        "title": f"通知 {number}", "body": {"text": f"第 {number} 号通知"},
    }  # fmt: skip
    fields.update(changes)
    return domain.EntryDraft(**fields)


def stored_leaves(database: Any) -> list[bytes]:
    return [bytes(d["leaf"]) for d in database[ENTRIES].find().sort("_id", 1)]


def test_concurrent_appends_leave_no_gap_and_no_fork(database: Any) -> None:
    failures: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            own = repository(database)
            for number in range(first, first + 8):
                own.append(notice(number))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    log = repository(database)
    leaves = stored_leaves(database)
    assert [json.loads(leaf)["index"] for leaf in leaves] == list(range(32))
    size, root = log.head()
    assert size == 32 and root == rfc9162.MTH(leaves)


def test_every_proof_from_stored_nodes_holds_under_the_rfc_verifier(database: Any) -> None:
    log = repository(database)
    for number in range(21):
        log.append(notice(number))
    leaves = stored_leaves(database)
    for size in (1, 2, 5, 8, 13, 21):
        root = rfc9162.MTH(leaves[:size])
        assert log.root(size) == root
        for index in range(size):
            path = log.inclusion_proof(index, size)
            assert path == rfc9162.PATH(index, leaves[:size])
            assert rfc9162.verify_inclusion(
                rfc9162.leaf_hash(leaves[index]), index, size, path, root
            )
        for first in range(1, size + 1):
            proof = log.consistency_proof(first, size)
            assert rfc9162.verify_consistency(first, size, proof, rfc9162.MTH(leaves[:first]), root)


def test_queued_drafts_are_appended_in_batches_in_order_and_once(database: Any) -> None:
    log = repository(database)
    log.append(notice(0))  # a staff-style append before the queue: the batch follows it
    for number in range(1, 24):
        log.run_in_transaction(lambda n=number: log.enqueue(notice(n)))
    assert log.size() == 1 and log.pending() == 23
    first = log.integrate(limit=10)
    assert [entry.index for entry in first] == list(range(1, 11))
    while log.integrate(limit=10):
        pass
    assert log.pending() == 0
    leaves = stored_leaves(database)
    titles = [json.loads(leaf)["title"] for leaf in leaves]
    assert titles == [f"通知 {n}" for n in range(24)]
    size, root = log.head()
    assert size == 24 and root == rfc9162.MTH(leaves)
    for index in (0, 7, 23):
        assert log.inclusion_proof(index, 24) == rfc9162.PATH(index, leaves)


def test_a_queued_draft_the_log_refuses_is_kept_aside_and_holds_nothing_up(
    database: Any,
) -> None:
    log = repository(database)
    log.run_in_transaction(lambda: log.enqueue(notice(0)))
    log.run_in_transaction(lambda: log.enqueue(notice(1, supersedes=99)))  # no entry 99
    log.run_in_transaction(lambda: log.enqueue(notice(2)))
    appended = log.integrate()
    assert [entry.title for entry in appended] == ["通知 0", "通知 2"]
    refused = list(database[PENDING].find())
    assert len(refused) == 1 and "supersedes" in refused[0]["refused"]
    assert log.integrate() == []  # the refused draft is not tried again and again


def test_a_queued_draft_rolled_back_with_its_transaction_is_never_appended(
    database: Any,
) -> None:
    log = repository(database)

    def enqueue_then_fail() -> None:
        log.enqueue(notice(0))
        raise RuntimeError("the handler failed after queueing")

    with pytest.raises(RuntimeError):
        log.run_in_transaction(enqueue_then_fail)
    assert log.pending() == 0 and log.integrate() == [] and log.size() == 0


def test_a_proof_reads_a_logarithmic_number_of_stored_nodes(database: Any) -> None:
    log = repository(database)
    for number in range(64):
        log.append(notice(number))
    # Perfect subtrees only: 64 leaves + 32 + 16 + 8 + 4 + 2 + 1 nodes.
    assert database[NODES].count_documents({}) == 127
    assert len(log.inclusion_proof(37, 64)) == 6


def test_figures_are_published_once_and_corrected_when_the_month_changes(database: Any) -> None:
    log = repository(database)
    log.append(
        domain.incident_concluded(
            incident_id="INC-1", category="facility_damaged", sensitive=False,
            community=COMMUNITY, outcome="closed_resolved", answered_in_time=True,
            at=datetime.now(UTC),
        )
    )  # fmt: skip
    log.count_mediation(community=COMMUNITY, month=MONTH, outcome="agreed")
    first = log.publish_month(COMMUNITY, MONTH)
    assert [e.kind for e in first] == ["mediation_statistics", "incident_summary"]
    assert log.publish_month(COMMUNITY, MONTH) == []
    log.count_mediation(community=COMMUNITY, month=MONTH, outcome="failed")
    corrected = log.publish_month(COMMUNITY, MONTH)
    assert [e.supersedes for e in corrected] == [first[0].index, first[1].index]
    assert corrected[1].body["mediation_closed"] == {"agreed": 1, "failed": 1}
    assert corrected[1].body["concluded"] == {"closed_resolved": 1}


def test_a_category_never_reported_is_treated_as_sensitive(database: Any) -> None:
    log = repository(database)
    assert log.is_sensitive("something_new")
    log.remember_category("facility_damaged", name_zh="公共设施损坏", sensitive=False)
    assert not log.is_sensitive("facility_damaged")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=personal_data(), before=FREE_TEXT, after=FREE_TEXT)
def test_personal_data_in_an_event_fed_entry_never_reaches_the_store(
    database: Any, data: tuple[str, str, str, tuple[str, ...]], before: str, after: str
) -> None:
    """Whatever text an event-fed draft carries, what is stored has no trace of the datum."""
    _, embedded, datum, names = data
    text = before + embedded + after
    draft = notice(0, title=f"事项{text}", body={"note": text, "items": [text]})
    if names:  # known names come from the producer, as a staff entry's ``parties`` do
        redacted_fields, _ = guard.redact_fields({"title": draft.title, "body": dict(draft.body)},
                                                 names)  # fmt: skip
        draft = replace(draft, title=redacted_fields["title"], body=redacted_fields["body"])
    redacted, _ = domain.guarded(draft)
    entry = repository(database).append(redacted)
    stored = database[ENTRIES].find_one({"_id": entry.index})
    leaf = json.loads(bytes(stored["leaf"]))
    # The times are the store's, not the datum's: a plate's ``000`` may turn up
    # in their microseconds by chance.
    for document in (stored, leaf):
        document.pop("published_at", None)
    stored.pop("leaf")
    shown = json.dumps(stored, default=str, ensure_ascii=False)
    leaf_shown = json.dumps(leaf, ensure_ascii=False)
    for trace in traces(datum):
        assert trace not in shown
        assert trace not in leaf_shown
