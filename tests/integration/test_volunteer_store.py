"""The volunteer repository on the real store: conditional steps, one visit a month, one approval.

These are the guarantees the timers rely on with several replicas: two
writers of the same task step cannot both win, a household's visit task for
a month exists once however many replicas generate the round, and a ledger
entry is approved (and announced) once.
"""

from __future__ import annotations

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

from shequ.store import OUTBOX
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


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"volunteer_{uuid.uuid4().hex[:8]}"
    database = client[name]
    for collection, models in VolunteerRepository.INDEXES.items():
        database[collection].create_indexes(models)
    database[OUTBOX].create_indexes([IndexModel([("status", 1)])])
    yield database
    client.drop_database(name)
    client.close()


def repository(database: Any) -> VolunteerRepository:
    return VolunteerRepository(database, service="volunteer", district="test")


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


def test_the_seed_is_written_once_and_volunteers_read_back_as_written(database: Any) -> None:
    teams, volunteers, households = load_seed(SEED)
    assert repository(database).seed_once(teams, volunteers, households, NOW)
    assert not repository(database).seed_once(teams, volunteers, households, NOW)
    assert database["volunteers"].count_documents({}) == len(volunteers)
    assert repository(database).volunteer(volunteers[0].id) == volunteers[0]
    changed, newest = repository(database).volunteers_changed_since(None)
    assert len(changed) == len(volunteers) and newest is not None
    assert repository(database).led_teams("sw-qy-01") == ["qy-t1"]
