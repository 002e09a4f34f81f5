"""The disclosure log's repository: entries, the Merkle tree's nodes, checkpoints, tallies.

Appending is one transaction: the head (size and frontier) moves on, the
entries and the perfect subtrees they complete are written, and one
``entry.published`` event per entry goes to the outbox. Every writer updates
the one head document, so concurrent appends conflict and one is retried: the
log has no gaps and no forks. Nothing ever updates or deletes an entry or a
node.

Entries fed by events do not append one by one. A handler only queues its
draft (``enqueue``, with its processed mark, in its own transaction, touching
no shared document), and the sequencer (``integrate``) appends what is queued
in batches, one transaction each, as Certificate Transparency logs integrate
submissions. One writer at a time would otherwise make every event wait for
the whole round trip of the one before it: measured on the soak run, the log
fell behind the other consumers by a factor of ten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from shequ.contracts import disclosure as contract
from shequ.errors import NotFound
from shequ.store import BacklogWindow, Repository
from shequ_services.disclosure import domain, merkle
from shequ_services.disclosure.checkpoint import Checkpoint, Cosignature, b64
from shequ_services.disclosure.domain import Entry, EntryDraft

ENTRIES = "entries"
NODES = "nodes"
LOG_HEAD = "log_head"
CHECKPOINTS = "checkpoints"
TALLIES = "tallies"
CATEGORIES = "categories"
#: Event-fed drafts accepted and not yet appended; a draft the log's rules
#: refuse stays here with the reason (``refused``) for an operator to see.
PENDING = "pending"
#: How many queued drafts one sequencer transaction appends at most.
INTEGRATE_BATCH = 100
#: The order the sequencer appends queued drafts in: as they were accepted.
QUEUE_ORDER = [("accepted_at", ASCENDING), ("_id", ASCENDING)]

MEDIATION = "mediation"
VOLUNTEER = "volunteer"


class EntryRepository(Repository):
    # Every append moves the one head document: appends take turns (``writes``).
    SERIAL_WRITES = threading.Lock()
    #: The sequencer's place in the queue, kept between batches; a hint only
    #: (``BacklogWindow``), so one per process serves every repository.
    PENDING_WINDOW = BacklogWindow("accepted_at")
    INDEXES = {
        ENTRIES: [
            IndexModel([("community", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("kind", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("period", ASCENDING), ("community", ASCENDING), ("kind", ASCENDING)]),
        ],
        TALLIES: [IndexModel([("month", ASCENDING)])],
        # The sequencer's window reads a range of this (``integrate``).
        PENDING: [IndexModel([("accepted_at", ASCENDING)])],
    }

    # Appending.

    def append(self, draft: EntryDraft) -> Entry:
        """Append in the current transaction (or in one of its own)."""
        with self.writes():
            return self.run_in_transaction(lambda: self._append_all([draft])[0])

    def enqueue(self, draft: EntryDraft) -> None:
        """Queue an event-fed draft for the sequencer, in the current transaction."""
        document = {"draft": _draft_document(draft), "accepted_at": _now_ms(), "refused": None}
        queued = self.db[PENDING].insert_one(document, session=self.session)
        self.audit("queued_draft", str(queued.inserted_id), None, document)

    def pending(self) -> int:
        """Queued drafts not yet appended (refused ones included)."""
        return self.db[PENDING].count_documents({}, session=self.session)

    def integrate(self, limit: int = INTEGRATE_BATCH) -> list[Entry]:
        """Append up to ``limit`` queued drafts, oldest first, in one transaction.

        The oldest are found outside the transaction, through the queue's
        ``accepted_at`` index and a ``BacklogWindow``, and read again by
        ``_id`` inside it. The read it replaces, ``{"refused": None}`` sorted,
        took the embedded store 20 s at 2,900 queued drafts (the soak run of
        24 November 2026; a null match is not served by the index there), so
        each batch took longer than the one before and the log fell further
        behind. A draft the log's rules refuse (``domain.check``) is kept
        aside with the reason instead of holding up the ones behind it.
        """
        oldest = self.PENDING_WINDOW.oldest(
            self.db[PENDING], {}, {"refused": 1}, QUEUE_ORDER, limit,
            lambda document: document.get("refused") is None,
        )  # fmt: skip
        if not oldest:
            return []
        with self.writes():
            return self.run_in_transaction(lambda: self._integrate([d["_id"] for d in oldest]))

    def _integrate(self, candidates: list[Any]) -> list[Entry]:
        # Read again in the transaction: another replica may have taken them meanwhile.
        found = self.db[PENDING].find({"_id": {"$in": candidates}}, session=self.session)
        queued = sorted(
            (d for d in found if d.get("refused") is None),
            key=lambda document: (document["accepted_at"], document["_id"]),
        )
        drafts: list[EntryDraft] = []
        taken: list[Any] = []
        size = self.size()
        for document in queued:
            draft = _to_draft(document["draft"])
            try:
                domain.check(draft, size=size + len(drafts))
            except domain.InvalidEntry as refused:
                self.db[PENDING].update_one(
                    {"_id": document["_id"]},
                    {"$set": {"refused": f"{refused.field}: {refused}"}},
                    session=self.session,
                )
                continue
            drafts.append(draft)
            taken.append(document["_id"])
        appended = self._append_all(drafts) if drafts else []
        if taken:
            self.db[PENDING].delete_many({"_id": {"$in": taken}}, session=self.session)
        return appended

    def _append_all(self, drafts: list[EntryDraft]) -> list[Entry]:
        """Seal the drafts in order at the end of the log: one head read, one head write."""
        head = self.db[LOG_HEAD].find_one_and_update(
            {"_id": "head"},
            {"$inc": {"size": len(drafts)}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
            session=self.session,
        )
        size = head["size"] if head else 0
        frontier = [bytes(h) for h in head.get("frontier", [])] if head else []
        published_at = _now_ms()
        entries: list[Entry] = []
        nodes: list[dict[str, Any]] = []
        for offset, draft in enumerate(drafts):
            entry = domain.seal(draft, index=size + offset, published_at=published_at)
            frontier, completed = merkle.append(frontier, entry.index, entry.leaf)
            nodes.extend({"_id": _node_id(key), "hash": Binary(value)} for key, value in completed)
            entries.append(entry)
        self.db[LOG_HEAD].update_one(
            {"_id": "head"},
            {"$set": {"frontier": [Binary(h) for h in frontier]}},
            session=self.session,
        )
        documents = [_entry_document(entry) for entry in entries]
        self.db[ENTRIES].insert_many(documents, session=self.session)
        self.audit_many("entry", [(str(d["_id"]), None, d) for d in documents])
        if nodes:
            self.db[NODES].insert_many(nodes, session=self.session)
        self.emit_many(
            contract.ENTRY_PUBLISHED_V1,
            [
                (
                    str(entry.index),
                    entry.index,
                    {
                        "index": entry.index,
                        "kind": entry.kind,
                        "cadence": entry.cadence,
                        "community": entry.community,
                        "period": entry.period,
                        "leaf_hash": b64(merkle.leaf_hash(entry.leaf)),
                    },
                )
                for entry in entries
            ],
        )
        return entries

    # Reading entries.

    def size(self) -> int:
        head = self.db[LOG_HEAD].find_one({"_id": "head"}, session=self.session)
        return head["size"] if head else 0

    def head(self) -> tuple[int, bytes]:
        """The current size and root, read together from one document."""
        head = self.db[LOG_HEAD].find_one({"_id": "head"}, session=self.session)
        if head is None:
            return 0, merkle.EMPTY_ROOT
        return head["size"], merkle.root_from_frontier([bytes(h) for h in head["frontier"]])

    def get(self, index: int) -> Entry:
        document = self.db[ENTRIES].find_one({"_id": index}, session=self.session)
        if document is None:
            raise NotFound(f"no entry {index} in the disclosure log")
        return _to_entry(document)

    def page(
        self,
        *,
        community: str | None = None,
        kind: str | None = None,
        period: str | None = None,
        start: int = 0,
        end: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[Entry]:
        """Entries in index order from ``start`` (or down from ``end`` when newest first)."""
        query: dict[str, Any] = {}
        bounds: dict[str, int] = {}
        if start:
            bounds["$gte"] = start
        if end is not None:
            bounds["$lt"] = end
        if bounds:
            query["_id"] = bounds
        for name, value in (("community", community), ("kind", kind), ("period", period)):
            if value:
                query[name] = value
        order = DESCENDING if newest_first else ASCENDING
        cursor = self.db[ENTRIES].find(query, session=self.session).sort("_id", order).limit(limit)
        return [_to_entry(document) for document in cursor]

    def corrections_of(self, indexes: Iterable[int]) -> dict[int, int]:
        """Which of these entries were corrected, and by which entry (the latest)."""
        found: dict[int, int] = {}
        cursor = self.db[ENTRIES].find(
            {"supersedes": {"$in": list(indexes)}}, {"supersedes": 1}, session=self.session
        )
        for document in cursor.sort("_id", ASCENDING):
            found[document["supersedes"]] = document["_id"]
        return found

    def of_month(self, community: str, month: str) -> list[Entry]:
        cursor = self.db[ENTRIES].find(
            {"period": month, "community": community}, session=self.session
        )
        return [_to_entry(document) for document in cursor.sort("_id", ASCENDING)]

    def latest(
        self, *, community: str, month: str, kind: str, cadence: str, from_events: bool = False
    ) -> Entry | None:
        """The newest entry of a kind for a month; ``from_events``: only the counted ones."""
        query: dict[str, Any] = {
            "period": month,
            "community": community,
            "kind": kind,
            "cadence": cadence,
        }
        if from_events:
            query["body.source"] = "events"
        document = self.db[ENTRIES].find_one(
            query, sort=[("_id", DESCENDING)], session=self.session
        )
        return _to_entry(document) if document else None

    def publish_month(self, community: str, month: str) -> list[Entry]:
        """Publish a month's counts and figures, or their corrections; unchanged ones stay.

        The mediation and volunteer counts go first, so the figures computed
        from the month's entries include them. Safe to repeat and to run on
        several replicas at once: a conflicting run is retried and then finds
        the entries the other one published.
        """

        def work() -> list[Entry]:
            published = []
            mediation = self.tally(MEDIATION, community, month)
            if mediation is not None:
                published += self._publish_if_changed(
                    community, month, "mediation_statistics", True,
                    lambda supersedes: domain.mediation_statistics(
                        mediation.get("closed", {}), community=community, month=month,
                        supersedes=supersedes,
                    ),
                )  # fmt: skip
            volunteer = self.tally(VOLUNTEER, community, month)
            if volunteer is not None:
                published += self._publish_if_changed(
                    community, month, "volunteer_hours", True,
                    lambda supersedes: domain.volunteer_hours(
                        volunteer["minutes"], volunteer["records"], community=community,
                        month=month, supersedes=supersedes,
                    ),
                )  # fmt: skip
            figures = domain.monthly_figures(
                self.of_month(community, month), community=community, month=month
            )
            published += self._publish_if_changed(
                community, month, "incident_summary", False,
                lambda supersedes: domain.figures_entry(
                    figures, community=community, month=month, supersedes=supersedes
                ),
            )  # fmt: skip
            return published

        with self.writes():
            return self.run_in_transaction(work)

    def _publish_if_changed(
        self,
        community: str,
        month: str,
        kind: str,
        from_events: bool,
        draft_for: Callable[[int | None], EntryDraft],
    ) -> list[Entry]:
        previous = self.latest(
            community=community, month=month, kind=kind, cadence="periodic", from_events=from_events
        )
        draft = draft_for(previous.index if previous else None)
        if previous is not None and dict(previous.body) == dict(draft.body):
            return []
        return self._append_all([draft])

    # What the log knows of categories: only whether each one is sensitive.

    def remember_category(self, code: str, *, name_zh: str, sensitive: bool) -> None:
        """Keep a category's name and flag (in the current transaction, or one of its own)."""

        def work() -> None:
            before = self.stored(CATEGORIES, code)
            self.update_by_id(
                CATEGORIES,
                code,
                {"$set": {"name_zh": name_zh, "sensitive": sensitive}},
                upsert=True,
            )
            after = {**(before or {"_id": code}), "name_zh": name_zh, "sensitive": sensitive}
            if before != after:
                self.audit("category", code, before, after)

        self.run_in_transaction(work)

    def is_sensitive(self, code: str) -> bool:
        """A category never seen in a report counts as sensitive: publish less, not more."""
        document = self.db[CATEGORIES].find_one({"_id": code}, session=self.session)
        return True if document is None else bool(document["sensitive"])

    def category_names(self) -> dict[str, str]:
        """Chinese names of the ordinary categories seen in reports, for the board's labels.

        Sensitive categories are left out: the log never names them, so the
        board has no use for their names.
        """
        cursor = self.db[CATEGORIES].find({"sensitive": False}, session=self.session)
        return {document["_id"]: document["name_zh"] for document in cursor}

    def communities_of(self, month: str) -> list[str]:
        found = set(self.db[ENTRIES].distinct("community", {"period": month}))
        found.update(self.db[TALLIES].distinct("community", {"month": month}))
        return sorted(found)

    def communities(self) -> list[str]:
        return sorted(self.db[ENTRIES].distinct("community"))

    # Proofs.

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self._nodes(merkle.inclusion_keys(index, size)))

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        keys = merkle.consistency_keys(first, second)
        return merkle.consistency_proof(first, second, self._nodes(keys))

    def root(self, size: int) -> bytes:
        return merkle.root(size, self._nodes(merkle.root_keys(size)))

    def _nodes(self, keys: set[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        wanted = {_node_id(key): key for key in keys}
        cursor = self.db[NODES].find({"_id": {"$in": list(wanted)}}, session=self.session)
        return {wanted[document["_id"]]: bytes(document["hash"]) for document in cursor}

    # Checkpoints.

    def latest_checkpoint(self) -> Checkpoint | None:
        document = self.db[CHECKPOINTS].find_one({}, sort=[("_id", DESCENDING)])
        return _to_checkpoint(document) if document else None

    def checkpoint(self, size: int) -> Checkpoint:
        document = self.db[CHECKPOINTS].find_one({"_id": size})
        if document is None:
            raise NotFound(f"no checkpoint of size {size}")
        return _to_checkpoint(document)

    def add_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store a signed checkpoint once; a replica that signed the same size gets the first."""

        def work() -> Checkpoint:
            document = {
                "_id": checkpoint.size,
                "origin": checkpoint.origin,
                "root_hash": Binary(checkpoint.root_hash),
                "signature": Binary(checkpoint.signature),
                "signed_at": checkpoint.signed_at,
                "cosignatures": {},
            }
            self.db[CHECKPOINTS].insert_one(document, session=self.session)
            self.audit("checkpoint", str(checkpoint.size), None, document)
            self.emit(
                contract.CHECKPOINT_SIGNED_V1,
                subject=str(checkpoint.size),
                sequence=checkpoint.size,
                data={
                    "origin": checkpoint.origin,
                    "size": checkpoint.size,
                    "root_hash": b64(checkpoint.root_hash),
                },
            )
            return checkpoint

        try:
            return self.run_in_transaction(work)
        except DuplicateKeyError:
            return self.checkpoint(checkpoint.size)

    def add_cosignature(self, size: int, cosignature: Cosignature) -> Checkpoint:
        """Record a witness's signature (its latest for this checkpoint wins)."""

        def work() -> dict[str, Any] | None:
            before = self.stored(CHECKPOINTS, size)
            document = self.update_by_id(
                CHECKPOINTS,
                size,
                {
                    "$set": {
                        f"cosignatures.{cosignature.witness}": {
                            "timestamp": cosignature.timestamp,
                            "signature": Binary(cosignature.signature),
                        }
                    }
                },
            )
            if document is not None:
                self.audit("checkpoint", str(size), before, document)
            return document

        document = self.run_in_transaction(work)
        if document is None:
            raise NotFound(f"no checkpoint of size {size}")
        return _to_checkpoint(document)

    # Tallies of counted-only events (mediation outcomes, volunteer time).

    def count_mediation(self, *, community: str, month: str, outcome: str) -> None:
        self._tally(MEDIATION, community, month, {f"closed.{outcome}": 1})

    def count_volunteer_time(
        self, *, community: str, month: str, minutes: int, records: int = 1
    ) -> None:
        """Approved time adds a record; a correction moves the minutes only (it may subtract)."""
        self._tally(VOLUNTEER, community, month, {"minutes": minutes, "records": records})

    def tally(self, source: str, community: str, month: str) -> dict[str, Any] | None:
        return self.db[TALLIES].find_one(
            {"_id": _tally_id(source, community, month)}, session=self.session
        )

    def _tally(
        self, source: str, community: str, month: str, increments: Mapping[str, int]
    ) -> None:
        key = _tally_id(source, community, month)

        def work() -> None:
            before = self.stored(TALLIES, key)
            after = self.update_by_id(
                TALLIES,
                key,
                {
                    "$inc": dict(increments),
                    "$setOnInsert": {"source": source, "community": community, "month": month},
                },
                upsert=True,
            )
            self.audit("tally", key, before, after)

        self.run_in_transaction(work)


def _tally_id(source: str, community: str, month: str) -> str:
    return f"{source}|{community}|{month}"


def _node_id(key: merkle.NodeKey) -> str:
    level, index = key
    return f"{level}.{index}"


def _now_ms() -> datetime:
    """MongoDB keeps milliseconds; hash what will be read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _entry_document(entry: Entry) -> dict[str, Any]:
    return {
        "_id": entry.index,
        **_draft_document(entry),
        "published_at": entry.published_at,
        "leaf": Binary(entry.leaf),
    }


#: What a draft says, and what an entry says besides its index, time and leaf.
DRAFT_FIELDS = tuple(draft_field.name for draft_field in fields(EntryDraft))


def _draft_document(draft: EntryDraft | Entry) -> dict[str, Any]:
    document = {name: getattr(draft, name) for name in DRAFT_FIELDS}
    return {**document, "body": dict(draft.body), "references": list(draft.references)}


def _to_draft(document: Mapping[str, Any]) -> EntryDraft:
    draft = {name: document[name] for name in DRAFT_FIELDS}
    return EntryDraft(**{**draft, "references": tuple(document["references"])})


def _to_entry(document: Mapping[str, Any]) -> Entry:
    return Entry(
        index=document["_id"],
        kind=document["kind"],
        cadence=document["cadence"],
        community=document["community"],
        period=document["period"],
        title=document["title"],
        body=document["body"],
        references=tuple(document["references"]),
        supersedes=document.get("supersedes"),
        published_at=document["published_at"],
        leaf=bytes(document["leaf"]),
        origin=document.get("origin", "events"),
    )


def _to_checkpoint(document: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(
        origin=document["origin"],
        size=document["_id"],
        root_hash=bytes(document["root_hash"]),
        signature=bytes(document["signature"]),
        signed_at=document["signed_at"],
        cosignatures=tuple(
            Cosignature(name, value["timestamp"], bytes(value["signature"]))
            for name, value in sorted(document.get("cosignatures", {}).items())
        ),
    )
