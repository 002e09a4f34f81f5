"""The audit trail on the real store: in the change's transaction, chained, tamper-evident."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ import audit, cli
from shequ.store import Repository, database_name, ensure_indexes
from tests.conftest import Servers

pytestmark = pytest.mark.integration


class Things(Repository):
    def change(self, thing_id: str, value: int, *, fail: bool = False) -> None:
        def work() -> None:
            before = self.db["things"].find_one({"_id": thing_id}, session=self.session)
            after = {"_id": thing_id, "value": value}
            self.db["things"].replace_one(
                {"_id": thing_id}, after, upsert=True, session=self.session
            )
            self.audit("thing", thing_id, before, after)
            if fail:
                raise RuntimeError("the change fails after its record was written")

        self.run_in_transaction(work)


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"audit_{uuid.uuid4().hex[:8]}"
    ensure_indexes(client[name], Things)
    yield client[name]
    client.drop_database(name)
    client.close()


def things(database: Any, sub: str = "u-1") -> Things:
    repository = Things(database, service="demo", district="dev")
    repository.actor = {"sub": sub, "roles": ["admin"]}
    repository.action = "demo.thing.change"
    return repository


def test_each_change_has_one_record_with_hashes_of_before_and_after(database: Any) -> None:
    things(database).change("t-1", 1)
    things(database, "u-2").change("t-1", 2)
    first, second = database[audit.AUDIT].find({}, sort=[("seq", 1)])
    assert first["before"] is None
    assert first["after"] == audit.object_hash({"_id": "t-1", "value": 1})
    assert second["before"] == first["after"]
    assert second["after"] == audit.object_hash({"_id": "t-1", "value": 2})
    assert second["actor"] == {"sub": "u-2", "roles": ["admin"]}
    assert second["object"] == {"kind": "thing", "id": "t-1"}
    assert second["action"] == "demo.thing.change"
    assert second["prev"] == first["hash"] and second["seq"] > first["seq"]
    assert audit.verify(database) == []


def test_a_change_that_fails_leaves_neither_the_change_nor_its_record(database: Any) -> None:
    things(database).change("t-1", 1)
    with pytest.raises(RuntimeError):
        things(database).change("t-1", 2, fail=True)
    assert database["things"].find_one({"_id": "t-1"})["value"] == 1
    assert database[audit.AUDIT].count_documents({}) == 1


def test_a_record_cannot_be_written_outside_a_transaction(database: Any) -> None:
    with pytest.raises(RuntimeError, match="inside transaction"):
        things(database).audit("thing", "t-1", None, {"value": 1})


def test_editing_a_record_shows_in_verification(database: Any) -> None:
    for value in range(3):
        things(database).change("t-1", value)
    database[audit.AUDIT].update_one({"seq": 2}, {"$set": {"actor.sub": "someone-else"}})
    problems = audit.verify(database)
    assert any("record 2: its content does not match its hash" in p for p in problems)


def test_deleting_a_record_shows_in_verification(database: Any) -> None:
    for value in range(3):
        things(database).change("t-1", value)
    database[audit.AUDIT].delete_one({"seq": 2})
    assert any("record 3: links to a record that is missing" in p for p in audit.verify(database))


def test_rewriting_a_record_with_a_fresh_hash_breaks_the_next_ones_link(database: Any) -> None:
    for value in range(3):
        things(database).change("t-1", value)
    forged = database[audit.AUDIT].find_one({"seq": 2})
    forged["after"] = audit.object_hash({"_id": "t-1", "value": 99})
    forged["hash"] = audit.record_hash(forged)
    database[audit.AUDIT].replace_one({"_id": forged["_id"]}, forged)
    assert any("record 3: links to a record" in p for p in audit.verify(database))


def test_queries_filter_by_object_actor_and_time_and_page(database: Any) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(5):
        things(database, f"u-{n % 2}").change(f"t-{n % 3}", n)
    page, after = audit.query(database, {}, after=None, limit=2)
    assert [r["seq"] for r in page] == [1, 2] and after == 2
    rest, done = audit.query(database, {}, after=after, limit=10)
    assert [r["seq"] for r in rest] == [3, 4, 5] and done is None
    by_object, _ = audit.query(database, {"object_id": "t-0"}, after=None, limit=10)
    assert [r["seq"] for r in by_object] == [1, 4]
    by_actor, _ = audit.query(database, {"actor": "u-1"}, after=None, limit=10)
    assert [r["seq"] for r in by_actor] == [2, 4]
    assert audit.query(database, {"to": start}, after=None, limit=10)[0] == []
    assert len(audit.query(database, {"from_": start}, after=None, limit=10)[0]) == 5


def test_a_record_links_past_a_gap_wider_than_the_window_it_looks_in_first(
    database: Any,
) -> None:
    things(database).change("t-1", 1)
    first = database[audit.AUDIT].find_one({"seq": 1})
    # As many aborted changes in a row as the window is wide: their numbers are gone.
    database[audit.COUNTER].update_one({"_id": audit.AUDIT}, {"$inc": {"seq": audit.PREV_WINDOW}})
    things(database).change("t-1", 2)
    second = database[audit.AUDIT].find_one({"seq": audit.PREV_WINDOW + 2})
    assert second["prev"] == first["hash"]
    assert audit.verify(database) == []


class Batches(Things):
    def change_many(self, values: dict[str, int]) -> None:
        changes = [(key, None, {"_id": key, "value": value}) for key, value in values.items()]
        self.run_in_transaction(lambda: self.audit_many("thing", changes))


def test_a_batch_is_recorded_in_one_write_numbered_and_chained_in_order(database: Any) -> None:
    things(database).change("t-0", 0)
    batch = Batches(database, service="demo", district="dev")
    batch.actor, batch.action = {"sub": "u-1", "roles": ["admin"]}, "demo.thing.change"
    batch.change_many({f"t-{n}": n for n in range(1, 6)})
    records = list(database[audit.AUDIT].find({}, sort=[("seq", 1)]))
    assert [r["seq"] for r in records] == list(range(1, 7))
    assert [r["object"]["id"] for r in records] == [f"t-{n}" for n in range(6)]
    assert all(
        later["prev"] == earlier["hash"]
        for earlier, later in zip(records, records[1:], strict=False)
    )
    assert all(r["action"] == "demo.thing.change" for r in records[1:])
    assert audit.verify(database) == []


def test_a_record_written_in_a_transaction_older_than_many_others_still_links(
    database: Any,
) -> None:
    """A long transaction (the sequencer's batch) does not see the records committed
    since it began: nothing is in the first window below its number, so it looks
    further down, a wider range at a time."""
    things(database).change("t-1", 1)
    first = database[audit.AUDIT].find_one({"seq": 1})
    client = database.client
    with client.start_session() as session, session.start_transaction():
        database["things"].find_one({"_id": "t-1"}, session=session)  # the snapshot is taken
        for value in range(2, 2 + 3 * audit.PREV_WINDOW):
            things(database, "u-other").change("t-2", value)  # committed, but not seen
        record = audit.append(
            database, session, actor={"sub": "u-1", "roles": []}, action="demo.late",
            kind="thing", object_id="t-1", before=None, after={"v": 1},
        )  # fmt: skip
    assert record["prev"] == first["hash"]
    assert audit.verify(database) == []


@pytest.fixture
def grid(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A grid database of its own, where the ``shequ`` command looks for it."""
    prefix = f"a{uuid.uuid4().hex[:8]}_"
    client = servers.mongo()
    database = client[database_name("grid", prefix)]
    ensure_indexes(database, Things)
    monkeypatch.setenv("SHEQU_MONGO_URI", servers.mongo_uri)
    monkeypatch.setenv("SHEQU_MONGO_DATABASE_PREFIX", prefix)
    yield database
    client.drop_database(database_name("grid", prefix))
    client.close()


def test_the_operators_command_reports_a_trail_tampered_with(
    grid: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shequ audit verify``: what an auditor runs, so ``verify`` is not only a test's."""
    for value in range(3):
        things(grid).change("t-1", value)
    assert cli.main(["audit", "verify", "grid"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "grid": {"records": 3, "anchors": 0, "problems": []}
    }

    grid[audit.AUDIT].update_one({"seq": 2}, {"$set": {"actor.sub": "someone-else"}})
    assert cli.main(["audit", "verify", "grid"]) == 1
    assert json.loads(capsys.readouterr().out)["grid"]["problems"] == [
        "record 2: its content does not match its hash"
    ]

    assert cli.main(["audit", "verify", "gird"]) == 2
    assert "no service gird" in capsys.readouterr().err


def old_record(database: Any, thing_id: str, minutes_ago: int) -> None:
    """A record as written that long ago (on its own, as a read's record is)."""
    audit.append(
        database, None, actor={"sub": "u-1", "roles": ["admin"]}, action="demo.thing.read",
        kind="thing", object_id=thing_id, before=None, after=None,
        at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )  # fmt: skip


def test_an_anchor_kept_elsewhere_shows_the_deletion_the_links_cannot(database: Any) -> None:
    for n in range(3):
        old_record(database, f"t-{n}", minutes_ago=10)
    kept = audit.anchor(database)
    assert (kept["seq"], kept["count"]) == (3, 3)
    assert audit.check_anchor(database, kept) == []

    old_record(database, "t-later", minutes_ago=5)  # appended after: the anchor still holds
    assert audit.check_anchor(database, kept) == []
    database[audit.AUDIT].delete_one({"seq": 4})  # the newest: nothing links to it
    database[audit.AUDIT].delete_one({"seq": 3})  # the newest once more
    assert audit.verify(database) == []  # the links alone cannot see it
    assert audit.check_anchor(database, kept) == [
        f"the records up to 3, anchored at {kept['at']}: 1 of them deleted"
    ]


def test_an_anchor_leaves_records_that_a_transaction_may_yet_precede_for_the_next(
    database: Any,
) -> None:
    old_record(database, "t-1", minutes_ago=10)
    things(database).change("t-2", 1)  # just now: within the settling time
    kept = audit.anchor(database)
    assert (kept["seq"], kept["count"]) == (1, 1)
    later = audit.anchor(database, now=datetime.now(UTC) + audit.ANCHOR_SETTLE * 2)
    assert (later["seq"], later["count"]) == (2, 2)
    assert audit.check_anchor(database, later) == []

    replaced = database[audit.AUDIT].find_one({"seq": 1})
    database[audit.AUDIT].replace_one(
        {"seq": 1}, {**replaced, "actor": {"sub": "someone-else", "roles": ["admin"]}}
    )
    assert audit.check_anchor(database, later) == []  # hashes unchanged: verify sees this one
    database[audit.AUDIT].update_one({"seq": 1}, {"$set": {"hash": "0" * 64}})
    assert audit.check_anchor(database, later) == [
        f"the records up to 2, anchored at {later['at']}: one or more replaced or renumbered"
    ]


def test_operators_keep_anchors_in_a_file_and_verify_against_them(
    grid: Any, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    for n in range(2):
        old_record(grid, f"t-{n}", minutes_ago=10)
    assert cli.main(["audit", "anchor", "grid", "--append", str(anchors)]) == 0
    line = capsys.readouterr().out
    assert json.loads(line)["grid"]["count"] == 2 and line.count("\n") == 1
    assert anchors.read_text() == line
    assert cli.main(["audit", "verify", "grid", "--anchors", str(anchors)]) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == {
        "records": 2, "anchors": 1, "problems": []
    }  # fmt: skip

    grid[audit.AUDIT].delete_one({"seq": 2})
    assert cli.main(["audit", "verify", "grid"]) == 0  # without the anchors: unseen
    capsys.readouterr()
    assert cli.main(["audit", "verify", "grid", "--anchors", str(anchors)]) == 1
    (problem,) = json.loads(capsys.readouterr().out)["grid"]["problems"]
    assert problem.endswith("1 of them deleted")

    anchors.write_text("not json\n")
    assert cli.main(["audit", "verify", "grid", "--anchors", str(anchors)]) == 2
    assert "line 1 is not a `shequ audit anchor` line" in capsys.readouterr().err
