"""The store provider: one MongoDB database per service, behind a repository.

A service declares ``store = Store(MyRepository)``; each worker gets a fresh
repository bound to the service's database. Repositories are the only code
that touches collections. They write state changes and the events those
changes cause in one transaction (``transaction()`` plus ``emit()``), which is
what makes the outbox trustworthy: an event exists if and only if its state
change was committed.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

import pymongo
from nameko.extensions import DependencyProvider
from pymongo import IndexModel
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from shequ import audit as audit_trail
from shequ import policy
from shequ.contracts import CloudEvent, new_event
from shequ.contracts.registry import EventSpec
from shequ.startup import wait_through

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTBOX = "outbox"
#: The relay's publication log: one document per published batch (``shequ.outbox``).
OUTBOX_PUBLISHED = "outbox_published"
PROCESSED = "processed_events"

#: The outbox's one index: the relay's backlog gauges and its catching up read through it.
OUTBOX_ORDER_INDEX = [("created_at", 1)]


def lease_expired(lease_until: datetime | None, now: datetime) -> bool:
    """No lease, or one that has run out by ``now`` (a naive time from the store is UTC)."""
    if lease_until is None:
        return True
    if lease_until.tzinfo is None:
        lease_until = lease_until.replace(tzinfo=UTC)
    return lease_until <= now


class BacklogWindow:
    """Reads the oldest items of a backlog without reading the whole backlog each time.

    The embedded store reads every document a filter matches before it sorts
    or limits, so "the oldest hundred pending" costs the whole pending set,
    and draining a backlog batch by batch costs time quadratic in its size
    (docs/performance.md). A full read therefore also notes a horizon: the
    ``field`` value where it stopped, ``batches`` batches in (or later, once
    it has found a batch). Later reads ask
    only for items up to that horizon (a range on the same index), all of
    them older than any beyond it, so the order is kept; once that range
    holds less than a batch of wanted items, the next read is a full one
    and notes a new horizon. One window per reader and per ``keep``: the
    horizon is only a hint, so replicas need not share it.
    """

    def __init__(self, field: str, batches: int = 10) -> None:
        self.field = field
        self.batches = batches
        self.horizon: Any = None

    def oldest(
        self,
        collection: Any,
        query: dict[str, Any],
        projection: dict[str, Any] | None,
        order: list[tuple[str, int]],
        wanted: int,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``wanted`` documents matching ``query`` that ``keep`` accepts, in ``order``.

        ``order`` must begin with ``field`` ascending, and ``query`` may bound
        ``field`` only with ``$lte``; ``projection`` need not name ``field``
        (None: whole documents). Without ``keep`` every match is wanted, and
        a read up to the horizon asks for no more than ``wanted``.
        """
        projection = None if projection is None else {**projection, self.field: 1}
        if self.horizon is not None:
            cursor = collection.find(self._bounded(query, self.horizon), projection).sort(order)
            if keep is None:
                cursor = cursor.limit(wanted)
            found = [doc for doc in cursor if keep is None or keep(doc)]
            if len(found) >= wanted:
                return found[:wanted]
        self.horizon = None
        found, seen = [], 0
        for doc in collection.find(query, projection).sort(order):
            seen += 1
            if len(found) < wanted and (keep is None or keep(doc)):
                found.append(doc)
            # Read on until a batch is found, however many are passed over
            # (another reader's kinds, leased items), so the front of the
            # backlog never hides what lies behind it.
            if len(found) == wanted and seen >= wanted * self.batches:
                self.horizon = doc[self.field]
                break
        return found

    def _bounded(self, query: dict[str, Any], horizon: Any) -> dict[str, Any]:
        condition = query.get(self.field)
        if isinstance(condition, dict) and "$lte" in condition:
            return {**query, self.field: {**condition, "$lte": min(condition["$lte"], horizon)}}
        return {**query, self.field: {"$lte": horizon}}


def as_record(document: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the API shows it: ``_id`` becomes ``id``."""
    record = dict(document)
    record["id"] = record.pop("_id")
    return record


def database_name(service: str, prefix: str | None = None) -> str:
    """The database a service owns: its name behind ``MONGO_DATABASE_PREFIX``.

    Also used by operator commands that write to a service's database
    directly, so both agree on the name.
    """
    return f"{prefix or ''}{service}"


def write_concern(value: Any) -> int | str:
    """``majority`` (a replica set: a commit survives the loss of the primary) or a count."""
    text = str(value if value not in (None, "") else 1)
    if text == "majority":
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"MONGO_WRITE_CONCERN is majority or a number of members, not {text!r}")


def ensure_indexes(db: Database[Any], repository_cls: type[Repository]) -> None:
    """Create a repository's indexes, and the outbox's and processed-events', in ``db``.

    Called when a service starts and by ``shequ init`` (the Kubernetes install
    and upgrade job), so a large index build can happen before a rollout.
    """
    indexes: dict[str, list[IndexModel]] = {
        OUTBOX: [IndexModel(OUTBOX_ORDER_INDEX)],
        OUTBOX_PUBLISHED: [IndexModel([("through", 1)]), IndexModel([("at", 1)])],
        PROCESSED: [IndexModel([("processed_at", 1)])],
        **{name: list(models) for name, models in audit_trail.INDEXES.items()},
    }
    for collection, models in repository_cls.INDEXES.items():
        indexes.setdefault(collection, []).extend(models)
    for collection, models in indexes.items():
        try:
            db[collection].create_indexes(models)
        except ConnectionFailure:
            raise  # the store is away: the caller waits or reports it
        except PyMongoError:
            log.exception("creating indexes on %s.%s failed", db.name, collection)
            raise


class AlreadyProcessed(Exception):
    """The event was handled before by this handler; its effects already exist."""


class Repository:
    """Base of every service's repository.

    Subclasses name their collections' indexes in ``INDEXES`` (created when the
    service starts) and expose domain-named methods. Inside ``transaction()``
    every method uses the transaction's session, so the handler and route
    code never handle sessions themselves.
    """

    INDEXES: ClassVar[dict[str, list[IndexModel]]] = {}
    #: A repository with writes that all touch one document (a log's head) sets
    #: this to a lock, and the methods making those writes hold it around
    #: their transactions (``writes``): they then run one at a time per process
    #: instead of conflicting and retrying each other. Event handlers do not
    #: take it; a handler should queue work for such a writer rather than wait
    #: its turn (the disclosure log's sequencer).
    SERIAL_WRITES: ClassVar[threading.Lock | None] = None

    def __init__(
        self,
        db: Database[Any],
        *,
        service: str,
        district: str,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.service = service
        self.district = district
        self.session: ClientSession | None = None
        #: Called after a transaction that emitted events commits: the relay's nudge.
        self._on_commit = on_commit
        self._emitted = False
        #: Who is changing things through this repository, for the audit trail
        #: (``audit``): set from the worker (the route's caller, the event) by ``Store``.
        self.actor: dict[str, Any] = {"system": service}
        #: What they are doing: the route's action, the event's type, the timer's name.
        self.action: str = f"{service}.system"

    def sibling(self) -> Self:
        """A repository like this one (database, actor, settings) in no transaction.

        For work done side by side in one worker: a repository holds the
        session of the transaction it is in, so each thread or green
        thread needs its own.
        """
        twin = copy.copy(self)
        twin.session = None
        twin._emitted = False
        return twin

    @contextmanager
    def writes(self) -> Iterator[None]:
        """Hold the repository's process-wide write lock, if it has one, for a transaction.

        Concurrent transactions that all update one document conflict; the
        loser is retried by the driver with back-off for up to two minutes, so
        under load most of the time goes to conflicts (measured in the soak
        run on the disclosure log). Taking turns inside the process removes
        those conflicts; replicas still conflict with each other and retry.
        """
        if self.SERIAL_WRITES is None or self.session is not None:
            yield
            return
        with self.SERIAL_WRITES:
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one MongoDB transaction (nested blocks join it)."""
        if self.session is not None:
            yield
            return
        with self.db.client.start_session() as session:
            with session.start_transaction():
                self.session = session
                self._emitted = False
                try:
                    yield
                finally:
                    self.session = None
            # Leaving start_transaction() committed without raising.
        if self._emitted:
            self._on_commit()

    def run_in_transaction(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a transaction, retrying it on transient conflicts.

        pymongo's ``with_transaction`` retries on TransientTransactionError
        (write conflicts between concurrent workers) and on an unknown commit
        result, so ``work`` must be safe to run again: it is, because
        everything it wrote was rolled back.
        """
        if self.session is not None:
            return work()
        with self.db.client.start_session() as session:

            def callback(bound: ClientSession) -> T:
                self.session = bound
                self._emitted = False
                try:
                    return work()
                finally:
                    self.session = None

            result = session.with_transaction(callback)
        if self._emitted:
            self._on_commit()
        return result

    def compare_and_set(
        self,
        collection: str,
        document_id: Any,
        expected: dict[str, Any],
        change: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Apply ``change`` to one document if its fields still equal ``expected``; else None.

        Returns the document as changed. ``change`` is an update (``$set``
        and the like) or a whole replacement. Only inside a transaction: the
        document is read by ``_id`` and written by ``_id``, and the
        transaction's snapshot makes the pair atomic, because a concurrent
        writer of the same document makes one of the two transactions
        conflict and be retried, when it reads the new value. A
        ``find_one_and_update({"_id": id, "version": v})`` would say the same
        in one round trip, but SecantusDB, the embedded store, answers a
        findAndModify in time that grows with the collection (below). An
        ``update_one`` with that filter, then a read by ``_id``, would take one
        command less: the store runs a filter that opens with ``_id`` as a
        point lookup (notify's claim does so, docs/performance.md, "Query
        plans"). Not done here yet: every service's steps go through this.
        """
        self._require_transaction("compare_and_set")
        current = self.db[collection].find_one({"_id": document_id}, session=self.session)
        if current is None or any(current.get(key) != value for key, value in expected.items()):
            return None
        if any(key.startswith("$") for key in change):
            return self.update_by_id(collection, document_id, change)
        self.db[collection].replace_one({"_id": document_id}, change, session=self.session)
        return {**change, "_id": document_id}

    # Changes to one document by ``_id`` in the caller's transaction, without
    # findAndModify. SecantusDB 0.7.0b3, the embedded store, answers a
    # findAndModify (``find_one_and_update``, ``_replace``, ``_delete``) that
    # matches a document in time that grows with the collection, though its
    # plan is a point lookup on ``_id``: on one collection with the indexes of
    # notify's deliveries, 22 ms at 1,000 documents, 79 ms at 4,000 and 153 ms
    # at 12,000, while ``update_one`` by ``_id`` took 2 to 8 ms at any size
    # (docs/performance.md, "Query plans"). A read and a write by ``_id``
    # answer the same question in two point lookups; in a transaction the
    # pair is as atomic as the one command (a concurrent writer of the
    # document makes one of the two conflict and be retried). The audit
    # counter, the disclosure log's head and volunteer's round lease keep
    # findAndModify: they are collections of a few documents, and the first
    # and last are written outside any transaction, where only the one
    # command is atomic.

    def update_by_id(
        self, collection: str, document_id: Any, update: dict[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        """Apply ``update`` to the document; the document as changed (None if there is none)."""
        self._require_transaction("update_by_id")
        written = self.db[collection].update_one(
            {"_id": document_id}, update, upsert=upsert, session=self.session
        )
        if not written.matched_count and written.upserted_id is None:
            return None
        return self.stored(collection, document_id)

    def replace_by_id(
        self, collection: str, document_id: Any, document: dict[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        """Replace the document (create it with ``upsert``); the document before, or None."""
        self._require_transaction("replace_by_id")
        previous = self.stored(collection, document_id)
        if previous is not None or upsert:
            self.db[collection].replace_one(
                {"_id": document_id}, document, upsert=upsert, session=self.session
            )
        return previous

    def delete_by_id(self, collection: str, document_id: Any) -> dict[str, Any] | None:
        """Delete the document; the document before, or None if there was none."""
        self._require_transaction("delete_by_id")
        previous = self.stored(collection, document_id)
        if previous is not None:
            self.db[collection].delete_one({"_id": document_id}, session=self.session)
        return previous

    def _require_transaction(self, what: str) -> None:
        if self.session is None:
            raise RuntimeError(f"{what}() must be called inside transaction()")

    def stored(self, collection: str, document_id: Any) -> dict[str, Any] | None:
        """A document as stored, read in the current transaction (None if there is none).

        An audit record's ``after`` is read back rather than taken from what
        was written: the store keeps dates to the millisecond, and ``after``
        must hash the same as the next change's ``before``.
        """
        return self.db[collection].find_one({"_id": document_id}, session=self.session)

    def replace_audited(
        self, collection: str, kind: str, document: dict[str, Any], replacement: dict[str, Any],
        unchanged: str,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Replace ``document`` unless its ``unchanged`` field moved since it was read, audited.

        In a transaction of its own: the key rotations re-seal documents one
        at a time this way, a concurrent change winning over the re-sealing.
        """

        def replace() -> dict[str, Any] | None:
            written = self.compare_and_set(
                collection, document["_id"], {unchanged: document[unchanged]}, replacement
            )
            if written is not None:
                self.audit(
                    kind, document["_id"], document, self.stored(collection, document["_id"])
                )
            return written

        return self.run_in_transaction(replace)

    def emit(
        self,
        spec: EventSpec,
        *,
        subject: str,
        sequence: int,
        data: dict[str, Any],
        traceparent: str | None = None,
    ) -> CloudEvent:
        """Write an event to the outbox in the current transaction.

        The relay publishes it after the commit; if the transaction aborts,
        the event was never written. Emitting outside a transaction is a
        programming error: it would reopen the gap the outbox closes.
        """
        return self.emit_many(spec, [(subject, sequence, data)], traceparent=traceparent)[0]

    def emit_many(
        self,
        spec: EventSpec,
        events: Iterable[tuple[str, int, dict[str, Any]]],
        *,
        traceparent: str | None = None,
    ) -> list[CloudEvent]:
        """``emit`` for several events of one type, as ``(subject, sequence, data)``, in one write.

        A writer that commits many effects in one transaction (the disclosure
        log's sequencer) would otherwise pay one round trip to the store per event.
        """
        self._require_transaction("emit")
        emitted = [
            new_event(
                spec,
                district=self.district,
                subject=subject,
                sequence=sequence,
                data=data,
                traceparent=traceparent,
            )
            for subject, sequence, data in events
        ]
        if not emitted:
            return []
        now = datetime.now(UTC)
        self.db[OUTBOX].insert_many(
            [
                {
                    "_id": event.id,
                    # Events of one transaction leave in the order emitted (the
                    # stream keeps it); reading the outbox itself, the relay goes
                    # by created_at, which the store keeps to the millisecond.
                    "created_at": now + timedelta(milliseconds=position),
                    "exchange": spec.exchange,
                    "routing_key": spec.name,
                    "type": spec.type,
                    "body": event.to_json_dict(),
                }
                for position, event in enumerate(emitted)
            ],
            session=self.session,
        )
        self._emitted = True
        return emitted

    def audit(self, kind: str, object_id: str, before: Any, after: Any) -> dict[str, Any]:
        """Record a state change in the service's audit trail, in the current transaction.

        ``before`` and ``after`` are the object as stored (or as the API shows
        it), None where it does not exist; only their hashes are kept. Like
        ``emit``, outside a transaction this is a programming error: a change
        must not commit without its record.
        """
        (record,) = self.audit_many(kind, [(object_id, before, after)])
        return record

    def audit_many(
        self, kind: str, changes: Sequence[tuple[str, Any, Any]]
    ) -> list[dict[str, Any]]:
        """``audit`` for several objects of one kind, ``(id, before, after)`` each, in one write.

        For a batch changed in one transaction: the records are numbered and
        chained together (``shequ.audit.append_many`` says why that matters).
        """
        self._require_transaction("audit")
        return audit_trail.append_many(
            self.db,
            self.session,
            actor=self.actor,
            action=self.action,
            changes=[(kind, object_id, before, after) for object_id, before, after in changes],
        )

    def mark_processed(self, handler: str, event: CloudEvent) -> None:
        """Record in the current transaction that ``handler`` has handled ``event``.

        Raises ``AlreadyProcessed`` when the mark exists: the event is a
        redelivery and the transaction must change nothing.
        """
        self._require_transaction("mark_processed")
        try:
            self.db[PROCESSED].insert_one(
                {
                    "_id": f"{handler}:{event.id}",
                    "handler": handler,
                    "event_id": event.id,
                    "type": event.type,
                    "subject": event.subject,
                    "processed_at": datetime.now(UTC),
                },
                session=self.session,
            )
        except DuplicateKeyError as exc:
            raise AlreadyProcessed(f"{handler} already processed event {event.id}") from exc

    def ping(self) -> None:
        """Raise if the database cannot be reached (readiness)."""
        self.db.command("ping")


def _store_away(exc: Exception) -> bool:
    """Whether ``exc`` says the database could not be reached, not that the request was wrong.

    Connection failures (refused, timed out, no server selectable) and the
    errors a transaction labels transient, which a failover mid-transaction
    raises.
    """
    return isinstance(exc, ConnectionFailure) or (
        isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError")
    )


class Store(DependencyProvider):
    """Injects a repository bound to the service's own database.

    The database is named after the service, behind ``MONGO_DATABASE_PREFIX``
    (tests give each run its own prefix). Indexes, including the outbox's
    and the processed-events', are created at start so a fresh database is
    usable at once.
    """

    def __init__(self, repository_cls: type[Repository]) -> None:
        self.repository_cls = repository_cls
        self.client: pymongo.MongoClient[Any] | None = None
        self.relay: Any = None
        self._stopping = threading.Event()

    def setup(self) -> None:
        config = self.container.config
        self.service = self.container.service_name
        self.district = config.get("DISTRICT", "dev")
        self.client = pymongo.MongoClient(
            config["MONGO_URI"],
            serverSelectionTimeoutMS=int(config.get("MONGO_TIMEOUT_MS", 5000)),
            tz_aware=True,
            uuidRepresentation="standard",
            w=write_concern(config.get("MONGO_WRITE_CONCERN")),
        )
        self.database_name = database_name(self.service, config.get("MONGO_DATABASE_PREFIX"))
        self.db = self.client[self.database_name]
        self.start_timeout = float(config.get("MONGO_START_TIMEOUT_SECONDS") or 300)

    def at_start(self, step: Callable[[], T], what: str) -> T:
        """Run a start-up ``step`` that needs the database, waiting for the database if it is away.

        Creating indexes and seeding reference data are run again, with a
        back-off, for as long as the failure is the store being unreachable,
        and only stop the process after ``MONGO_START_TIMEOUT_SECONDS``
        (``shequ.startup.wait_through``). ``/readyz`` says ``started: false``
        meanwhile.
        """
        return wait_through(
            step,
            away=_store_away,
            server=f"{self.service}'s database",
            what=what,
            timeout=self.start_timeout,
            stopping=self._stopping,
        )

    def start(self) -> None:
        self.at_start(self.ensure_indexes, "creating indexes")
        from shequ.outbox import OutboxRelay

        self.relay = OutboxRelay(
            self.db,
            amqp_uri=self.container.config["AMQP_URI"],
            service=self.service,
            poll_interval=float(self.container.config.get("OUTBOX_POLL_SECONDS", 1.0)),
            lease_seconds=float(self.container.config.get("OUTBOX_LEASE_SECONDS", 30.0)),
        )
        self.relay.start()

    def ensure_indexes(self) -> None:
        ensure_indexes(self.db, self.repository_cls)

    def stop(self) -> None:
        self._stopping.set()
        if self.relay is not None:
            self.relay.stop()
        if self.client is not None:
            self.client.close()

    def kill(self) -> None:
        self.stop()

    def worker_setup(self, worker_ctx: Any) -> None:
        policy.begin_uses(self._record_uses_safely)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        """A worker that succeeded leaves a record of each use of sensitive data it made."""
        policy.flush_uses(exc_info is None)

    def _record_uses_safely(self, uses: list[Any]) -> None:
        """One record per use. A read changes nothing, so there is no transaction to
        join: each record is written on its own (the actor is the caller, with the
        declared purpose)."""
        if self.client is None:
            return
        try:
            self._record_uses(uses)
        except PyMongoError:
            log.exception("recording %d use(s) of sensitive data failed", len(uses))

    def _record_uses(self, uses: list[tuple[Any, str, Any]]) -> None:
        """A listing's uses (a page of volunteers in the clear): one write per actor and action."""

        def actor_and_action(use: tuple[Any, str, Any]) -> tuple[Any, ...]:
            caller, action, _ = use
            return caller.sub, tuple(sorted(caller.roles)), caller.purpose, action

        for (sub, roles, purpose, action), same in itertools.groupby(uses, actor_and_action):
            audit_trail.append_many(
                self.db,
                None,
                actor={"sub": sub, "roles": list(roles), "purpose": purpose},
                action=action,
                changes=[(target.kind, target.id or "-", None, None) for _, _, target in same],
            )

    def get_dependency(self, worker_ctx: Any) -> Repository:
        on_commit = self.relay.nudge if self.relay is not None else (lambda: None)
        repository = self.repository_cls(
            self.db, service=self.service, district=self.district, on_commit=on_commit
        )
        bind_actor(repository, worker_ctx)
        return repository

    def is_ready(self) -> bool:
        """The database answers a ping and the relay is running."""
        try:
            self.db.command("ping")
        except PyMongoError:
            return False
        return self.relay is not None and self.relay.running


def bind_actor(repository: Repository, worker_ctx: Any) -> None:
    """Tell the repository who acts in this worker: a route's caller, or the timer.

    Event handlers bind the event themselves (``shequ.events.idempotent``):
    the worker's argument is the raw message there, not yet parsed.
    """
    entrypoint = getattr(worker_ctx, "entrypoint", None)
    args = getattr(worker_ctx, "args", ()) or ()
    action = getattr(entrypoint, "action_name", None)
    if action is not None or hasattr(entrypoint, "url"):
        identity = getattr(args[0], "identity", None) if args else None
        repository.action = action or f"{repository.service}.{entrypoint.method_name}"
        repository.actor = (
            {"sub": identity.sub, "roles": sorted(identity.roles)}
            if identity is not None
            else {"anonymous": True}
        )
    elif entrypoint is not None and hasattr(entrypoint, "interval"):
        repository.action = f"{repository.service}.timer.{entrypoint.method_name}"
        repository.actor = {"timer": entrypoint.method_name}
