"""The disclosure log's repository: append-only entries with a chained hash."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument

from shequ.contracts import disclosure as contract
from shequ.store import Repository
from shequ_services.disclosure.domain import GENESIS_HASH, Entry, EntryDraft, seal

ENTRIES = "entries"
LOG_HEAD = "log_head"


class EntryRepository(Repository):
    INDEXES = {
        ENTRIES: [
            IndexModel([("seq", ASCENDING)], unique=True),
            IndexModel([("community", ASCENDING), ("seq", ASCENDING)]),
        ]
    }

    def append(self, draft: EntryDraft) -> Entry:
        """Append in the current transaction; the head document serialises writers.

        Two concurrent appends both update the single head document, so one
        of the transactions conflicts and is retried: the sequence has no
        gaps and no forks.
        """
        head = self.db[LOG_HEAD].find_one_and_update(
            {"_id": "head"},
            {"$inc": {"seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=self.session,
        )
        prev_hash = head.get("hash", GENESIS_HASH)
        entry = seal(draft, seq=head["seq"], prev_hash=prev_hash, published_at=_now_ms())
        self.db[LOG_HEAD].update_one(
            {"_id": "head"}, {"$set": {"hash": entry.entry_hash}}, session=self.session
        )
        document = asdict(entry)
        document["_id"] = entry.id
        document["references"] = list(entry.references)
        self.db[ENTRIES].insert_one(document, session=self.session)
        self.emit(
            contract.ENTRY_PUBLISHED_V1,
            subject=entry.id,
            sequence=entry.seq,
            data={
                "entry_id": entry.id,
                "seq": entry.seq,
                "kind": entry.kind,
                "community": entry.community,
                "entry_hash": entry.entry_hash,
            },
        )
        return entry

    def page(self, *, community: str | None, after: int, limit: int) -> list[Entry]:
        query: dict[str, Any] = {"seq": {"$gt": after}}
        if community:
            query["community"] = community
        cursor = self.db[ENTRIES].find(query).sort("seq", ASCENDING).limit(limit)
        return [_to_entry(document) for document in cursor]


def _now_ms() -> datetime:
    """MongoDB keeps milliseconds; hash what will be read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _to_entry(document: dict[str, Any]) -> Entry:
    document = dict(document)
    document.pop("_id")
    document["references"] = tuple(document["references"])
    return Entry(**document)
