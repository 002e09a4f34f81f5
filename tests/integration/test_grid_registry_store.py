"""The registry repository on the real store: seeding is idempotent, pages and filters work."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shequ_services.grid import registry
from shequ_services.grid.reference import load_seed
from shequ_services.grid.registry_store import KINDS, RegistryRepository
from tests.conftest import Servers

pytestmark = pytest.mark.integration

HERE = Path(registry.__file__).parent
SEED = load_seed(HERE / "registry.yaml", HERE / "categories.yaml")


@pytest.fixture
def database(servers: Servers) -> Iterator[Any]:
    client = servers.mongo()
    name = f"registry_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)
    client.close()


def repository(database: Any) -> RegistryRepository:
    return RegistryRepository(database, service="grid", district="test")


def counts(database: Any) -> dict[str, int]:
    return {k: database[spec.collection].count_documents({}) for k, spec in KINDS.items()}


def test_seeding_twice_adds_nothing_the_second_time(database: Any) -> None:
    store = repository(database)
    store.create_indexes()
    assert not store.is_seeded()
    assert store.seed(SEED) > 0
    first = counts(database)
    assert store.is_seeded() and store.seed(SEED) == 0
    assert counts(database) == first
    assert first["cells"] == len(SEED.registry.cells) and first["grid-workers"] == 4


def test_replicas_seeding_at_once_store_each_entry_once(database: Any) -> None:
    threads = [threading.Thread(target=repository(database).seed, args=(SEED,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts(database)["buildings"] == len(SEED.buildings)
    assert repository(database).load() == SEED.registry


def test_seeding_never_overwrites_an_admins_change(database: Any) -> None:
    store = repository(database)
    store.seed(SEED)
    current = store.get("cells", "qy-01")
    renamed = registry.change(store.load(), "cells", current, {"name": "改名"})
    store.save("cells", renamed, new=False)
    store.seed(SEED)
    assert store.get("cells", "qy-01").name == "改名"


def test_grid_workers_are_found_by_cell_and_buildings_by_community(database: Any) -> None:
    store = repository(database)
    store.create_indexes()
    store.seed(SEED)
    workers, _ = store.page("grid-workers", cell="qy-01")
    assert [w.id for w in workers] == ["gw-qy-001"]
    buildings, last = store.page("buildings", community="hx-liushu", limit=2)
    assert [b.id for b in buildings] == ["ls-01-b01", "ls-01-b02"] and last == "ls-01-b02"
    rest, last = store.page("buildings", community="hx-liushu", after=last)
    assert [b.id for b in rest] == ["ls-02-b01"] and last is None


def test_a_new_cell_and_its_neighbour_link_in_one_write(database: Any) -> None:
    store = repository(database)
    store.seed(SEED)
    edit = registry.create(
        store.load(), "cells", {"id": "qy-04", "name": "清源四网格", "community": "hx-qingyuan",
                                "adjacent": ("qy-03",)}
    )  # fmt: skip
    store.save("cells", edit, new=True)
    assert "qy-04" in store.get("cells", "qy-03").adjacent
    with pytest.raises(registry.DuplicateId):
        store.save("cells", edit, new=True)
