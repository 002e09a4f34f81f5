"""Changes by ``_id`` without findAndModify, on the real store: what each returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shequ.store import Repository
from tests.conftest import Servers

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(servers: Servers) -> Iterator[Repository]:
    client = servers.mongo()
    name = f"byid_{uuid.uuid4().hex[:8]}"
    yield Repository(client[name], service="demo", district="dev")
    client.drop_database(name)
    client.close()


def test_update_by_id_returns_the_document_as_changed_or_none(repo: Repository) -> None:
    repo.db["things"].insert_one({"_id": "t-1", "n": 1})
    changed = repo.run_in_transaction(
        lambda: repo.update_by_id("things", "t-1", {"$inc": {"n": 1}})
    )
    assert changed == {"_id": "t-1", "n": 2}
    missing = repo.run_in_transaction(
        lambda: repo.update_by_id("things", "t-2", {"$set": {"n": 1}})
    )
    assert missing is None and repo.db["things"].find_one({"_id": "t-2"}) is None
    created = repo.run_in_transaction(
        lambda: repo.update_by_id("things", "t-3", {"$setOnInsert": {"n": 7}}, upsert=True)
    )
    assert created == {"_id": "t-3", "n": 7}


def test_replace_and_delete_by_id_return_the_document_before(repo: Repository) -> None:
    repo.db["things"].insert_one({"_id": "t-1", "n": 1})
    before = repo.run_in_transaction(lambda: repo.replace_by_id("things", "t-1", {"n": 5}))
    assert before == {"_id": "t-1", "n": 1}
    assert repo.db["things"].find_one({"_id": "t-1"}) == {"_id": "t-1", "n": 5}
    assert repo.run_in_transaction(lambda: repo.replace_by_id("things", "t-9", {"n": 1})) is None
    assert repo.db["things"].find_one({"_id": "t-9"}) is None
    upserted = repo.run_in_transaction(
        lambda: repo.replace_by_id("things", "t-9", {"n": 1}, upsert=True)
    )
    assert upserted is None and repo.db["things"].find_one({"_id": "t-9"}) == {"_id": "t-9", "n": 1}
    deleted = repo.run_in_transaction(lambda: repo.delete_by_id("things", "t-1"))
    assert deleted == {"_id": "t-1", "n": 5}
    assert repo.db["things"].find_one({"_id": "t-1"}) is None
    assert repo.run_in_transaction(lambda: repo.delete_by_id("things", "t-1")) is None


def test_changes_by_id_refuse_to_run_outside_a_transaction(repo: Repository) -> None:
    with pytest.raises(RuntimeError, match="inside transaction"):
        repo.update_by_id("things", "t-1", {"$set": {"n": 1}})
    with pytest.raises(RuntimeError, match="inside transaction"):
        repo.delete_by_id("things", "t-1")
