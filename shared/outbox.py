"""The outbox relay: publishes committed events with pipelined publisher confirms.

Repositories write events to the ``outbox`` collection in the same
transaction as the state change. The relay, running inside the service
process, claims pending entries under a lease (so replicas do not publish the
same entry at the same moment), publishes the whole claimed batch of
persistent messages on a channel in confirm mode without waiting between
them, then waits (bounded by ``confirm_timeout``) for the broker's acks and
marks sent only the entries the broker confirmed. Waiting for each confirm in
turn, as nameko's stock ``EventDispatcher`` does, costs a round trip per
event; one wait per batch costs one.

The broker may ack or nack several deliveries at once (``multiple``);
``ConfirmTracker`` turns those into entry ids. A nacked entry, or one still
unconfirmed when the wait runs out or the channel fails, stays pending with
its lease released, so the next round publishes it again.

A crash between the confirm and the mark means the entry is published again
after its lease runs out. That duplicate is deliberate: delivery is at least
once and every consumer deduplicates on the event ``id``. What can never
happen is an event that is committed and never published.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp
import kombu
from kombu.exceptions import KombuError
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from shequ.contracts.envelope import CONTENT_TYPE
from shequ.faults import fault_point
from shequ.metrics import EVENTS_PUBLISHED, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING
from shequ.store import OUTBOX, BacklogWindow, lease_expired

log = logging.getLogger(__name__)

#: The order events leave the outbox in: the order they were written.
ORDER = [("created_at", 1), ("_id", 1)]
#: How many batches ahead a full read of the pending entries sets the horizon
#: that the next claims read up to (``shequ.store.BacklogWindow``).
HORIZON_BATCHES = 10


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
    """Moves pending outbox entries to the broker; one per service process."""

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
        """Claim, publish and mark one batch; return how many the broker confirmed."""
        claimed = self.claim(datetime.now(UTC))
        if not claimed:
            return 0
        tracker = ConfirmTracker()
        try:
            connection = self._ensure_connection()
            self._tracker = tracker
            for entry in claimed:
                self._publish(entry)
                tracker.published(self._delivery_tag, entry["_id"])
            self._await_confirms(connection, tracker)
            fault_point(self.service, "relay_after_publish")
        finally:
            self._tracker = None
            self._settle(claimed, tracker)
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

    def _settle(self, claimed: list[dict[str, Any]], tracker: ConfirmTracker) -> None:
        """Mark the confirmed entries sent; release the lease of all the others."""
        outbox = self.db[OUTBOX]
        confirmed = set(tracker.confirmed)
        if confirmed:
            outbox.update_many(
                {"_id": {"$in": list(confirmed)}},
                {"$set": {"status": "sent", "sent_at": datetime.now(UTC)}},
            )
            for entry in claimed:
                if entry["_id"] in confirmed:
                    EVENTS_PUBLISHED.labels(self.service, entry["type"]).inc()
        retry = [entry["_id"] for entry in claimed if entry["_id"] not in confirmed]
        if retry:
            # Nacked, unconfirmed or never published: pending again at once, not after the lease.
            outbox.update_many(
                {"_id": {"$in": retry}, "status": "pending"},
                {"$set": {"lease_until": None}},
            )

    def claim(self, now: datetime) -> list[dict[str, Any]]:
        """Lease the oldest claimable entries (at most a batch) to this relay, in order.

        Claimable: pending, and not leased or the lease run out (its relay
        died between publishing and marking). The candidates are read through
        the outbox's ``(status, created_at)`` index, outside any transaction
        (on the embedded store a long read inside one holds up every other
        transaction), so the read costs what is pending, never what was
        sent. Then a short transaction reads them again by ``_id`` and leases
        those still claimable: two relays leasing the same entries conflict,
        and the one retried sees the other's lease
        (``Repository.compare_and_set`` says why not in one filter).
        """
        outbox = self.db[OUTBOX]
        candidates = self._candidates(now)
        if not candidates:
            return []
        lease = {"lease_until": now + self.lease, "lease_owner": uuid.uuid4().hex}

        def lease_still_claimable(session: ClientSession) -> list[dict[str, Any]]:
            current = outbox.find({"_id": {"$in": candidates}}, session=session)
            claimed = [
                {**entry, **lease}
                for entry in current
                if entry["status"] == "pending" and lease_expired(entry.get("lease_until"), now)
            ]
            if claimed:
                outbox.update_many(
                    {"_id": {"$in": [entry["_id"] for entry in claimed]}},
                    {"$set": lease},
                    session=session,
                )
            return sorted(claimed, key=lambda entry: (entry["created_at"], entry["_id"]))

        with self.db.client.start_session() as session:
            return session.with_transaction(lease_still_claimable)

    def _candidates(self, now: datetime) -> list[str]:
        """The ids of the oldest claimable entries, at most a batch, in order.

        The embedded store reads and sorts every pending entry for a query
        on ``status`` alone, so with a backlog each claim cost the whole
        backlog and draining it took time quadratic in its size; the
        ``BacklogWindow`` reads only up to a horizon its last full read noted.
        Entries leased by another replica are passed over, never in the way.
        """
        found = self._window.oldest(
            self.db[OUTBOX],
            {"status": "pending"},
            {"lease_until": 1},
            ORDER,
            self.batch_size,
            lambda entry: lease_expired(entry.get("lease_until"), now),
        )
        return [entry["_id"] for entry in found]

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
