"""The outbox relay: publishes committed events with pipelined publisher confirms.

Repositories write events to the ``outbox`` collection in the same
transaction as the state change. One relay at a time publishes a service's
outbox: the process holding the service's relay lease (``outbox_relay``, one
document, taken and renewed by compare-and-set). It reads the oldest pending
entries, publishes the whole batch of persistent messages on a channel in
confirm mode without waiting between them, then waits (bounded by
``confirm_timeout``) for the broker's acks and marks sent only the entries
the broker confirmed. Waiting for each confirm in turn, as nameko's stock
``EventDispatcher`` does, costs a round trip per event; one wait per batch
costs one.

One lease per service, not one per entry: leasing each entry cost a
transaction that read and wrote every entry of a batch before it was
published, and on the embedded store that was more than half of the relay's
time and two of the store writes of every event (docs/performance.md). The
price is that the other replicas of a service do not publish while one holds
the lease: their events wait for the holder's next poll
(``OUTBOX_POLL_SECONDS``) instead of leaving at their own commit.

The broker may ack or nack several deliveries at once (``multiple``);
``ConfirmTracker`` turns those into entry ids. A nacked entry, or one still
unconfirmed when the wait runs out or the channel fails, stays pending, so
the next round publishes it again.

A crash between the confirm and the mark means the batch is published again
by the next holder of the lease: the crashed process restarted on the same
host takes it over at once (the holder's process is gone), a replica
elsewhere once the lease runs out. That duplicate is deliberate: delivery is
at least once and every consumer deduplicates on the event ``id``. What can
never happen is an event that is committed and never published.
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp
import kombu
from kombu.exceptions import KombuError
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from shequ.contracts.envelope import CONTENT_TYPE
from shequ.embedded import pid_alive
from shequ.faults import fault_point
from shequ.metrics import EVENTS_PUBLISHED, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING
from shequ.store import OUTBOX, BacklogWindow, lease_expired

log = logging.getLogger(__name__)

#: The order events leave the outbox in: the order they were written.
ORDER = [("created_at", 1), ("_id", 1)]
#: How many batches ahead a full read of the pending entries sets the horizon
#: that the next claims read up to (``shequ.store.BacklogWindow``).
HORIZON_BATCHES = 10
#: The collection of the relay lease, and the lease's one document in it.
RELAY_LEASE = "outbox_relay"
RELAY_LEASE_ID = "relay"


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


class OutboxRelay:
    """Moves pending outbox entries to the broker; one per service process,
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
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._delivery_tag = 0
        self._tracker: ConfirmTracker | None = None
        self._window = BacklogWindow("created_at", batches=HORIZON_BATCHES)
        self._exchanges: dict[str, kombu.Exchange] = {}
        self._owner = uuid.uuid4().hex
        self._process = process_identity()
        self._held_until: datetime | None = None
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
            self._thread.join(timeout=10)
        self.running = False
        self._close_connection()
        self._release_lease()

    def nudge(self) -> None:
        """Wake the relay now: a transaction that emitted events has committed."""
        self._wake.set()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval if failures == 0 else min(30, 2**failures))
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                while self.relay_once() and not self._stopping.is_set():
                    pass
                self._report_pending()
                failures = 0
            except (PyMongoError, OSError, KombuError) as exc:
                failures = min(failures + 1, 5)
                log.warning("outbox relay for %s failed, will retry: %s", self.service, exc)
                self._close_connection()
                # A broker outage is when the backlog grows: keep the gauges telling it.
                with contextlib.suppress(PyMongoError):
                    self._report_pending()
            except Exception:
                failures = min(failures + 1, 5)
                log.exception("outbox relay for %s failed unexpectedly", self.service)
                self._close_connection()

    def relay_once(self) -> int:
        """Publish and mark one batch if this relay holds the lease; how many were confirmed."""
        now = datetime.now(UTC)
        if not self.holds_lease(now):
            return 0
        batch = self.oldest_pending()
        if not batch:
            return 0
        tracker = ConfirmTracker()
        try:
            connection = self._ensure_connection()
            self._tracker = tracker
            for entry in batch:
                self._publish(entry)
                tracker.published(self._delivery_tag, entry["_id"])
            self._await_confirms(connection, tracker)
            fault_point(self.service, "relay_after_publish")
        finally:
            self._tracker = None
            self._mark_sent(batch, tracker)
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

    def _mark_sent(self, batch: list[dict[str, Any]], tracker: ConfirmTracker) -> None:
        """Mark the confirmed entries sent; the others stay pending for the next round."""
        confirmed = set(tracker.confirmed)
        if not confirmed:
            return
        self.db[OUTBOX].update_many(
            {"_id": {"$in": list(confirmed)}},
            {"$set": {"status": "sent", "sent_at": datetime.now(UTC)}},
        )
        for entry in batch:
            if entry["_id"] in confirmed:
                EVENTS_PUBLISHED.labels(self.service, entry["type"]).inc()

    def oldest_pending(self) -> list[dict[str, Any]]:
        """The oldest pending entries, at most a batch, in the order they were written.

        Read through the outbox's ``(status, created_at)`` index, so the read
        costs what is pending, never what was sent. The embedded store reads
        and sorts every pending entry for a query on ``status`` alone, so with
        a backlog each read cost the whole backlog and draining it took time
        quadratic in its size; the ``BacklogWindow`` reads only up to a
        horizon its last full read noted.
        """
        return self._window.oldest(
            self.db[OUTBOX], {"status": "pending"}, None, ORDER, self.batch_size
        )

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
        return self.db[OUTBOX].count_documents({"status": "pending"})

    def _report_pending(self) -> None:
        OUTBOX_PENDING.labels(self.service).set(self.pending_count())
        oldest = self.db[OUTBOX].find_one(
            {"status": "pending"}, {"created_at": 1}, sort=[("created_at", 1)]
        )
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
