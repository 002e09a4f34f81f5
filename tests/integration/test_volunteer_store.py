"""The volunteer repository on the real store: conditional steps, one visit a month, one approval.

These are the guarantees the timers rely on with several replicas: two
writers of the same task step cannot both win, a household's visit task for
a month exists once however many replicas generate the round, and a ledger
entry is approved (and announced) once. And names and phones are sealed at
rest: the raw documents read through pymongo do not contain them.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pymongo import IndexModel

from shequ import audit, sealing
from shequ.store import OUTBOX, OUTBOX_ORDER_INDEX
from shequ_services.volunteer import domain, ledger, rounds
from shequ_services.volunteer.roster import load_seed
from shequ_services.volunteer.store import (
    Duplicate,
    EntryChanged,
    TaskChanged,
    VolunteerRepository,
)
from tests.conftest import Servers

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(UTC)
RULES = domain.DispatchRules(parallel=1, response_window=timedelta(minutes=5))
SEED = Path(domain.__file__).parent / "seed.yaml"
OLD, NEW = sealing.new_key(), sealing.new_key()


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"volunteer_{uuid.uuid4().hex[:8]}"
    database = client[name]
    for collection, models in VolunteerRepository.INDEXES.items():
        database[collection].create_indexes(models)
    database[OUTBOX].create_indexes([IndexModel(OUTBOX_ORDER_INDEX)])
    yield database
    client.drop_database(name)
    client.close()


def repository(database: Any, active: str = "k1") -> VolunteerRepository:
    repo = VolunteerRepository(database, service="volunteer", district="test")
    repo.keyring = sealing.Keyring.from_config(
        f"k1:{OLD},k2:{NEW}", active, "", service="volunteer", index_required=False
    )
    return repo


def outbox_types(database: Any, subject: str) -> list[str]:
    found = database[OUTBOX].find({"body.subject": subject}).sort("body.sequence", 1)
    return [d["type"] for d in found]


def offered_task(database: Any) -> domain.Task:
    task = domain.staff_task(
        kind="assist", community="c1", grid_cell="qy-01", skills=None, language=None,
        due_at=None, now=NOW,
    )  # fmt: skip
    return repository(database).create(*domain.start_offers(task, ["v1", "v2"], NOW, RULES))


def test_a_task_round_trips_with_its_offers_and_events_in_sequence(database: Any) -> None:
    task = offered_task(database)
    stored = repository(database).task(task.id)
    assert (stored.id, stored.status, stored.candidates) == (task.id, "open", ("v2",))
    assert [(o.volunteer_id, o.status) for o in stored.offers] == [("v1", "pending")]
    assert outbox_types(database, task.id) == [
        "shequ.volunteer.task.created", "shequ.volunteer.task.offered",
    ]  # fmt: skip
    assert [t.id for t in repository(database).offered_to("v1")] == [task.id]
    assert repository(database).due(NOW + timedelta(minutes=5), limit=10)[0].id == task.id


def test_of_two_writers_of_the_same_step_only_one_wins_and_only_its_events_exist(
    database: Any,
) -> None:
    task = offered_task(database)
    later = NOW + timedelta(minutes=6)
    accepted, accept_events = domain.answer(task, "v1", accept=True, now=NOW, rules=RULES)
    lapsed, lapse_events = domain.lapse(task, later, RULES)
    repository(database).save(task, accepted, accept_events)
    with pytest.raises(TaskChanged):
        repository(database).save(task, lapsed, lapse_events)
    assert repository(database).task(task.id).status == "accepted"
    loads = repository(database).recent_loads(NOW - timedelta(days=30), among=["v1", "v2"])
    assert loads == {"v1": 1}
    assert outbox_types(database, task.id)[-1] == "shequ.volunteer.task.accepted"
    assert "shequ.volunteer.task.expired" not in outbox_types(database, task.id)


def test_one_of_several_replicas_holds_the_rounds_lease_until_it_lapses(database: Any) -> None:
    won: list[str] = []

    def claim(holder: str) -> None:
        if repository(database).acquire_lease("round:2026-12", holder, NOW, timedelta(minutes=10)):
            won.append(holder)

    threads = [threading.Thread(target=claim, args=(f"replica-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    store = repository(database)
    assert store.acquire_lease("round:2026-12", won[0], NOW, timedelta(minutes=10))  # renewal
    assert not store.acquire_lease("round:2026-12", "late", NOW, timedelta(minutes=10))
    assert store.acquire_lease("round:2026-12", "late", NOW + timedelta(minutes=11), timedelta(1))
    store.release_lease("round:2026-12", "late", NOW)
    assert store.acquire_lease("round:2026-12", won[0], NOW + timedelta(seconds=1), timedelta(1))


def test_a_households_visit_for_a_month_is_stored_once(database: Any) -> None:
    households = [rounds.Household(f"hh-{n}", "c1", "qy-01", ("needy",)) for n in range(3)]
    for task in rounds.round_tasks(households, "2026-12", now=NOW, tz=TZ):
        repository(database).create(task)
    moved = replace(households[0], grid_cell="qy-02")
    (again, *_) = rounds.round_tasks([moved], "2026-12", now=NOW, tz=TZ)
    with pytest.raises(Duplicate):
        repository(database).create(replace(again, id="VT-other-id"))
    assert database["tasks"].count_documents({"household_id": "hh-0"}) == 1
    assert repository(database).round_households("2026-12") == {"hh-0", "hh-1", "hh-2"}
    assert database[OUTBOX].count_documents({"type": "shequ.volunteer.task.created"}) == 3


def test_an_entry_is_approved_once_even_by_two_approvers_at_once(database: Any) -> None:
    entry = ledger.service_entry(
        volunteer_id="v1", community="c1", teams=("t1",), minutes=45, served_at=NOW,
        task_id=None, recorded_by="v1", now=NOW,
    )  # fmt: skip
    repository(database).append(entry)
    first, first_events = ledger.approve(entry, approver="sw-1", now=NOW)
    second, second_events = ledger.approve(entry, approver="sw-2", now=NOW)
    repository(database).approve(entry, first, first_events)
    with pytest.raises(EntryChanged):
        repository(database).approve(entry, second, second_events)
    assert repository(database).entry(entry.id).approved_by == "sw-1"
    assert outbox_types(database, entry.id) == ["shequ.volunteer.hours.approved"]


def test_the_ledger_pages_in_service_time_order_through_entries_served_at_the_same_time(
    database: Any,
) -> None:
    """A page ends inside a run of entries with one time: the next starts after the
    last one by id, so none is repeated or skipped."""
    times = [NOW, NOW, NOW, NOW + timedelta(minutes=5), NOW - timedelta(days=40)]
    for number, served_at in enumerate(times):
        repository(database).append(
            ledger.service_entry(
                volunteer_id=f"v{number}",
                community="c1",
                teams=("t1",),
                minutes=30,
                served_at=served_at,
                task_id=None,
                recorded_by="sw-1",
                now=NOW + timedelta(hours=1),
            )
        )
    everything = repository(database).entries(communities=["c1"])
    order = [e.volunteer_id for e in everything]  # by time: v4, then v0-v2 (one time), v3
    assert (order[0], set(order[1:4]), order[4]) == ("v4", {"v0", "v1", "v2"}, "v3")
    paged: list[str] = []
    after = None
    while True:
        page = repository(database).entries(communities=["c1"], after=after, limit=2)
        paged += [e.id for e in page]
        if len(page) < 2:
            break
        after = page[-1]
    assert paged == [e.id for e in everything]
    # Within a month's bounds, the position never reaches back before them.
    start = NOW - timedelta(days=1)
    in_month = repository(database).entries(
        communities=["c1"], start=start, after=everything[0], limit=10
    )
    assert [e.id for e in in_month] == [e.id for e in everything[1:]]


def test_the_seed_is_written_once_and_volunteers_read_back_as_written(database: Any) -> None:
    teams, volunteers, households = load_seed(SEED)
    assert repository(database).seed_once(teams, volunteers, households, NOW)
    assert not repository(database).seed_once(teams, volunteers, households, NOW)
    assert database["volunteers"].count_documents({}) == len(volunteers)
    assert repository(database).volunteer(volunteers[0].id) == volunteers[0]
    changed, newest = repository(database).volunteers_changed_since(None)
    assert len(changed) == len(volunteers) and newest is not None
    assert repository(database).led_teams("sw-qy-01") == ["qy-t1"]


def raw(database: Any) -> str:
    """Every volunteer document as stored, as one text to search."""
    return json.dumps(list(database["volunteers"].find()), default=str, ensure_ascii=False)


def test_names_and_phones_are_sealed_at_rest(database: Any) -> None:
    teams, volunteers, households = load_seed(SEED)
    repository(database).seed_once(teams, volunteers, households, NOW)
    added = replace(volunteers[0], id="v-sealed", name="司马相如", phone="13900001111")
    repository(database).add_volunteer(added, NOW)
    text = raw(database)
    for volunteer in [*volunteers, added]:
        assert volunteer.name not in text and volunteer.phone not in text
    assert repository(database).volunteer("v-sealed") == added
    stored = database["volunteers"].find_one({"_id": "v-sealed"})
    assert sealing.is_sealed(stored["name"]) and stored["kids"] == ["k1"]


def test_a_name_moved_to_another_volunteer_does_not_open(database: Any) -> None:
    teams, volunteers, households = load_seed(SEED)
    repository(database).seed_once(teams, volunteers, households, NOW)
    first, second = volunteers[0].id, volunteers[1].id
    name = database["volunteers"].find_one({"_id": first})["name"]
    database["volunteers"].update_one({"_id": second}, {"$set": {"name": name}})
    with pytest.raises(sealing.UnsealError):
        repository(database).volunteer(second)


def test_rotation_reseals_old_keys_and_seals_volunteers_stored_in_the_clear(
    database: Any,
) -> None:
    teams, volunteers, households = load_seed(SEED)
    repository(database, active="k1").seed_once(teams, volunteers, households, NOW)
    # A volunteer written by a release before sealing: name and phone in the clear, no kids.
    legacy = replace(volunteers[0], id="v-legacy", name="王昭君", phone="13700002222")
    document = {**database["volunteers"].find_one({"_id": volunteers[0].id}), "_id": "v-legacy"}
    document.update(name=legacy.name, phone=legacy.phone)
    del document["kids"]
    database["volunteers"].insert_one(document)
    assert repository(database).volunteer("v-legacy") == legacy

    new = repository(database, active="k2")
    total = len(volunteers) + 1
    assert new.reseal_batch(limit=total) == total
    assert new.reseal_batch(limit=total) == 0
    assert legacy.name not in raw(database) and legacy.phone not in raw(database)
    assert {tuple(d["kids"]) for d in database["volunteers"].find()} == {("k2",)}
    assert new.volunteer("v-legacy") == legacy
    assert new.volunteer(volunteers[0].id) == volunteers[0]


def trail(database: Any, kind: str, object_id: str) -> list[dict[str, Any]]:
    found = database[audit.AUDIT].find({"object.kind": kind, "object.id": object_id})
    return list(found.sort("seq", 1))


def test_every_change_leaves_one_record_with_the_stored_documents_hashes(database: Any) -> None:
    """The volunteer service's routes call these methods once each (the e2e audit test
    covers the other services' routes; this one's dispatch races a recipe per route)."""
    teams, volunteers, households = load_seed(SEED)
    store = repository(database)
    store.actor, store.action = {"sub": "sw-1", "roles": ["community_staff"]}, "volunteer.test"
    store.seed_once(teams, volunteers, households, NOW)
    added = replace(volunteers[0], id="v-audit", name="司马相如", phone="13900001111")
    store.add_volunteer(added, NOW)
    store.replace_volunteer(replace(added, active=False), NOW + timedelta(seconds=1))
    store.add_team(domain.Team("t-audit", "c1", "审计队", ("sw-1",)))
    household = rounds.Household("hh-audit", "c1", "qy-01", ("needy",))
    store.add_household(household, NOW)
    store.replace_household(replace(household, grid_cell="qy-02"), NOW)
    task = offered_task(database)
    accepted, events = domain.answer(task, "v1", accept=True, now=NOW, rules=RULES)
    store.save(task, accepted, events)
    lapsed, lapse_events = domain.lapse(task, NOW + timedelta(minutes=6), RULES)
    with pytest.raises(TaskChanged):
        store.save(task, lapsed, lapse_events)
    entry = ledger.service_entry(
        volunteer_id="v1", community="c1", teams=("t1",), minutes=45, served_at=NOW,
        task_id=None, recorded_by="v1", now=NOW,
    )  # fmt: skip
    store.append(entry)
    store.approve(entry, *ledger.approve(entry, approver="sw-1", now=NOW))

    volunteer = trail(database, "volunteer", "v-audit")
    stored = database["volunteers"].find_one({"_id": "v-audit"})
    assert [(r["before"] is None, r["after"]) for r in volunteer][-1] == (
        False, audit.object_hash(stored),
    )  # fmt: skip
    assert len(volunteer) == 2 and volunteer[0]["after"] == volunteer[1]["before"]
    assert volunteer[0]["actor"] == {"sub": "sw-1", "roles": ["community_staff"]}
    assert len(trail(database, "team", "t-audit")) == 1
    assert len(trail(database, "household", "hh-audit")) == 2
    assert len(trail(database, "volunteer", volunteers[1].id)) == 1  # the seed
    # Created, then the accepted step; the lapse that lost left no record.
    task_records = trail(database, "task", task.id)
    assert len(task_records) == 2
    assert task_records[-1]["after"] == audit.object_hash(
        database["tasks"].find_one({"_id": task.id})
    )
    entry_records = trail(database, "ledger_entry", entry.id)
    assert [r["before"] is None for r in entry_records] == [True, False]
    assert audit.verify(database) == []
    assert "司马相如" not in json.dumps(list(database[audit.AUDIT].find()), default=str,
                                     ensure_ascii=False)  # fmt: skip


def test_rotation_records_each_resealed_volunteer(database: Any) -> None:
    teams, volunteers, households = load_seed(SEED)
    repository(database, active="k1").seed_once(teams, volunteers, households, NOW)
    new = repository(database, active="k2")
    new.actor, new.action = {"timer": "rotate_keys"}, "volunteer.timer.rotate_keys"
    assert new.reseal_batch(limit=len(volunteers)) == len(volunteers)
    resealed = list(database[audit.AUDIT].find({"action": "volunteer.timer.rotate_keys"}))
    assert sorted(r["object"]["id"] for r in resealed) == sorted(v.id for v in volunteers)
    assert all(r["before"] != r["after"] for r in resealed)
