"""The outbox relay: publishes committed events in commit order, with pipelined confirms.

Repositories write events to the ``outbox`` collection in the same
transaction as the state change, and never change them after. One relay at
a time publishes a service's outbox: the process holding the service's relay
lease (``outbox_relay``, one document, taken and renewed by compare-and-set).

The holder follows the outbox's change stream (``OutboxFeed``): the store
tells it of each entry as its transaction commits, in commit order, from the
position where the relay left off. It publishes a batch of persistent
messages on a channel in confirm mode without waiting between them, waits
(bounded by ``confirm_timeout``) for the broker's acks, then writes one small
document to the publication log (``outbox_published``: the ids the broker
confirmed). The position (the stream's resume token after the batch) is
written at most once a second (``POSITION_SAVE_SECONDS``).
Waiting for each confirm in turn, as nameko's stock ``EventDispatcher``
does, costs a round trip per event; one wait per batch costs one.

Why a stream and a position, not a status on each entry: reading the
oldest pending entries and marking each one sent cost the store a read and
a write per event, and on the embedded store those were nine tenths of the
relay's time (docs/performance.md). Following the stream costs neither, and
an entry is published when its transaction commits, whichever replica wrote
it, instead of at the holder's next poll.

The broker may ack or nack several deliveries at once (``multiple``);
``ConfirmTracker`` turns those into entry ids. A batch not wholly confirmed
(a nack, a wait run out, a failed channel) does not move the position: the
feed is opened again from the position, and the batch published again.

A crash between the confirm and the log's write likewise means the batch
is published again by the next holder of the lease: the crashed process
restarted on the same host takes it over at once (the holder's process is
gone), a replica elsewhere once the lease runs out. That duplicate is
deliberate: delivery is at least once and every consumer deduplicates on the
event ``id``. What must never happen is an event that is committed and never
published; the one case the stream cannot cover, a position older than the
store keeps the stream's history for, falls back to reading the outbox
(``OutboxFeed._unpublished``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import amqp
import kombu
from kombu.exceptions import KombuError
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from shequ.contracts.envelope import CONTENT_TYPE
from shequ.embedded import pid_alive
from shequ.faults import fault_point
from shequ.metrics import EVENTS_PUBLISHED, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING
from shequ.store import OUTBOX, OUTBOX_PUBLISHED, lease_expired

log = logging.getLogger(__name__)

#: The collection of the relay lease and position, and their documents in it.
RELAY_LEASE = "outbox_relay"
RELAY_LEASE_ID = "relay"
POSITION_ID = "position"
#: How long after its ``created_at`` an entry's transaction may still commit.
#: Only used when the stream's history since the position is gone: the outbox
#: is then read again from this far before the last published entry. MongoDB
#: aborts a transaction after 60 s (``transactionLifetimeLimitSeconds``).
LATE_COMMIT_MARGIN = timedelta(minutes=10)
#: The server's answers to a resume token it can no longer resume from:
#: ChangeStreamHistoryLost, InvalidResumeToken, ChangeStreamFatalError.
HISTORY_LOST = frozenset({286, 260, 280})
#: How often an idle relay moves its position up to the stream's: the store
#: keeps the stream's history for a bounded time (SecantusDB: an hour, or
#: 100,000 operations; MongoDB: the oplog's window).
POSITION_REFRESH_SECONDS = 60.0
#: How long the relay rests after a read of the stream that brought nothing,
#: unless a commit of its own process nudges it. A waiting getMore returns at
#: the next write to any collection of the store (SecantusDB and MongoDB
#: both wake stream readers on every oplog write), so without a rest every
#: relay would ask again after every write of the platform. Measured with the
#: five services' relays idle beside the benchmark's store ceiling
#: (``bench/fanout.py --skip platform,baseline,scaling``, alternating): 644
#: and 608 transactions a second with this rest, 224 without. Entries of
#: other replicas wait at most this long while the store is busy, and not at
#: all while it is quiet.
QUIET_SECONDS = 0.1
#: How often at most the relay writes its position. The publication log is
#: written per batch and is the exact record; the position only says where to
#: resume reading, and the entries read again after a stale one are in the log
#: and passed over. Writing it per batch cost a second write per event when
#: events come one at a time (measured: 60.2 store writes per report against
#: 56.1 with the per-entry mark before).
POSITION_SAVE_SECONDS = 1.0
#: The order entries were written in: ``created_at``, then ``_id`` within a millisecond.
ORDER = [("created_at", 1), ("_id", 1)]
#: What the stream is asked for: new entries (they are never changed).
INSERTS = [{"$match": {"operationType": "insert"}}]


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Who holds a lease: host, process id and the process's start time.

    The start time (clock ticks since boot, from ``/proc``) tells a process
    from a later one given the same id, such as the process of a container
    restarted in the same pod; it is None where ``/proc`` is not.
    """
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # Field 22; the command name (field 2) may hold spaces, so count after its ")".
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def holder_gone(holder: dict[str, Any], here: dict[str, Any]) -> bool:
    """Is the process that holds a lease known to have ended?

    Only a process of this host can be looked at; of one elsewhere nothing is
    known and its lease has to run out. A process whose id is no longer in
    use (or a zombie) has ended, and so has one whose id now belongs to a
    process started at another time.
    """
    if holder.get("host") != here["host"] or not isinstance(holder.get("pid"), int):
        return False
    if not pid_alive(holder["pid"]):
        return True
    running_since = _start_time(holder["pid"])
    started = holder.get("started")
    return None not in (running_since, started) and running_since != started


def lease_free(
    lease: dict[str, Any] | None,
    *,
    owner: str,
    now: datetime,
    gone: Callable[[dict[str, Any]], bool],
) -> bool:
    """May the relay ``owner`` take (or keep) the relay lease as it stands?

    Yes if no one holds it, if it is the owner's own, if it has run out, or
    if its holder's process has ended (``gone``): a service restarted after a
    crash takes over at once instead of waiting out its own old lease.
    """
    if lease is None or lease.get("owner") == owner:
        return True
    return lease_expired(lease.get("until"), now) or gone(lease)


class ConfirmTracker:
    """Which published entries the broker has confirmed, from its acks and nacks.

    On a channel in confirm mode the broker numbers publishes 1, 2, 3, ...
    (the delivery tags) and answers each with an ack or a nack; with
    ``multiple`` set, one answer covers every tag up to and including the one
    it names. Kept apart from the channel so the bookkeeping is tested alone.
    """

    def __init__(self) -> None:
        self._outstanding: OrderedDict[int, str] = OrderedDict()
        self.confirmed: list[str] = []
        self.nacked: list[str] = []

    def published(self, delivery_tag: int, entry_id: str) -> None:
        self._outstanding[delivery_tag] = entry_id

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.confirmed.extend(self._settle(delivery_tag, multiple))

    def nack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.nacked.extend(self._settle(delivery_tag, multiple))

    @property
    def outstanding(self) -> list[str]:
        """Entries published and neither acked nor nacked yet, in publishing order."""
        return list(self._outstanding.values())

    def _settle(self, delivery_tag: int, multiple: bool) -> list[str]:
        # A tag this batch never published (a late answer to an earlier batch) settles nothing.
        if not multiple:
            entry_id = self._outstanding.pop(delivery_tag, None)
            return [] if entry_id is None else [entry_id]
        settled = [tag for tag in self._outstanding if tag <= delivery_tag]
        return [self._outstanding.pop(tag) for tag in settled]


class FeedItem(NamedTuple):
    """One step of the feed: an outbox entry to publish, a stream position, or both.

    An entry read from the stream comes with the resume token after it; an
    entry read from the outbox itself (catching up) has none; a position
    alone (``entry`` None) says the stream has been read up to there.
    """

    entry: dict[str, Any] | None
    token: Mapping[str, Any] | None


class OutboxFeed:
    """The outbox's committed entries in commit order: its change stream, a batch at a time.

    Opened at the relay's position; with no position (a new database) or
    one the store no longer has the history of, opened at the present, and
    the entries the publication log does not hold are read from the outbox
    first. Read with ``aggregate`` and ``getMore`` commands rather than
    pymongo's ``ChangeStream``, which hands changes out one at a time: a
    getMore returns every change there is, up to a batch, and waits only
    when there is none, so a batch is whatever committed since the last one.
    """

    def __init__(self, db: Database[Any], position: Mapping[str, Any] | None, *, batch_size: int):
        self.db = db
        self.position = position or {}
        self.batch_size = batch_size
        self._cursor_id: int | None = None
        #: The stream's resume token after its last batch (``postBatchResumeToken``).
        self._token: Mapping[str, Any] | None = None
        self._backlog: Iterator[list[dict[str, Any]]] | None = None

    def open(self) -> None:
        token = self.position.get("token")
        if token is not None:
            try:
                self._aggregate({"resumeAfter": token})
                return
            except OperationFailure as exc:
                if exc.code not in HISTORY_LOST:
                    raise
                log.error(
                    "the outbox's change stream cannot resume from the relay's position "
                    "(%s); reading the outbox for what was not published",
                    exc,
                )
        # Opened before reading, so an entry committed while the outbox is read
        # is in the stream as well: published twice at worst, never missed.
        self._aggregate({})
        self._backlog = self._unpublished()

    def take(self, wait: float) -> list[FeedItem]:
        """The next batch: what committed since the last, waiting up to ``wait`` s if nothing did.

        Empty only when a read of the stream begun by this call found
        nothing new for ``wait`` seconds.
        """
        if self._cursor_id is None:
            self.open()
        if self._backlog is not None:
            chunk = next(self._backlog, None)
            if chunk is not None:
                return [FeedItem(entry, None) for entry in chunk]
            self._backlog = None
            # Everything before the stream's start is published: the position moves to it.
            return [FeedItem(None, self._token)]
        reply = self.db.command(
            "getMore",
            self._cursor_id,
            collection=OUTBOX,
            batchSize=self.batch_size,
            maxTimeMS=max(1, int(wait * 1000)),
        )
        changes = self._read(reply["cursor"], "nextBatch")
        return [FeedItem(change["fullDocument"], change["_id"]) for change in changes[:-1]] + [
            FeedItem(change["fullDocument"], self._token) for change in changes[-1:]
        ]

    @property
    def token(self) -> Mapping[str, Any] | None:
        """The stream's resume token after the last batch taken."""
        return self._token

    def close(self) -> None:
        if self._cursor_id:
            with contextlib.suppress(PyMongoError):
                self.db.command("killCursors", OUTBOX, cursors=[self._cursor_id])
        self._cursor_id = None

    def _aggregate(self, start: dict[str, Any]) -> None:
        reply = self.db.command(
            "aggregate",
            OUTBOX,
            pipeline=[{"$changeStream": start}, *INSERTS],
            cursor={"batchSize": 0},
        )
        self._read(reply["cursor"], "firstBatch")

    def _read(self, cursor: Mapping[str, Any], batch: str) -> list[dict[str, Any]]:
        self._cursor_id = cursor["id"]
        changes: list[dict[str, Any]] = cursor[batch]
        # The token after the batch: past the last change, and past what the
        # stream passed over since (other collections' writes, on a replica set).
        self._token = cursor.get("postBatchResumeToken") or (
            changes[-1]["_id"] if changes else self._token
        )
        return changes

    def _unpublished(self) -> Iterator[list[dict[str, Any]]]:
        """The entries the publication log does not hold, in batches, in the order written.

        From the start of the outbox if nothing was ever published, else
        from ``LATE_COMMIT_MARGIN`` before the last published entry. Ids
        first, then the entries a batch at a time, so a large outbox is
        never held in memory whole. Entries that the relay before the
        publication log marked ``status: sent`` were published (checked
        here, not in the filter, which the embedded store would then not
        read through the ``created_at`` index).
        """
        through = self.position.get("through")
        since = None if through is None else through - LATE_COMMIT_MARGIN
        published = published_ids(self.db, since=since)
        written = {} if since is None else {"created_at": {"$gte": since}}
        waiting = [
            entry["_id"]
            for entry in self.db[OUTBOX].find(written, {"_id": 1, "status": 1}).sort(ORDER)
            if entry["_id"] not in published and entry.get("status") != "sent"
        ]
        for start in range(0, len(waiting), self.batch_size):
            chunk = list(
                self.db[OUTBOX].find({"_id": {"$in": waiting[start : start + self.batch_size]}})
            )
            yield sorted(chunk, key=lambda entry: (entry["created_at"], entry["_id"]))


def _utc(moment: datetime) -> datetime:
    """A time from the store as an aware UTC time (a client without ``tz_aware`` reads naive)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def published_ids(
    db: Database[Any], *, since: datetime | None = None, logged_since: datetime | None = None
) -> set[str]:
    """The ids of the entries the publication log holds: all, those of batches
    reaching ``since`` (by ``created_at``), or those logged since ``logged_since``."""
    query: dict[str, Any] = {}
    if since is not None:
        query["through"] = {"$gte": since}
    if logged_since is not None:
        query["at"] = {"$gte": logged_since}
    return {
        entry_id
        for logged in db[OUTBOX_PUBLISHED].find(query, {"ids": 1})
        for entry_id in logged["ids"]
    }


def unpublished_count(db: Database[Any]) -> int:
    """How many outbox entries the publication log does not hold: exact, and a full read.

    For tests, benchmarks and ``shequ reconcile``; the relay's gauges use
    the position instead (``OutboxRelay._report_pending``).
    """
    published = published_ids(db)
    return sum(1 for entry in db[OUTBOX].find({}, {"_id": 1}) if entry["_id"] not in published)


class OutboxRelay:
    """Moves committed outbox entries to the broker; one per service process,
    one of them at a time publishing (the holder of the relay lease)."""

    def __init__(
        self,
        db: Database[Any],
        *,
        amqp_uri: str,
        service: str,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.db = db
        self.amqp_uri = amqp_uri
        self.service = service
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.confirm_timeout = confirm_timeout
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._delivery_tag = 0
        self._tracker: ConfirmTracker | None = None
        self._feed: OutboxFeed | None = None
        self._logged_past_position: set[str] = set()
        #: The position in memory (token, through), and when it was last written.
        self._position: dict[str, Any] = {}
        self._position_dirty = False
        self._saved_at = float("-inf")
        self._exchanges: dict[str, kombu.Exchange] = {}
        self._owner = uuid.uuid4().hex
        self._process = process_identity()
        self._held_until: datetime | None = None
        self._gauges_at = 0.0
        self.running = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"outbox-{self.service}")
        self._thread.daemon = True
        self.running = True
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10 + self.poll_interval)
        self.running = False
        self._close_feed()
        self._close_connection()
        if self._held_until is not None:
            with contextlib.suppress(PyMongoError):
                self._save_position()
        self._release_lease()

    def nudge(self) -> None:
        """A transaction of this process that emitted events has committed: read now."""
        self._wake.set()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                published = self.relay_once()
                failures = 0
                if not published:
                    self._report_pending_now_and_then()
                    if self._feed is None:  # another replica holds the lease
                        self._stopping.wait(self.poll_interval)
                    else:
                        self._wake.wait(QUIET_SECONDS)
                        self._wake.clear()
            except (PyMongoError, OSError, KombuError) as exc:
                failures = min(failures + 1, 5)
                log.warning("outbox relay for %s failed, will retry: %s", self.service, exc)
                # A broker outage is when the backlog grows: keep the gauges telling it.
                with contextlib.suppress(PyMongoError):
                    self._report_pending()
                self._stopping.wait(min(30, 2**failures))
            except Exception:
                failures = min(failures + 1, 5)
                log.exception("outbox relay for %s failed unexpectedly", self.service)
                self._stopping.wait(min(30, 2**failures))

    def relay_once(self, wait: float | None = None) -> int:
        """Publish one batch if this relay holds the lease; how many the broker confirmed.

        0 when the lease is another's, or when nothing committed is left to
        publish: the stream brought nothing for ``wait`` seconds (by default
        the poll interval).
        """
        if not self.holds_lease(datetime.now(UTC)):
            self._close_feed()
            return 0
        try:
            feed = self._open_feed()
            while items := feed.take(self.poll_interval if wait is None else wait):
                entries = self._not_yet_logged(items)
                if entries:
                    return self._publish_batch(items, entries)
                self._advance(items)  # a position alone, or entries published already
            if time.monotonic() - self._saved_at >= POSITION_REFRESH_SECONDS:
                # Idle: keep the position within the history the store keeps.
                self._advance([FeedItem(None, feed.token)])
            if self._position_dirty and time.monotonic() - self._saved_at >= POSITION_SAVE_SECONDS:
                self._save_position()
            return 0
        except BaseException:
            # What was taken from the feed and not recorded is read again from the position.
            self._close_feed()
            self._close_connection()
            raise

    def _not_yet_logged(self, items: list[FeedItem]) -> list[dict[str, Any]]:
        """The batch's entries less those that a batch not wholly confirmed logged.

        Such a batch leaves the position before it, so the feed brings its
        entries again; the ones the broker confirmed are passed over until
        the position moves past them.
        """
        return [
            item.entry
            for item in items
            if item.entry is not None and item.entry["_id"] not in self._logged_past_position
        ]

    def _publish_batch(self, items: list[FeedItem], entries: list[dict[str, Any]]) -> int:
        tracker = ConfirmTracker()
        connection = self._ensure_connection()
        self._tracker = tracker
        try:
            for entry in entries:
                self._publish(entry)
                tracker.published(self._delivery_tag, entry["_id"])
            self._await_confirms(connection, tracker)
        finally:
            self._tracker = None
        fault_point(self.service, "relay_after_publish")
        self._record(entries, tracker)
        if len(tracker.confirmed) == len(entries):
            self._advance(items)
        else:
            # The position stays before this batch: the feed brings it again.
            self._logged_past_position.update(tracker.confirmed)
            self._close_feed()
        return len(tracker.confirmed)

    def _await_confirms(self, connection: kombu.Connection, tracker: ConfirmTracker) -> None:
        """Read the broker's answers until every publish has one or the wait runs out.

        Entries left unconfirmed after ``confirm_timeout`` are given up for
        this round and the connection is closed: a confirm arriving later
        on it could not be told from one for the next batch's tags.
        """
        deadline = time.monotonic() + self.confirm_timeout
        while tracker.outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "outbox relay for %s: %d publishes unconfirmed after %.1f s, will retry",
                    self.service,
                    len(tracker.outstanding),
                    self.confirm_timeout,
                )
                self._close_connection()
                return
            with contextlib.suppress(socket.timeout):
                connection.drain_events(timeout=remaining)

    def _record(self, entries: list[dict[str, Any]], tracker: ConfirmTracker) -> None:
        """Log the entries the broker confirmed, in one document for the batch."""
        confirmed = set(tracker.confirmed)
        if not confirmed:
            return
        published = [entry for entry in entries if entry["_id"] in confirmed]
        self.db[OUTBOX_PUBLISHED].insert_one(
            {
                "_id": uuid.uuid4().hex,
                "ids": [entry["_id"] for entry in published],
                "through": max(entry["created_at"] for entry in published),
                "at": datetime.now(UTC),
                "relay": self._owner,
            }
        )
        for entry in published:
            EVENTS_PUBLISHED.labels(self.service, entry["type"]).inc()

    def _advance(self, items: list[FeedItem]) -> None:
        """Move the position past a wholly confirmed batch; written at most once a second.

        ``through`` only grows: catching up may publish an entry older than
        one already published.
        """
        tokens = [item.token for item in items if item.token is not None]
        if tokens:
            self._position["token"] = tokens[-1]
        written = [_utc(item.entry["created_at"]) for item in items if item.entry is not None]
        if "through" in self._position:
            written.append(_utc(self._position["through"]))
        if written:
            self._position["through"] = max(written)
        self._position_dirty = True
        self._logged_past_position.difference_update(
            item.entry["_id"] for item in items if item.entry is not None
        )
        if time.monotonic() - self._saved_at >= POSITION_SAVE_SECONDS:
            self._save_position()

    def _save_position(self) -> None:
        if not self._position_dirty:
            return
        self.db[RELAY_LEASE].update_one(
            {"_id": POSITION_ID},
            {"$set": {**self._position, "at": datetime.now(UTC)}},
            upsert=True,
        )
        self._position_dirty = False
        self._saved_at = time.monotonic()

    def _open_feed(self) -> OutboxFeed:
        """The feed from the written position; what was logged since it is passed over."""
        if self._feed is None:
            position = self.db[RELAY_LEASE].find_one({"_id": POSITION_ID}) or {}
            self._position = {key: position[key] for key in ("token", "through") if key in position}
            self._position_dirty = False
            if "at" in position:
                self._logged_past_position = published_ids(self.db, logged_since=position["at"])
            self._feed = OutboxFeed(self.db, position, batch_size=self.batch_size)
        return self._feed

    def _close_feed(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def holds_lease(self, now: datetime) -> bool:
        """Whether this relay may publish now: it holds the service's relay lease.

        The lease is renewed when less than half of it is left, so a relay
        publishing steadily writes it about twice per lease period, not per
        batch. Taken by compare-and-set on the one document: of two relays
        taking it at once, one write matches and the other does not.
        """
        if self._held_until is not None and now < self._held_until - self.lease / 2:
            return True
        self._held_until = None
        leases = self.db[RELAY_LEASE]
        current = leases.find_one({"_id": RELAY_LEASE_ID})
        gone = functools.partial(holder_gone, here=self._process)
        if not lease_free(current, owner=self._owner, now=now, gone=gone):
            return False
        mine = {"owner": self._owner, "until": now + self.lease, **self._process}
        if current is None:
            try:
                leases.insert_one({"_id": RELAY_LEASE_ID, **mine})
            except DuplicateKeyError:
                return False
        else:
            taken = leases.update_one(
                {"_id": RELAY_LEASE_ID, "owner": current["owner"], "until": current["until"]},
                {"$set": mine},
            )
            if not taken.matched_count:
                return False
        self._held_until = mine["until"]
        return True

    def _release_lease(self) -> None:
        """Hand the lease back on a clean stop, so another relay need not wait it out."""
        if self._held_until is None:
            return
        self._held_until = None
        with contextlib.suppress(PyMongoError):
            self.db[RELAY_LEASE].update_one(
                {"_id": RELAY_LEASE_ID, "owner": self._owner},
                {"$set": {"until": datetime.now(UTC)}},
            )

    def pending_count(self) -> int:
        """How many entries are not published yet: exact, and a read of the whole outbox."""
        return unpublished_count(self.db)

    def _report_pending_now_and_then(self) -> None:
        if time.monotonic() - self._gauges_at >= self.poll_interval:
            self._report_pending()

    def _report_pending(self) -> None:
        """The backlog gauges, from the position: the entries written after the last published.

        A read of the outbox's ``created_at`` index from the position on, so
        its cost is the backlog's, not the outbox's. An entry whose
        transaction committed after a later one was published is not
        counted; it is published with the next batch all the same.
        """
        self._gauges_at = time.monotonic()
        if self._feed is not None:
            through = self._position.get("through")
        else:  # the holder's position, as last written
            through = (self.db[RELAY_LEASE].find_one({"_id": POSITION_ID}) or {}).get("through")
        after = {} if through is None else {"created_at": {"$gt": through}}
        OUTBOX_PENDING.labels(self.service).set(self.db[OUTBOX].count_documents(after))
        oldest = self.db[OUTBOX].find_one(after, {"created_at": 1}, sort=[("created_at", 1)])
        age = (datetime.now(UTC) - oldest["created_at"]).total_seconds() if oldest else 0.0
        OUTBOX_OLDEST_PENDING_SECONDS.labels(self.service).set(max(age, 0.0))

    def _publish(self, entry: dict[str, Any]) -> None:
        """Send one entry on the confirm-mode channel; its confirm is read later.

        A bare py-amqp message, not a kombu ``Producer``: the producer's
        per-message work (serializer lookup, property merging) cost more
        than the publish itself.
        """
        exchange = entry["exchange"]
        if exchange not in self._exchanges:
            declared = kombu.Exchange(exchange, type="topic", durable=True)
            declared(self._channel).declare()
            self._exchanges[exchange] = declared
        message = amqp.Message(
            json.dumps(entry["body"], ensure_ascii=False).encode("utf-8"),
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=entry["_id"],
        )
        self._channel.basic_publish(message, exchange=exchange, routing_key=entry["routing_key"])
        self._delivery_tag += 1

    def _ensure_connection(self) -> kombu.Connection:
        """The relay's one connection and confirm-mode channel, opened once and kept."""
        if self._connection is None:
            connection = kombu.Connection(self.amqp_uri, heartbeat=0)
            connection.connect()
            channel = connection.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            self._connection = connection
            self._channel = channel
            self._delivery_tag = 0
            self._exchanges = {}
        return self._connection

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if self._tracker is not None:
            self._tracker.ack(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        if self._tracker is not None:
            self._tracker.nack(delivery_tag, multiple)

    def _close_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                log.debug("closing the relay's broker connection failed", exc_info=True)
            self._connection = None
            self._channel = None
