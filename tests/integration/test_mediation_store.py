"""Mediation's repository on the real store: sealing at rest, key rotation, time-limit alerts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ import audit, sealing
from shequ.store import OUTBOX
from shequ_services.mediation import domain
from shequ_services.mediation.domain import Policy
from shequ_services.mediation.store import CASES, CaseRepository
from shequ_services.mediation.workflow import StaleVersion
from tests.conftest import Servers

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
PARTY = {
    "role": "applicant",
    "name": "张建国",
    "phone": "13812341234",
    "id_number": "110101199003078515",
    "address": "清源里1幢2单元",
    "building": "qy-01-b01",
}
OLD, NEW = sealing.new_key(), sealing.new_key()
INDEX = sealing.new_key()


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"mediation_{uuid.uuid4().hex[:8]}"
    database = client[name]
    for collection, models in CaseRepository.INDEXES.items():
        database[collection].create_indexes(models)
    yield database
    client.drop_database(name)
    client.close()


def repository(database: Any, active: str = "k1") -> CaseRepository:
    repo = CaseRepository(database, service="mediation", district="test")
    repo.keyring = sealing.Keyring.from_config(f"k1:{OLD},k2:{NEW}", active, INDEX)
    return repo


def walk_in(opened_at: datetime = NOW) -> domain.Case:
    return domain.walk_in_case(
        community="hx-qingyuan", dispute_type="neighbour_dispute", facts="楼上漏水",
        parties=[PARTY, {**PARTY, "role": "respondent", "name": "李秀梅"}],
        now=opened_at, policy=Policy(),
    )  # fmt: skip


def test_a_case_reads_back_in_the_clear_but_is_stored_sealed(database: Any) -> None:
    repo = repository(database)
    case = walk_in()
    assert repo.open(case)
    stored = json.dumps(database[CASES].find_one({"_id": case.id}), default=str, ensure_ascii=False)
    for plain in ("张建国", "李秀梅", "13812341234", "110101199003078515", "清源里", "楼上漏水"):
        assert plain not in stored
    assert repo.get(case.id).parties == case.parties


def test_a_second_case_for_the_same_incident_is_not_opened(database: Any) -> None:
    repo = repository(database)
    first = replace(walk_in(), incident_id="INC-1")
    assert repo.open(first)
    assert not repo.open(replace(walk_in(), incident_id="INC-1"))
    assert database[CASES].count_documents({"incident_id": "INC-1"}) == 1


def test_rotation_reseals_old_documents_in_batches_without_moving_the_version(
    database: Any,
) -> None:
    old = repository(database, active="k1")
    cases = [walk_in() for _ in range(3)]
    for case in cases:
        old.open(case)
    new = repository(database, active="k2")
    assert new.reseal_batch(limit=2) == 2
    assert database[CASES].count_documents({"kids": "k1"}) == 1
    assert new.reseal_batch(limit=2) == 1
    assert new.reseal_batch(limit=2) == 0
    for case in cases:
        document = database[CASES].find_one({"_id": case.id})
        assert document["kids"] == ["k2"] and document["version"] == 1
        assert new.get(case.id).parties == case.parties


def test_a_ciphertext_moved_to_another_case_does_not_open(database: Any) -> None:
    repo = repository(database)
    first, second = walk_in(), walk_in()
    repo.open(first)
    repo.open(second)
    name = database[CASES].find_one({"_id": first.id})["parties"][0]["name"]
    database[CASES].update_one({"_id": second.id}, {"$set": {"parties.0.name": name}})
    with pytest.raises(sealing.UnsealError):
        repo.get(second.id)


def test_the_warning_and_the_overdue_alert_are_raised_once_each(database: Any) -> None:
    repo = repository(database)
    case = walk_in(opened_at=NOW - timedelta(days=40))
    repo.open(case)
    due = repo.due(NOW, limit=10)
    assert [c.id for c in due] == [case.id]
    alerts = domain.due_alerts(due[0].clock, NOW)
    assert alerts == ["warned", "overdue"]
    repo.record_alerts(due[0], alerts, domain.mark_raised(due[0].clock, alerts, NOW))
    assert repo.due(NOW, limit=10) == []
    types = [e["type"] for e in database[OUTBOX].find({"body.subject": case.id})]
    names = sorted(t.removeprefix("shequ.mediation.") for t in types)
    assert names == ["case.opened", "case.overdue", "case.warned"]


def test_the_roster_keeps_relatives_and_buildings_only_as_blind_indexes(database: Any) -> None:
    repo = repository(database)
    repo.put_mediator({"id": "m1", "name": "陈桂兰", "community": "c1", "building": "qy-01-b01",
                       "relatives": ["王小明"]})  # fmt: skip
    assert repo.seed_roster([{"id": "m1", "name": "改名", "community": "c1"}]) == 0
    text = json.dumps(database["mediators"].find_one({"_id": "m1"}), ensure_ascii=False)
    assert "王小明" not in text and "qy-01-b01" not in text and "陈桂兰" in text


def test_a_place_stored_in_the_clear_is_read_and_then_sealed(database: Any) -> None:
    repo = repository(database)
    case = walk_in()
    repo.open(case)
    # As a release before places were sealed wrote a scheduled session.
    session = {"id": "S1", "session_at": NOW.isoformat(), "place": "清源里3幢2单元", "notes": None}
    step = {"at": NOW, "actor": "m-1", "action": "schedule_session", "from": "intake",
            "to": "scheduled", "fields": {"place": "清源里3幢2单元"}}  # fmt: skip
    database[CASES].update_one(
        {"_id": case.id}, {"$set": {"sessions": [session]}, "$push": {"history": step}}
    )
    assert repo.get(case.id).sessions[0]["place"] == "清源里3幢2单元"
    assert repo.get(case.id).history[-1]["fields"]["place"] == "清源里3幢2单元"
    assert repo.reseal_batch(limit=10) == 1
    assert repo.reseal_batch(limit=10) == 0
    stored = database[CASES].find_one({"_id": case.id})
    assert "清源里3幢" not in json.dumps(stored, default=str, ensure_ascii=False)
    assert repo.get(case.id).sessions[0]["place"] == "清源里3幢2单元"


def trail(database: Any, case_id: str) -> list[dict[str, Any]]:
    return list(database[audit.AUDIT].find({"object.id": case_id}).sort("seq", 1))


def test_each_change_of_a_case_is_one_record_chained_by_the_stored_documents_hashes(
    database: Any,
) -> None:
    """Opening, a step, the alerts and a re-sealing: each one record, whose ``before`` is the
    previous ``after``; a step that lost its race leaves none, and no plaintext is kept."""
    repo = repository(database)
    repo.actor, repo.action = {"sub": "staff-1", "roles": ["community_staff"]}, "mediation.test"
    case = walk_in(opened_at=NOW - timedelta(days=40))
    repo.open(case)
    opened = repo.get(case.id)
    moved = domain.add_parties(opened, [{**PARTY, "role": "third_party", "name": "王芳"}],
                               facts=None, expected_version=opened.version, actor="staff-1",
                               at=NOW)  # fmt: skip
    repo.save(opened, moved)
    with pytest.raises(StaleVersion):
        repo.save(opened, moved)
    (due,) = repo.due(NOW, limit=10)
    alerts = domain.due_alerts(due.clock, NOW)
    repo.record_alerts(due, alerts, domain.mark_raised(due.clock, alerts, NOW))
    new = repository(database, active="k2")
    new.actor, new.action = {"timer": "rotate_keys"}, "mediation.timer.rotate_keys"
    assert new.reseal_batch(limit=10) == 1

    records = trail(database, case.id)
    assert [r["action"] for r in records] == ["mediation.test"] * 3 + [
        "mediation.timer.rotate_keys"
    ]
    assert records[0]["before"] is None
    assert [r["before"] for r in records[1:]] == [r["after"] for r in records[:-1]]
    assert records[-1]["after"] == audit.object_hash(database[CASES].find_one({"_id": case.id}))
    assert audit.verify(database) == []
    text = json.dumps(list(database[audit.AUDIT].find()), default=str, ensure_ascii=False)
    assert "张建国" not in text and "王芳" not in text and "13812341234" not in text


def test_roster_changes_are_recorded_and_a_reseeded_entry_is_not(database: Any) -> None:
    repo = repository(database)
    entry = {"id": "m-1", "name": "陈桂兰", "community": "hx-qingyuan"}
    assert repo.seed_roster([entry]) == 1
    assert repo.seed_roster([entry]) == 0
    repo.put_mediator({**entry, "available": False})
    records = trail(database, "m-1")
    assert [(r["object"]["kind"], r["before"] is None) for r in records] == [
        ("mediator", True), ("mediator", False),
    ]  # fmt: skip
    assert records[1]["before"] == records[0]["after"]
