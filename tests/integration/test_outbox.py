"""The transactional outbox and the processed-event marks, on the real store and broker."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
import pymongo
import pytest

from shequ.contracts import new_event
from shequ.embedded import SecantusServer
from shequ.outbox import (
    POSITION_ID,
    RELAY_LEASE,
    RELAY_LEASE_ID,
    OutboxRelay,
    process_identity,
    published_ids,
)
from shequ.store import OUTBOX, AlreadyProcessed, Repository, ensure_indexes
from tests.conftest import Servers
from tests.support.flaky import THING_HAPPENED_V1

pytestmark = pytest.mark.integration


class Things(Repository):
    def happen(self, thing_id: str) -> None:
        self.db["things"].insert_one({"_id": thing_id}, session=self.session)
        self.emit(
            THING_HAPPENED_V1,
            subject=thing_id,
            sequence=1,
            data={"thing_id": thing_id, "poison": False},
        )


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"outbox_{uuid.uuid4().hex[:8]}"
    ensure_indexes(client[name], Things)  # as a service's store does when it starts
    yield client[name]
    client.drop_database(name)
    client.close()


def repository(database: Any) -> Things:
    return Things(database, service="testsource", district="test")


def test_a_state_change_and_its_event_commit_together(database: Any) -> None:
    things = repository(database)
    things.run_in_transaction(lambda: things.happen("t-1"))
    assert database["things"].count_documents({"_id": "t-1"}) == 1
    entry = database[OUTBOX].find_one({"body.subject": "t-1"})
    assert entry["body"]["type"] == "shequ.testsource.thing.happened"


def test_an_aborted_transaction_leaves_neither_state_nor_event(database: Any) -> None:
    things = repository(database)

    def fail_after_writing() -> None:
        things.happen("t-2")
        raise RuntimeError("the handler failed after writing")

    with pytest.raises(RuntimeError):
        things.run_in_transaction(fail_after_writing)
    assert database["things"].count_documents({}) == 0
    assert database[OUTBOX].count_documents({}) == 0


def test_events_emitted_together_are_published_in_the_order_emitted(database: Any) -> None:
    things = repository(database)
    subjects = [f"batch-{n}" for n in range(12)]

    def emit_batch() -> None:
        things.emit_many(
            THING_HAPPENED_V1,
            [
                (subject, n, {"thing_id": subject, "poison": False})
                for n, subject in enumerate(subjects)
            ],
        )

    things.run_in_transaction(emit_batch)
    stored = database[OUTBOX].find().sort([("created_at", 1), ("_id", 1)])
    assert [entry["body"]["subject"] for entry in stored] == subjects


def test_emitting_outside_a_transaction_is_refused(database: Any) -> None:
    with pytest.raises(RuntimeError, match="inside transaction"):
        repository(database).happen("t-3")


def test_a_second_processed_mark_rolls_back_the_handlers_writes(database: Any) -> None:
    things = repository(database)
    event = new_event(
        THING_HAPPENED_V1,
        district="t",
        subject="s",
        sequence=1,
        data={"thing_id": "x", "poison": False},
    )

    def handle(thing_id: str) -> None:
        things.mark_processed("handler", event)
        database["effects"].insert_one({"thing": thing_id}, session=things.session)

    things.run_in_transaction(lambda: handle("first"))
    with pytest.raises(AlreadyProcessed):
        things.run_in_transaction(lambda: handle("second"))
    assert [d["thing"] for d in database["effects"].find()] == ["first"]


@pytest.mark.parametrize("following", [False, True], ids=["catching-up", "following"])
def test_the_relay_publishes_with_confirms_and_logs_what_it_published(
    database: Any, servers: Servers, following: bool
) -> None:
    """Entries written before the relay ever ran are read from the outbox;
    entries written while it runs come to it on the change stream."""
    things = repository(database)
    queue_name = f"test-relay-{uuid.uuid4().hex[:8]}"
    with kombu.Connection(servers.amqp_uri) as connection:
        exchange = kombu.Exchange("testsource.events", type="topic", durable=True)
        queue = kombu.Queue(queue_name, exchange, routing_key="thing.happened", auto_delete=False)
        queue(connection.default_channel).declare()
        relay = relay_of(database, servers)
        try:
            if following:
                assert relay.relay_once() == 0
            for n in range(3):
                things.run_in_transaction(lambda n=n: things.happen(f"r-{n}"))
            assert relay.relay_once() == 3
            assert relay.relay_once() == 0
        finally:
            relay.stop()
        received = []
        bound = queue(connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            received.append(message)
        bound.delete()
    assert [json.loads(m.body)["subject"] for m in received] == ["r-0", "r-1", "r-2"]
    assert received[0].content_type == "application/cloudevents+json"
    assert received[0].properties["delivery_mode"] == 2
    assert published_ids(database) == {e["_id"] for e in database[OUTBOX].find()}
    assert relay.pending_count() == 0


def subjects(database: Any, ids: set[str]) -> set[str]:
    return {e["body"]["subject"] for e in database[OUTBOX].find({"_id": {"$in": list(ids)}})}


@pytest.mark.parametrize("following", [False, True], ids=["catching-up", "following"])
def test_the_relay_logs_only_what_the_broker_confirmed_and_publishes_the_rest_again(
    database: Any, servers: Servers, following: bool
) -> None:
    """A full queue that rejects publishes makes the broker nack part of one
    batch: the position stays before it, and only what was nacked goes again."""
    things = repository(database)
    queue_name = f"test-relay-full-{uuid.uuid4().hex[:8]}"
    with kombu.Connection(servers.amqp_uri) as connection:
        exchange = kombu.Exchange("testsource.events", type="topic", durable=True)
        queue = kombu.Queue(
            queue_name,
            exchange,
            routing_key="thing.happened",
            auto_delete=False,
            queue_arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
        )
        bound = queue(connection.default_channel)
        bound.declare()
        relay = relay_of(database, servers)
        try:
            if following:
                assert relay.relay_once() == 0
            for n in range(5):
                things.run_in_transaction(lambda n=n: things.happen(f"p-{n}"))
            assert relay.relay_once() == 2
            assert subjects(database, published_ids(database)) == {"p-0", "p-1"}
            assert relay.pending_count() == 3
            bound.purge()
            assert relay.relay_once() == 2
            bound.purge()
            assert relay.relay_once() == 1
            assert relay.relay_once() == 0
        finally:
            relay.stop()
            bound.delete()
    assert subjects(database, published_ids(database)) == {f"p-{n}" for n in range(5)}
    assert relay.pending_count() == 0


def relay_of(database: Any, servers: Servers, **options: Any) -> OutboxRelay:
    """A relay of the test outbox, waiting 0.1 s on an empty stream unless told otherwise."""
    options.setdefault("poll_interval", 0.1)
    return OutboxRelay(database, amqp_uri=servers.amqp_uri, service="testsource", **options)


@contextlib.contextmanager
def relaying(
    database: Any, servers: Servers, name: str, **options: Any
) -> Iterator[tuple[OutboxRelay, list[str]]]:
    """A relay of the test outbox, and what its bound queue got (filled as the block ends)."""
    received: list[str] = []
    with kombu.Connection(servers.amqp_uri) as connection:
        exchange = kombu.Exchange("testsource.events", type="topic", durable=True)
        queue = kombu.Queue(
            f"{name}-{uuid.uuid4().hex[:8]}", exchange, "thing.happened", auto_delete=False
        )
        bound = queue(connection.default_channel)
        bound.declare()
        relay = relay_of(database, servers, **options)
        try:
            yield relay, received
        finally:
            relay.stop()
            while (message := bound.get(no_ack=True)) is not None:
                received.append(json.loads(message.body)["subject"])
            bound.delete()


def lease_held_by(database: Any, holder: dict[str, Any]) -> None:
    """The service's relay lease held by ``holder`` for another hour."""
    until = datetime.now(UTC) + timedelta(hours=1)
    database[RELAY_LEASE].insert_one({"_id": RELAY_LEASE_ID, **holder, "until": until})


@pytest.mark.parametrize("following", [False, True], ids=["catching-up", "following"])
def test_a_backlog_leaves_once_each_in_the_order_written(
    database: Any, servers: Servers, following: bool
) -> None:
    """Many batches waiting, read from the outbox or from the stream."""
    things = repository(database)
    count = 35
    with relaying(database, servers, "test-relay-backlog", batch_size=3) as (relay, received):
        if following:
            assert relay.relay_once() == 0
        for n in range(count):
            things.run_in_transaction(lambda n=n: things.happen(f"h-{n:03d}"))
        while relay.relay_once():
            pass
        assert relay.pending_count() == 0
    assert received == [f"h-{n:03d}" for n in range(count)]


def test_one_relay_at_a_time_publishes_a_services_outbox(database: Any, servers: Servers) -> None:
    """Replicas share the outbox; the one holding the lease publishes, and a
    clean stop hands the lease over at once."""
    things = repository(database)
    things.run_in_transaction(lambda: things.happen("first"))
    with relaying(database, servers, "test-relay-lease") as (standby, received):
        holder = relay_of(database, servers)
        try:
            assert holder.relay_once() == 1
            things.run_in_transaction(lambda: things.happen("second"))
            assert standby.relay_once() == 0
            assert standby.pending_count() == 1
            holder.stop()
            assert standby.relay_once() == 1
            things.run_in_transaction(lambda: things.happen("third"))
            assert holder.relay_once() == 0
            assert standby.relay_once() == 1
        finally:
            holder.stop()
    assert received == ["first", "second", "third"]


def test_a_lease_held_elsewhere_is_waited_out(database: Any, servers: Servers) -> None:
    """Of a holder on another host nothing is known: its lease has to run out."""
    things = repository(database)
    things.run_in_transaction(lambda: things.happen("waited"))
    lease_held_by(database, {**process_identity(), "host": "another-host", "owner": "elsewhere"})
    with relaying(database, servers, "test-relay-elsewhere") as (relay, received):
        assert relay.relay_once() == 0
        database[RELAY_LEASE].update_one(
            {"_id": RELAY_LEASE_ID}, {"$set": {"until": datetime.now(UTC)}}
        )
        assert relay.relay_once() == 1
    assert received == ["waited"]


def test_a_restart_takes_over_from_its_own_ended_process_at_once(
    database: Any, servers: Servers
) -> None:
    """A relay killed between publishing and marking (its lease an hour from
    running out): the process restarted on the same host republishes at once."""
    things = repository(database)
    things.run_in_transaction(lambda: things.happen("republished"))
    ended = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    holder = {**process_identity(ended.pid), "owner": "killed"}
    ended.communicate(b"")
    lease_held_by(database, holder)
    with relaying(database, servers, "test-relay-restart") as (relay, received):
        assert relay.relay_once() == 1
    assert received == ["republished"]


def test_a_relay_whose_stream_history_is_gone_reads_the_outbox_instead(
    servers: Servers, tmp_path: Any
) -> None:
    """The store keeps a bounded oplog: a relay stopped for longer than it
    covers cannot resume its stream, and publishes from the outbox what the
    publication log does not hold, the rest not again."""
    store = SecantusServer(tmp_path / "store", oplog_entries=100)
    store.start()
    client = None
    try:
        client = pymongo.MongoClient(store.mongo_uri, tz_aware=True)
        database = client["outbox_history"]
        ensure_indexes(database, Things)
        things = repository(database)
        with relaying(database, servers, "test-relay-history") as (relay, received):
            assert relay.relay_once() == 0
            things.run_in_transaction(lambda: things.happen("before"))
            assert relay.relay_once() == 1
            relay.stop()
            things.run_in_transaction(lambda: things.happen("while-away"))
            for start in range(0, 2500, 500):  # more operations than the oplog keeps
                database["churn"].insert_many([{"n": n} for n in range(start, start + 500)])
            position = database[RELAY_LEASE].find_one({"_id": POSITION_ID})
            with pytest.raises(pymongo.errors.OperationFailure) as lost:
                database[OUTBOX].watch(resume_after=position["token"]).try_next()
            assert lost.value.code == 286
            after = relay_of(database, servers)
            try:
                assert after.relay_once() == 1
                things.run_in_transaction(lambda: things.happen("after"))
                assert after.relay_once() == 1
                assert after.relay_once() == 0
            finally:
                after.stop()
        assert received == ["before", "while-away", "after"]
    finally:
        if client is not None:
            client.close()
        store.stop()


def test_an_idle_relay_keeps_its_position_up_with_the_stream(
    database: Any, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store keeps the stream's history for a bounded time: a service with
    no events for longer must still resume from its position, not fall back."""
    monkeypatch.setattr("shequ.outbox.POSITION_REFRESH_SECONDS", 0.0)
    monkeypatch.setattr("shequ.outbox.POSITION_SAVE_SECONDS", 0.0)
    with relaying(database, servers, "test-relay-idle") as (relay, _):
        assert relay.relay_once() == 0
        before = database[RELAY_LEASE].find_one({"_id": POSITION_ID})["token"]
        database["elsewhere"].insert_one({"_id": "not an event"})
        assert relay.relay_once() == 0
        after = database[RELAY_LEASE].find_one({"_id": POSITION_ID})["token"]
    assert after != before


def test_a_relay_resuming_from_an_older_position_publishes_nothing_the_log_holds(
    database: Any, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The position is written at most once a second; a relay that dies
    between two writes leaves one behind its log, and its successor reads
    those entries again from the stream but does not publish them again."""
    monkeypatch.setattr("shequ.outbox.POSITION_SAVE_SECONDS", 3600.0)
    things = repository(database)
    with relaying(database, servers, "test-relay-stale") as (successor, received):
        died = relay_of(database, servers)
        assert died.relay_once() == 0  # the first position is written at once
        written = database[RELAY_LEASE].find_one({"_id": POSITION_ID})
        things.run_in_transaction(lambda: things.happen("published-once"))
        assert died.relay_once() == 1
        assert database[RELAY_LEASE].find_one({"_id": POSITION_ID}) == written
        # It dies without a word: no clean stop, its lease runs out.
        database[RELAY_LEASE].update_one(
            {"_id": RELAY_LEASE_ID}, {"$set": {"until": datetime.now(UTC)}}
        )
        assert successor.relay_once() == 0
        things.run_in_transaction(lambda: things.happen("next"))
        assert successor.relay_once() == 1
    assert received == ["published-once", "next"]


def test_entries_an_earlier_relay_marked_sent_are_not_published_again(
    database: Any, servers: Servers
) -> None:
    """A database from before the publication log: its relay marked each entry
    sent, and a relay of this version starts there with no position."""
    things = repository(database)
    for subject in ("marked", "unmarked"):
        things.run_in_transaction(lambda subject=subject: things.happen(subject))
    database[OUTBOX].update_one(
        {"body.subject": "marked"}, {"$set": {"status": "sent", "sent_at": datetime.now(UTC)}}
    )
    with relaying(database, servers, "test-relay-upgrade") as (relay, received):
        assert relay.relay_once() == 1
        assert relay.relay_once() == 0
    assert received == ["unmarked"]
