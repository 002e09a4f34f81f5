"""The registry's repository: the only code that touches the ``registry_*`` collections.

Kept apart from ``store.IncidentRepository`` because it has a different
life: it is written rarely, by admins, and read by every process into a
short cache (``reference.Reference``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from shequ.store import Repository
from shequ_services.grid.domain import Category, GridCell
from shequ_services.grid.registry import (
    NOUNS,
    Building,
    CellEdit,
    Community,
    Department,
    DuplicateId,
    GridWorker,
    NotInRegistry,
    Registry,
    RegistryInvalid,
    Seed,
    Subdistrict,
)

META = "registry_meta"


@dataclass(frozen=True)
class Kind:
    """One kind of registry entry: its collection, its class and what identifies it."""

    collection: str
    cls: type
    key: str = "id"
    #: which stored field the ``community`` / ``cell`` list filters match
    community_field: str | None = None
    cell_field: str | None = None


KINDS: dict[str, Kind] = {
    "communities": Kind("registry_communities", Community, community_field="_id"),
    "cells": Kind("registry_cells", GridCell, community_field="community", cell_field="_id"),
    "buildings": Kind(
        "registry_buildings", Building, community_field="community", cell_field="cell"
    ),
    "departments": Kind("registry_departments", Department),
    "grid-workers": Kind(
        "registry_grid_workers", GridWorker, community_field="communities", cell_field="cells"
    ),
    "categories": Kind("registry_categories", Category, key="code"),
}


class RegistryNotSeeded(Exception):
    """The database holds no registry yet; the provider seeds it before anything reads it."""


class RegistryRepository(Repository):
    INDEXES = {
        KINDS["cells"].collection: [IndexModel([("community", 1), ("_id", 1)])],
        KINDS["buildings"].collection: [
            IndexModel([("cell", 1), ("_id", 1)]),
            IndexModel([("community", 1), ("_id", 1)]),
        ],
        KINDS["grid-workers"].collection: [
            IndexModel([("cells", 1), ("_id", 1)]),
            IndexModel([("communities", 1), ("_id", 1)]),
        ],
    }

    #: called after every admin write, so this process's cached registry is reloaded
    on_change: Callable[[], None] = staticmethod(lambda: None)

    def create_indexes(self) -> None:
        for collection, models in self.INDEXES.items():
            self.db[collection].create_indexes(models)

    def is_seeded(self) -> bool:
        return self.db[META].find_one({"_id": "seed"}) is not None

    def seed(self, seed: Seed) -> int:
        """Insert every seed entry that is not stored yet; return how many were new.

        Upserts with ``$setOnInsert`` keyed by id: a restart, or several
        replicas starting at once, add nothing twice and never overwrite an
        entry an admin has changed since.
        """
        registry = seed.registry
        entries: list[tuple[str, Any]] = [
            *(("communities", c) for c in registry.communities.values()),
            *(("cells", c) for c in registry.cells.values()),
            *(("departments", d) for d in registry.departments.values()),
            *(("categories", c) for c in registry.categories.values()),
            *(("buildings", b) for b in seed.buildings),
            *(("grid-workers", w) for w in seed.workers),
        ]
        inserted = 0
        subdistrict = {"id": registry.subdistrict.id, "name": registry.subdistrict.name}
        inserted += self._insert_once(META, "subdistrict", subdistrict)
        for kind, entry in entries:
            document = _document(entry)
            inserted += self._insert_once(KINDS[kind].collection, document.pop("_id"), document)
        self._insert_once(META, "seed", {"seeded_at": datetime.now(UTC)})
        return inserted

    def load(self) -> Registry:
        """The registry reports and dispatches are checked against (no buildings or workers)."""
        subdistrict = self.db[META].find_one({"_id": "subdistrict"}, session=self.session)
        if subdistrict is None:
            raise RegistryNotSeeded("the grid database holds no registry")
        return Registry(
            subdistrict=Subdistrict(subdistrict["id"], subdistrict["name"]),
            communities=self._all("communities"),
            cells=self._all("cells"),
            departments=self._all("departments"),
            categories=self._all("categories"),
        )

    def get(self, kind: str, key: str) -> Any:
        document = self.db[KINDS[kind].collection].find_one({"_id": key}, session=self.session)
        if document is None:
            raise NotInRegistry(f"no {NOUNS[kind]} {key!r}")
        return _entry(KINDS[kind], document)

    def page(
        self,
        kind: str,
        *,
        community: str | None = None,
        cell: str | None = None,
        within: Iterable[str] | None = None,
        after: str | None = None,
        limit: int = 200,
    ) -> tuple[list[Any], str | None]:
        """One page of entries in id order, and the id to continue after (None at the end).

        ``within`` limits the page to entries of those communities (a
        community's staff see their own); ``community`` and ``cell`` filter.
        """
        spec = KINDS[kind]
        clauses: list[dict[str, Any]] = []
        if within is not None and spec.community_field is not None:
            clauses.append({spec.community_field: {"$in": list(within)}})
        for name, value, stored in (
            ("community", community, spec.community_field),
            ("cell", cell, spec.cell_field),
        ):
            if value is None:
                continue
            if stored is None:
                raise RegistryInvalid({name: [f"{kind} cannot be filtered by {name}"]})
            clauses.append({stored: value})
        if after is not None:
            clauses.append({"_id": {"$gt": after}})
        query = {"$and": clauses} if clauses else {}
        cursor = self.db[spec.collection].find(query).sort("_id", 1).limit(limit + 1)
        documents = list(cursor)
        more = len(documents) > limit
        entries = [_entry(spec, d) for d in documents[:limit]]
        last = documents[limit - 1]["_id"] if more else None
        return entries, last

    def save(self, kind: str, entry: Any, *, new: bool) -> Any:
        """Store what ``registry.create`` or ``registry.change`` decided; return the entry.

        One transaction with its audit record (the entry as stored, before and after).
        """
        collection = self.db[KINDS[kind].collection]
        key = _document(entry.cell if isinstance(entry, CellEdit) else entry)["_id"]

        def work() -> Any:
            before = collection.find_one({"_id": key}, session=self.session)
            if isinstance(entry, CellEdit):
                self.store_cell(entry, new=new)
                saved = entry.cell
            elif new:
                self.insert(kind, entry)
                saved = entry
            else:
                self.replace(kind, entry)
                saved = entry
            after = collection.find_one({"_id": key}, session=self.session)
            self.audit(f"registry.{kind}", str(key), before, after)
            return saved

        saved = self.run_in_transaction(work)
        self.on_change()
        return saved

    def insert(self, kind: str, entry: Any) -> None:
        document = _document(entry)
        try:
            self.db[KINDS[kind].collection].insert_one(document, session=self.session)
        except DuplicateKeyError as exc:
            raise DuplicateId(f"{NOUNS[kind]} {document['_id']!r} exists already") from exc
        self.on_change()

    def replace(self, kind: str, entry: Any) -> None:
        document = _document(entry)
        found = self.db[KINDS[kind].collection].replace_one(
            {"_id": document["_id"]}, document, session=self.session
        )
        if found.matched_count == 0:
            raise NotInRegistry(f"no {NOUNS[kind]} {document['_id']!r}")
        self.on_change()

    def store_cell(self, edit: CellEdit, *, new: bool) -> None:
        """Store a cell and its neighbours' side of the adjacency in one transaction."""
        cells = self.db[KINDS["cells"].collection]

        def work() -> None:
            if new:
                self.insert("cells", edit.cell)
            else:
                self.replace("cells", edit.cell)
            if edit.link:
                cells.update_many(
                    {"_id": {"$in": list(edit.link)}},
                    {"$addToSet": {"adjacent": edit.cell.id}},
                    session=self.session,
                )
            if edit.unlink:
                cells.update_many(
                    {"_id": {"$in": list(edit.unlink)}},
                    {"$pull": {"adjacent": edit.cell.id}},
                    session=self.session,
                )

        self.run_in_transaction(work)
        self.on_change()

    def _all(self, kind: str) -> dict[str, Any]:
        spec = KINDS[kind]
        cursor = self.db[spec.collection].find({}, session=self.session)
        return {d["_id"]: _entry(spec, d) for d in cursor}

    def _insert_once(self, collection: str, key: str, document: dict[str, Any]) -> int:
        try:
            result = self.db[collection].update_one(
                {"_id": key}, {"$setOnInsert": document}, upsert=True
            )
        except DuplicateKeyError:
            return 0  # another replica inserted it between our lookup and our insert
        return 1 if result.upserted_id is not None else 0


def _document(entry: Any) -> dict[str, Any]:
    document = asdict(entry)
    key = "code" if isinstance(entry, Category) else "id"
    document["_id"] = document.pop(key)
    for name, value in document.items():
        if name == "centroid":
            document[name] = None if value is None else {"lat": value[0], "lon": value[1]}
        elif name == "polygon":
            document[name] = [{"lat": lat, "lon": lon} for lat, lon in value]
        elif isinstance(value, tuple):
            document[name] = list(value)
    return document


def _entry(spec: Kind, document: dict[str, Any]) -> Any:
    known = {f.name for f in fields(spec.cls)}
    values: dict[str, Any] = {spec.key: document["_id"]}
    for name, value in document.items():
        if name not in known:
            continue
        if name == "centroid":
            values[name] = None if value is None else (value["lat"], value["lon"])
        elif name == "polygon":
            values[name] = tuple((p["lat"], p["lon"]) for p in value)
        elif isinstance(value, list):
            values[name] = tuple(value)
        else:
            values[name] = value
    return spec.cls(**values)
