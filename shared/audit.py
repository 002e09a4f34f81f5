"""The audit trail: who changed what, when, with hashes of the object before and after.

Each service keeps its own trail in its own database (collection ``audit``).
A repository writes a record with ``Repository.audit(kind, id, before,
after)`` inside the transaction that makes the change, so a change commits
if and only if its record does. A record holds:

* ``seq``: its place in the service's trail (a counter outside the
  transaction: an aborted change leaves a gap, never a duplicate);
* ``at``, ``action`` (the route's action, the event type, the timer);
* ``actor``: for a route the caller's subject and roles, for an event
  handler the event's id, source and type, for a timer its name;
* ``object``: kind and id; ``before`` and ``after``: SHA-256 of the
  object's canonical JSON (sorted keys, no spaces), null where it did not
  exist (before a creation);
* ``prev``: the hash of the latest record committed when this one was
  written, and ``hash``: SHA-256 of the record's canonical JSON without
  ``hash``.

No personal data: ids, roles and hashes only. The trail is append-only:
nothing in the code updates or deletes a record. Tampering shows: an
edited record no longer matches its ``hash``, and a deleted or edited one
breaks the ``prev`` of the records written after it (``verify``).

``prev`` links to the latest record below its own ``seq`` that the writing
transaction could see, not to ``seq - 1``: two changes committed at the same
moment may both link to the same earlier record, so that writes in a
service do not all contend for one "last record" document. Each record
still names one that existed before it, so every edit is detected, and so
is the deletion of any record a later one links to. A record nothing links
to (the newest; one a concurrent record passed over) can be deleted unseen
by the links alone. An **anchor** closes that: a digest of every record up
to a point, kept outside the database (``shequ audit anchor``, appended to
a file or a store the database's users cannot write); ``check_anchor``
then finds any record up to that point deleted, added or changed
(docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database

AUDIT = "audit"
COUNTER = "audit_counter"
INDEXES = {
    AUDIT: [
        IndexModel([("seq", ASCENDING)], unique=True),
        IndexModel([("object.kind", ASCENDING), ("object.id", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("actor.sub", ASCENDING), ("seq", ASCENDING)]),
        IndexModel([("at", ASCENDING)]),
    ]
}


def canonical(value: Any) -> bytes:
    """The canonical JSON of a value: sorted keys, no spaces, UTF-8, dates as ISO text."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    ).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)


def timestamp(moment: datetime) -> str:
    """A record's time as fixed-width UTC text, so text order is time order (and it hashes
    the same after a round trip through the store, which keeps only milliseconds of a date)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_hash(value: Any) -> str | None:
    """SHA-256 (hex) of an object's canonical JSON; None for no object."""
    if value is None:
        return None
    return hashlib.sha256(canonical(value)).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash a record carries: of its canonical JSON without ``_id`` and ``hash``."""
    body = {key: value for key, value in record.items() if key not in ("_id", "hash")}
    return hashlib.sha256(canonical(body)).hexdigest()


def append(
    db: Database[Any],
    session: ClientSession | None,
    *,
    actor: Mapping[str, Any],
    action: str,
    kind: str,
    object_id: str,
    before: Any,
    after: Any,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Write one record in ``session``'s transaction and return it.

    Without a session the record is written on its own: for a read, which
    changes nothing and so has no transaction to join.
    """
    (record,) = append_many(
        db, session, actor=actor, action=action, changes=[(kind, object_id, before, after)], at=at
    )
    return record


def append_many(
    db: Database[Any],
    session: ClientSession | None,
    *,
    actor: Mapping[str, Any],
    action: str,
    changes: Sequence[tuple[str, str, Any, Any]],
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Write one record per ``(kind, object id, before, after)``, chained, in one insert.

    The numbers are taken together (one counter increment) and only the
    first record looks for the one it links to; each next links to the one
    before it. A batch (disclosure's sequencer appends a hundred entries in
    one transaction) recorded one by one paid the counter and the link read
    per record, and in a transaction open for seconds the link read found
    nothing near (the records committed meanwhile are not in its snapshot)
    and fell back to reading the trail: 1.1 s a record, 109 s for one batch,
    in a soak run on 24 November 2026.
    """
    if not changes:
        return []
    counter = db[COUNTER].find_one_and_update(
        {"_id": AUDIT},
        {"$inc": {"seq": len(changes)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    first = int(counter["seq"]) - len(changes) + 1
    latest = _latest_below(db, session, first)
    prev = latest["hash"] if latest else None
    moment = timestamp(at or datetime.now(UTC))
    records: list[dict[str, Any]] = []
    for offset, (kind, object_id, before, after) in enumerate(changes):
        record: dict[str, Any] = {
            "seq": first + offset,
            "at": moment,
            "action": action,
            "actor": dict(actor),
            "object": {"kind": kind, "id": str(object_id)},
            "before": object_hash(before),
            "after": object_hash(after),
            "prev": prev,
        }
        record["hash"] = prev = record_hash(record)
        records.append(record)
    db[AUDIT].insert_many([{**record} for record in records], session=session)
    return records


#: How far below its own ``seq`` a record looks for the one it links to, first.
PREV_WINDOW = 16


def _latest_below(
    db: Database[Any], session: ClientSession | None, seq: int
) -> dict[str, Any] | None:
    """The latest record below ``seq`` that ``session`` can see, read through the ``seq`` index.

    Ranges of the index below ``seq``, each four times as wide as the one
    before, starting with the ``PREV_WINDOW`` numbers below it, until one
    holds a record or the trail's start is reached. The embedded store reads
    every document of a sorted query before it limits, so asking for the
    newest record of the whole trail read the whole trail, and every change
    in a service got slower with every change before it (the soak run found
    it, grid's and disclosure's appends taking 120 to 160 ms). A gap wider
    than the first window (aborted changes; in a long transaction, the
    records committed since it began, which it cannot see) costs a few more
    ranges, never the trail. Below ``seq``, never above: a record must link
    to one that ``verify`` has seen before it.
    """
    top, width = seq, PREV_WINDOW
    while top > 1:
        bottom = max(top - width, 1)
        nearby = db[AUDIT].find(
            {"seq": {"$gte": bottom, "$lt": top}}, {"seq": 1, "hash": 1}, session=session
        )
        latest = max(nearby, key=lambda record: record["seq"], default=None)
        if latest is not None:
            return latest
        top, width = bottom, width * 4
    return None


def verify(db: Database[Any]) -> list[str]:
    """Every sign of tampering in a service's trail; an empty list means none was found."""
    problems: list[str] = []
    seen: set[str] = set()
    first = True
    for record in db[AUDIT].find({}, sort=[("seq", ASCENDING)]):
        seq = record.get("seq")
        if record_hash(record) != record.get("hash"):
            problems.append(f"record {seq}: its content does not match its hash")
        prev = record.get("prev")
        if prev is None and not first:
            problems.append(f"record {seq}: links to no earlier record")
        if prev is not None and prev not in seen:
            problems.append(f"record {seq}: links to a record that is missing or was changed")
        seen.add(str(record.get("hash")))
        first = False
    return problems


#: A record is anchored only once it is this old, so that no transaction is
#: likely to commit one below it afterwards: longer than MongoDB lets a
#: transaction live (60 s by default, 15 s in the Kubernetes manifests; the
#: embedded store reaps those idle for 60 s), with room for the clocks of
#: replicas to differ, and a record is numbered near its transaction's end.
#: One committed below an anchor all the same shows as "added below the
#: anchor" at the next check: a false alarm, never a deletion missed.
ANCHOR_SETTLE = timedelta(seconds=120)


def anchor(
    db: Database[Any], *, now: datetime | None = None, settle: timedelta = ANCHOR_SETTLE
) -> dict[str, Any]:
    """A digest of every record up to the newest one written ``settle`` ago, to keep elsewhere.

    ``seq`` is that record's number, ``count`` how many records are at or
    below it, ``digest`` SHA-256 (hex) over their numbers and hashes in
    ``seq`` order. Records written since are left for the next anchor: a
    transaction still open may yet commit one with a lower number.
    """
    moment = now or datetime.now(UTC)
    settled = db[AUDIT].find({"at": {"$lt": timestamp(moment - settle)}}, {"seq": 1})
    last = max((int(record["seq"]) for record in settled), default=0)
    count, digest = _digest_up_to(db, last)
    return {"seq": last, "count": count, "digest": digest, "at": moment.isoformat()}


def check_anchor(db: Database[Any], kept: Mapping[str, Any]) -> list[str]:
    """What changed, since ``kept`` (an ``anchor``) was taken, among the records it covers."""
    count, digest = _digest_up_to(db, int(kept["seq"]))
    if (count, digest) == (kept["count"], kept["digest"]):
        return []
    what = f"the records up to {kept['seq']}, anchored at {kept['at']}"
    if count < kept["count"]:
        return [f"{what}: {kept['count'] - count} of them deleted"]
    if count > kept["count"]:
        return [f"{what}: {count - kept['count']} added below the anchor"]
    return [f"{what}: one or more replaced or renumbered"]


def _digest_up_to(db: Database[Any], last: int) -> tuple[int, str]:
    digest, count = hashlib.sha256(), 0
    found = db[AUDIT].find({"seq": {"$lte": last}}, {"seq": 1, "hash": 1}).sort("seq", ASCENDING)
    for record in found:
        digest.update(f"{record['seq']}:{record.get('hash')}\n".encode())
        count += 1
    return count, digest.hexdigest()


def query(
    db: Database[Any], filters: Mapping[str, Any], *, after: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of records in ``seq`` order and the ``seq`` to continue after (None: no more)."""
    criteria: dict[str, Any] = {}
    if filters.get("object_kind"):
        criteria["object.kind"] = filters["object_kind"]
    if filters.get("object_id"):
        criteria["object.id"] = filters["object_id"]
    if filters.get("actor"):
        criteria["actor.sub"] = filters["actor"]
    if filters.get("action"):
        criteria["action"] = filters["action"]
    when: dict[str, Any] = {}
    if filters.get("from_"):
        when["$gte"] = timestamp(filters["from_"])
    if filters.get("to"):
        when["$lt"] = timestamp(filters["to"])
    if when:
        criteria["at"] = when
    if after is not None:
        criteria["seq"] = {"$gt": after}
    found = [
        {key: value for key, value in record.items() if key != "_id"}
        for record in db[AUDIT].find(criteria, sort=[("seq", ASCENDING)], limit=limit + 1)
    ]
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1]["seq"] if more and found else None)
