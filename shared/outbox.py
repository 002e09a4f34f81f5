"""The outbox relay: publishes committed events with publisher confirms.

Repositories write events to the ``outbox`` collection in the same
transaction as the state change. The relay, running inside the service
process, claims pending entries under a lease (so replicas do not publish the
same entry at the same moment), publishes each persistent message and waits
for the broker's confirm, then marks the entries sent.

A crash between the confirm and the mark means the entry is published again
after its lease runs out. That duplicate is deliberate: delivery is at least
once and every consumer deduplicates on the event ``id``. What can never
happen is an event that is committed and never published.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
from kombu.exceptions import KombuError
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from shequ.contracts.envelope import CONTENT_TYPE
from shequ.faults import fault_point
from shequ.metrics import EVENTS_PUBLISHED, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING
from shequ.store import OUTBOX, lease_expired

log = logging.getLogger(__name__)

#: The order events leave the outbox in: the order they were written.
ORDER = [("created_at", 1), ("_id", 1)]


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
    ) -> None:
        self.db = db
        self.amqp_uri = amqp_uri
        self.service = service
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: kombu.Connection | None = None
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
        """Claim, publish and mark one batch; return how many were published."""
        outbox = self.db[OUTBOX]
        claimed = self.claim(datetime.now(UTC))
        if not claimed:
            return 0
        published: list[str] = []
        try:
            for entry in claimed:
                self._publish(entry)
                published.append(entry["_id"])
                EVENTS_PUBLISHED.labels(self.service, entry["type"]).inc()
            fault_point(self.service, "relay_after_publish")
        finally:
            if published:
                outbox.update_many(
                    {"_id": {"$in": published}},
                    {"$set": {"status": "sent", "sent_at": datetime.now(UTC)}},
                )
        return len(published)

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
        candidates: list[str] = []
        for entry in outbox.find({"status": "pending"}, {"lease_until": 1}).sort(ORDER):
            if lease_expired(entry.get("lease_until"), now):
                candidates.append(entry["_id"])
                if len(candidates) == self.batch_size:
                    break
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
        connection = self._ensure_connection()
        exchange = self._exchanges.get(entry["exchange"])
        if exchange is None:
            exchange = kombu.Exchange(entry["exchange"], type="topic", durable=True)
            exchange(connection.default_channel).declare()
            self._exchanges[entry["exchange"]] = exchange
        producer = kombu.Producer(connection.default_channel)
        producer.publish(
            json.dumps(entry["body"], ensure_ascii=False),
            exchange=exchange,
            routing_key=entry["routing_key"],
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=entry["_id"],
            retry=False,
        )

    def _ensure_connection(self) -> kombu.Connection:
        if self._connection is None:
            connection = kombu.Connection(
                self.amqp_uri, transport_options={"confirm_publish": True}, heartbeat=0
            )
            connection.connect()
            self._connection = connection
            self._exchanges = {}
        return self._connection

    def _close_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                log.debug("closing the relay's broker connection failed", exc_info=True)
            self._connection = None
