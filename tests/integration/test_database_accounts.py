"""Per-service database users on the development stack's SecantusDB, with authentication on.

``shequ up`` starts its embedded store with an administrator and gives each
service a user with ``readWrite`` on its own database only
(``accounts.provision_database_users``), as the Kubernetes manifests do
with the MongoDB operator. Here: a server of its own, so the session's
unauthenticated one is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pymongo.errors
import pytest

from shequ import accounts
from shequ.embedded import SecantusServer

pytestmark = pytest.mark.integration

UNAUTHORIZED = 13
PREFIX = "t_"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    server = SecantusServer(tmp_path_factory.mktemp("authstore"), admin=("root-user", "r00t-pw"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def uris(store: SecantusServer) -> dict[str, str]:
    return accounts.provision_database_users(
        store.mongo_uri, ["grid", "notify"], PREFIX, store.uri_for
    )


def client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)


def refused(action: Any) -> int:
    try:
        action()
    except pymongo.errors.OperationFailure as exc:
        return int(exc.code or 0)
    return 0


def test_without_credentials_nothing_is_readable(store: SecantusServer) -> None:
    anonymous = client(store.uri_for())
    try:
        assert refused(lambda: anonymous[f"{PREFIX}grid"].incidents.find_one()) == UNAUTHORIZED
    finally:
        anonymous.close()


def test_a_service_reads_and_writes_its_own_database_in_a_transaction(
    uris: dict[str, str],
) -> None:
    """...and follows its outbox's change stream, as its relay does."""
    grid = client(uris["grid"])
    try:
        db = grid[f"{PREFIX}grid"]
        db.incidents.create_index("status")
        with db.outbox.watch(max_await_time_ms=5000) as stream:
            with grid.start_session() as session, session.start_transaction():
                db.incidents.insert_one({"_id": "INC-1", "status": "reported"}, session=session)
                db.outbox.insert_one({"_id": "E-1", "event": "reported"}, session=session)
            change = stream.try_next()
        assert change is not None and change["fullDocument"]["_id"] == "E-1"
        assert db.incidents.find_one({"_id": "INC-1"}) == {"_id": "INC-1", "status": "reported"}
    finally:
        grid.close()


def test_a_service_can_neither_read_nor_write_another_s_database(
    uris: dict[str, str], store: SecantusServer
) -> None:
    admin = client(store.mongo_uri)
    admin[f"{PREFIX}notify"].contacts.insert_one({"_id": "c1", "phone": "13800000000"})
    admin.close()
    grid = client(uris["grid"])
    try:
        other = grid[f"{PREFIX}notify"]
        assert refused(lambda: other.contacts.find_one()) == UNAUTHORIZED
        assert refused(lambda: other.contacts.insert_one({"_id": "x"})) == UNAUTHORIZED
        assert refused(lambda: grid.drop_database(f"{PREFIX}notify")) == UNAUTHORIZED
        assert refused(lambda: grid.admin.command("createUser", "x", pwd="y", roles=[])) == (
            UNAUTHORIZED
        )
    finally:
        grid.close()


def test_provisioning_again_replaces_the_password(
    uris: dict[str, str], store: SecantusServer
) -> None:
    again = accounts.provision_database_users(store.mongo_uri, ["grid"], PREFIX, store.uri_for)
    assert again["grid"] != uris["grid"]
    stale = client(uris["grid"])
    try:
        with pytest.raises(pymongo.errors.OperationFailure):
            stale[f"{PREFIX}grid"].incidents.find_one()
    finally:
        stale.close()
    fresh = client(again["grid"])
    try:
        assert fresh[f"{PREFIX}grid"].incidents.find_one({"_id": "INC-1"}) is not None
    finally:
        fresh.close()
    uris.update(again)


def test_a_restarted_store_keeps_authentication_and_its_users(
    store: SecantusServer, uris: dict[str, str]
) -> None:
    store.keep_port()
    store.stop()
    store.start()
    grid = client(uris["grid"])
    try:
        assert grid[f"{PREFIX}grid"].incidents.find_one({"_id": "INC-1"}) is not None
    finally:
        grid.close()
    anonymous = client(store.uri_for())
    try:
        assert refused(lambda: anonymous[f"{PREFIX}grid"].incidents.find_one()) == UNAUTHORIZED
    finally:
        anonymous.close()
