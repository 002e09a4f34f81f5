"""Notify's repository: rules, templates, contact points, deliveries and their attempts.

A delivery is one notification of one event to one recipient under one rule
(or one event to one bureau subscription, or one day's digest). Its ``key``
is unique, so however often an event arrives it is recorded once. The event
handler only records deliveries; the delivery worker claims due ones under a
lease with single-document updates, sends outside any transaction, and then
records the attempt and the new state.

Contact addresses (phone numbers, e-mail addresses, webhook URLs) are sealed
at rest (``shequ.sealing``, bound to the recipient and the channel's place)
and opened on the way out; a contact document lists the key ids it uses
(``kids``) so the rotation timer finds those under an old key, and those
stored in the clear before sealing (no ``kids``).

The audit trail records every change of rules, templates, contacts and
subscriptions, and of deliveries only what someone decided or what ends
them: an operator's requeue, a subscription's pause, resume or deletion
moving its deliveries, the digest timer releasing or bundling held ones,
and each delivery's final state (sent, dead, skipped, paused). Not a
delivery's creation by the event handler (the event's own service recorded
the change that caused it, and the delivery's ``event_id`` names it), its
leases, deferrals and failed attempts before the last: those are the
delivery worker's bookkeeping, already kept one by one in ``attempts``, and
a record each would multiply the trail by every retry of every message
without saying anything about who changed what.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from shequ import sealing
from shequ.contracts import notify as contract
from shequ.store import BacklogWindow, Repository, Store, as_record, lease_expired
from shequ_services.notify.domain import (
    Contact,
    ContactChannel,
    Planned,
    QuietHours,
    Rule,
    Template,
    audience_role,
)
from shequ_services.notify.routing import RoutingTable

RULES = "rules"
TEMPLATES = "templates"
CONTACTS = "contacts"
DELIVERIES = "deliveries"
ATTEMPTS = "attempts"
SUBSCRIPTIONS = "subscriptions"

PENDING = "pending"
HELD = "held"
SENT = "sent"
DEAD = "dead"
DIGESTED = "digested"
PAUSED = "paused"
SKIPPED = "skipped"
#: A delivery's states the worker leaves it in for good (or until an operator acts).
FINAL = (SENT, DEAD, SKIPPED, PAUSED)


class NotifyRepository(Repository):
    keyring: sealing.Keyring

    INDEXES = {
        DELIVERIES: [
            IndexModel([("key", ASCENDING)], unique=True),
            IndexModel([("status", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("kind", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("subject_ref", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("subscription", ASCENDING), ("created_at", DESCENDING)]),
            IndexModel([("event_id", ASCENDING)]),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("recipient", ASCENDING), ("status", ASCENDING)]),
        ],
        ATTEMPTS: [
            IndexModel([("event_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("recipient", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("delivery_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)]),
        ],
        RULES: [IndexModel([("event_type", ASCENDING)])],
        CONTACTS: [IndexModel([("kids", ASCENDING)])],
        SUBSCRIPTIONS: [IndexModel([("event_types", ASCENDING)])],
    }

    # Rules and templates.

    def has_rules(self) -> bool:
        return self.db[RULES].count_documents({}, limit=1) > 0

    def seed(self, rules: list[Rule], templates: list[Template], now: datetime) -> None:
        """Store the seed file's rules and templates into a notify database that has none.

        One transaction, so a crash cannot leave half a seed that looks like a
        complete one; retried on write conflicts (several replicas starting).
        """

        def work() -> None:
            if self.db[RULES].count_documents({}, limit=1, session=self.session):
                return
            for template in templates:
                self.save_template(template, now)
            for rule in rules:
                self.save_rule(rule, now)

        self.run_in_transaction(work)

    def rules_for(self, event_type: str) -> list[Rule]:
        found = self.db[RULES].find({"event_type": event_type}, session=self.session)
        return [_to_rule(document) for document in found]

    def rules(self) -> list[Rule]:
        return [_to_rule(document) for document in self.db[RULES].find().sort("_id", 1)]

    def rule(self, rule_id: str) -> Rule | None:
        document = self.db[RULES].find_one({"_id": rule_id})
        return _to_rule(document) if document else None

    def save_rule(self, rule: Rule, now: datetime) -> None:
        document: dict[str, Any] = {
            "event_type": rule.event_type,
            "audiences": list(rule.audiences),
            "template": rule.template,
            "urgency": rule.urgency,
            "fallback": rule.fallback,
            "enabled": rule.enabled,
            "updated_at": now,
        }
        self._put(RULES, "rule", rule.id, document)

    def delete_rule(self, rule_id: str) -> bool:
        return self._delete(RULES, "rule", rule_id)

    def _put(self, collection: str, kind: str, document_id: str, document: dict[str, Any]) -> None:
        """Create or replace a document by id, with its audit record, in one transaction."""

        def work() -> None:
            previous = self.replace_by_id(collection, document_id, document, upsert=True)
            self.audit(kind, document_id, previous, self.stored(collection, document_id))

        self.run_in_transaction(work)

    def _delete(self, collection: str, kind: str, document_id: str) -> bool:
        """Delete a document by id with its audit record; False if there was none."""

        def work() -> bool:
            previous = self.delete_by_id(collection, document_id)
            if previous is None:
                return False
            self.audit(kind, document_id, previous, None)
            return True

        return self.run_in_transaction(work)

    def templates(self) -> list[Template]:
        return [_to_template(d) for d in self.db[TEMPLATES].find().sort("_id", 1)]

    def template(self, template_id: str) -> Template | None:
        document = self.db[TEMPLATES].find_one({"_id": template_id}, session=self.session)
        return _to_template(document) if document else None

    def template_ids(self) -> set[str]:
        return {d["_id"] for d in self.db[TEMPLATES].find({}, {"_id": 1})}

    def save_template(self, template: Template, now: datetime) -> None:
        document = {
            "body": dict(template.body),
            "subject": dict(template.subject),
            "updated_at": now,
        }
        self._put(TEMPLATES, "template", template.id, document)

    def event_types_using(self, template_id: str) -> set[str]:
        return {d["event_type"] for d in self.db[RULES].find({"template": template_id})}

    # Contact points: personal data, kept here and nowhere else.

    def contact(self, recipient: str) -> Contact | None:
        document = self.db[CONTACTS].find_one({"_id": recipient})
        return _to_contact(self._opened(document)) if document else None

    def contact_record(self, recipient: str) -> dict[str, Any] | None:
        document = self.db[CONTACTS].find_one({"_id": recipient})
        return _contact_record(self._opened(document)) if document else None

    def save_contact(self, contact: Contact, now: datetime) -> dict[str, Any]:
        document = self._contact_document(contact, now)
        self._put(CONTACTS, "contact", contact.recipient, document)
        return _contact_record(self._opened({"_id": contact.recipient, **document}))

    def reseal_batch(self, limit: int) -> int:
        """Re-seal up to ``limit`` contacts under the active key; how many changed.

        Picks contacts sealed under another key and those stored in the clear
        before sealing (no ``kids``); ``updated_at`` does not move, and a
        contact saved meanwhile (sealed under the active key anyway) is left
        alone. Each re-sealed contact is recorded (action
        ``notify.timer.<timer>``): its stored bytes changed, though no fact did.
        """
        stale = self.keyring.stale_kids()
        query = {"$or": [{"kids": {"$exists": False}}, {"kids": {"$in": stale}}]}
        changed = 0
        for document in self.db[CONTACTS].find(query).limit(limit):
            contact = _to_contact(self._opened(document))
            resealed = self._contact_document(contact, document["updated_at"])
            written = self.replace_audited(CONTACTS, "contact", document, resealed, "updated_at")
            changed += written is not None
        return changed

    def _contact_document(self, contact: Contact, now: datetime) -> dict[str, Any]:
        seal = self.keyring.seal
        document = {
            "channels": [
                {
                    "kind": c.kind,
                    "address": seal(
                        c.address, record_id=contact.recipient, label=f"channels.{i}.address"
                    ),
                }
                for i, c in enumerate(contact.channels)
            ],
            "language": contact.language,
            "timezone": contact.timezone,
            "quiet_hours": (
                {
                    "start": contact.quiet_hours.start.strftime("%H:%M"),
                    "end": contact.quiet_hours.end.strftime("%H:%M"),
                }
                if contact.quiet_hours
                else None
            ),
            "digest": contact.digest,
            "updated_at": now,
        }
        document["kids"] = sorted(sealing.kids_in(document))
        return document

    def _opened(self, document: dict[str, Any]) -> dict[str, Any]:
        """A contact document with its addresses opened (and its key ids dropped)."""
        recipient = document["_id"]
        channels = [
            {
                **c,
                "address": self.keyring.open_stored(
                    c["address"], record_id=recipient, label=f"channels.{i}.address"
                ),
            }
            for i, c in enumerate(document["channels"])
        ]
        return {**{k: v for k, v in document.items() if k != "kids"}, "channels": channels}

    def delete_contact(self, recipient: str) -> bool:
        return self._delete(CONTACTS, "contact", recipient)

    # Deliveries: recorded by the event handler, inside its transaction.

    def record_planned(self, planned: Planned, context: dict[str, Any], now: datetime) -> None:
        """Record a notification once per key; a second recording changes nothing."""
        self.db[DELIVERIES].update_one(
            {"key": planned.key},
            {
                "$setOnInsert": {
                    "_id": str(uuid.uuid4()),
                    "kind": "notification",
                    "event_id": planned.event_id,
                    "event_type": planned.event_type,
                    "subject_ref": planned.subject_ref,
                    "recipient": planned.recipient,
                    "audience": planned.audience,
                    "rule": planned.rule,
                    "template": planned.template,
                    "urgency": planned.urgency,
                    "fallback": planned.fallback,
                    "context": context,
                    **_fresh(now),
                }
            },
            upsert=True,
            session=self.session,
        )

    def record_for_subscription(
        self, subscription_id: str, event_id: str, event_type: str, subject: str,
        body: dict[str, Any], now: datetime,
    ) -> None:  # fmt: skip
        self.db[DELIVERIES].update_one(
            {"key": f"{event_id}|subscription:{subscription_id}"},
            {
                "$setOnInsert": {
                    "_id": str(uuid.uuid4()),
                    "kind": "subscription",
                    "subscription": subscription_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "subject_ref": subject,
                    "recipient": f"subscription:{subscription_id}",
                    "audience": "subscription",
                    "urgency": "immediate",
                    "fallback": False,
                    "body": body,
                    **_fresh(now),
                }
            },
            upsert=True,
            session=self.session,
        )

    def record_digest(
        self, recipient: str, day: date, subject: str, text: str, items: list[str], now: datetime
    ) -> None:
        """One digest delivery for a recipient's day, and its items marked as digested."""
        with self.transaction():
            key = f"digest|{recipient}|{day.isoformat()}"
            result = self.db[DELIVERIES].update_one(
                {"key": key},
                {
                    "$setOnInsert": {
                        "_id": str(uuid.uuid4()),
                        "kind": "digest",
                        "event_id": key,
                        "event_type": "digest",
                        "subject_ref": f"digest:{day.isoformat()}",
                        "recipient": recipient,
                        "audience": audience_role(recipient),
                        "urgency": "normal",
                        "fallback": True,
                        "items": items,
                        "rendered": {"subject": subject, "text": text},
                        **_fresh(now),
                    }
                },
                upsert=True,
                session=self.session,
            )
            if result.upserted_id is not None:
                created = self.db[DELIVERIES].find_one(
                    {"_id": result.upserted_id}, session=self.session
                )
                self.audit("delivery", str(result.upserted_id), None, created)
            self._move(items, HELD, {"status": DIGESTED, "digest": key})

    # The delivery worker's side.

    def due(
        self,
        now: datetime,
        kinds: tuple[str, ...] | None,
        limit: int,
        windows: dict[str | None, BacklogWindow] | None = None,
    ) -> list[dict[str, Any]]:
        """Deliveries due now, of ``kinds``, not leased: candidates for ``claim``, oldest first.

        Each kind is read through the ``(status, kind, due_at)`` index, the
        lease checked here: a filter naming more than the index holds reads
        the whole collection on the embedded store (``Repository.compare_and_set``).
        The kind was checked here too, after a read through ``(status,
        due_at)``: then a pass with nothing of its own kinds due (the bureau
        pass, with no subscriptions) read every due delivery of the others
        at every tick: in the soak run 7,440 due notifications, 938 ms of
        the store's time a read. Outside any transaction: on the
        embedded store a long read inside one holds up every other
        transaction (docs/performance.md). With ``windows`` kept between
        calls (one per kind), a backlog is not read whole each time.
        """
        windows = {} if windows is None else windows
        found: list[dict[str, Any]] = []
        for kind in kinds or (None,):
            query: dict[str, Any] = {"status": PENDING, "due_at": {"$lte": now}}
            if kind is not None:
                query["kind"] = kind
            found += windows.setdefault(kind, BacklogWindow("due_at")).oldest(
                self.db[DELIVERIES],
                query,
                {"kind": 1, "lease_until": 1, "recipient": 1, "resolved": 1},
                [("due_at", ASCENDING)],
                limit,
                lambda delivery: lease_expired(delivery.get("lease_until"), now),
            )
        found.sort(key=lambda delivery: delivery["due_at"])
        return found[:limit]

    def claim(
        self, candidate: dict[str, Any], now: datetime, lease: timedelta
    ) -> dict[str, Any] | None:
        """Lease a candidate from ``due`` to this worker, unless another took it meanwhile.

        One conditional update by ``_id``, outside any transaction: only the
        worker whose update still finds the delivery pending under the lease
        it read changes it, so replicas never send the same delivery twice
        (a single-document update is atomic on every store). Then the leased
        delivery is read by ``_id``. None when it is gone, sent or leased since.

        The embedded store answers a filter of ``_id`` and more fields by the
        ``_id`` alone and checks the rest on the one document, though its
        ``explain`` shows a collection scan (docs/performance.md, "Query
        plans"). This was a compare-and-set in a transaction of its own, three
        commands and a commit's bookkeeping in the store for every delivery.
        """
        taken = self.db[DELIVERIES].update_one(
            {"_id": candidate["_id"], "status": PENDING,
             "lease_until": candidate.get("lease_until")},
            {"$set": {"lease_until": now + lease}},
        )  # fmt: skip
        if taken.matched_count == 0:
            return None
        return self.db[DELIVERIES].find_one({"_id": candidate["_id"]})

    def claim_due(
        self, now: datetime, lease: timedelta, kinds: tuple[str, ...] | None = None
    ) -> dict[str, Any] | None:
        """Lease the oldest due delivery (of ``kinds``) that nobody holds; None if none."""
        for candidate in self.due(now, kinds, limit=10):
            claimed = self.claim(candidate, now, lease)
            if claimed is not None:
                return claimed
        return None

    def defer(self, delivery_id: str, until: datetime, reason: str, **more: Any) -> None:
        self.db[DELIVERIES].update_one(
            {"_id": delivery_id},
            {"$set": {"due_at": until, "lease_until": None, "waiting_for": reason, **more}},
        )

    def set_resolved(self, delivery_id: str, recipient: str) -> None:
        """Remember whom a ``reporter-of:`` recipient turned out to be (a subject id)."""
        self.db[DELIVERIES].update_one({"_id": delivery_id}, {"$set": {"resolved": recipient}})

    def hold_for_digest(self, delivery_id: str, day: date, resolved: str) -> None:
        self.db[DELIVERIES].update_one(
            {"_id": delivery_id},
            {
                "$set": {
                    "status": HELD,
                    "digest_day": day.isoformat(),
                    "resolved": resolved,
                    "lease_until": None,
                }
            },
        )

    def finish(
        self,
        delivery: dict[str, Any],
        *,
        status: str,
        attempt: dict[str, Any] | None,
        changes: dict[str, Any],
        announce: bool = False,
    ) -> None:
        """Record an attempt and the delivery's new state together (and the sent event)."""

        def work() -> None:
            if attempt is not None:
                self.db[ATTEMPTS].insert_one(attempt, session=self.session)
            update = {"$set": {"status": status, "lease_until": None, **changes}}
            if status in FINAL:
                previous = self.db[DELIVERIES].find_one(
                    {"_id": delivery["_id"]}, session=self.session
                )
                written = self.update_by_id(DELIVERIES, delivery["_id"], update)
                if written is not None:
                    self.audit("delivery", delivery["_id"], previous, written)
            else:
                # A retry to come: the attempt is kept in ``attempts``, not in the trail.
                self.db[DELIVERIES].update_one(
                    {"_id": delivery["_id"]}, update, session=self.session
                )
            if announce:
                self.emit(
                    contract.NOTIFICATION_SENT_V1,
                    subject=delivery["_id"],
                    sequence=1,
                    data={
                        "notification_id": delivery["_id"],
                        "template": delivery.get("template") or delivery["kind"],
                        "audience": audience_role(delivery["recipient"]),
                        "channel": changes.get("channel", ""),
                        "subject_ref": delivery["subject_ref"],
                    },
                )

        self.run_in_transaction(work)

    def sends_to(self, recipient: str, since: datetime) -> list[datetime]:
        """When the recipient was last sent something non-urgent (for its rate limit)."""
        found = self.db[ATTEMPTS].find(
            {"recipient": recipient, "at": {"$gt": since}}, {"at": 1, "outcome": 1, "urgent": 1}
        )  # the index's fields only, so the embedded store uses it; the rest is checked here
        return [d["at"] for d in found if d.get("outcome") == "sent" and d.get("urgent") is False]

    def release_held(self, delivery_ids: list[str], now: datetime) -> None:
        self.run_in_transaction(
            lambda: self._move(
                delivery_ids,
                HELD,
                {"status": PENDING, "due_at": now, "lease_until": None, "urgency": "normal"},
            )
        )

    def _move(self, delivery_ids: list[str], status: str, changes: dict[str, Any]) -> None:
        """Set ``changes`` on those of the deliveries still in ``status`` (in a transaction)."""
        found = self.db[DELIVERIES].find({"_id": {"$in": delivery_ids}}, session=self.session)
        self._move_recorded(
            [document for document in found if document["status"] == status], changes
        )

    def _move_recorded(self, documents: list[dict[str, Any]], changes: dict[str, Any]) -> None:
        """Set ``changes`` on these deliveries as read, with one audit record each."""
        if not documents:
            return
        ids = [document["_id"] for document in documents]
        self.db[DELIVERIES].update_many(
            {"_id": {"$in": ids}}, {"$set": changes}, session=self.session
        )
        written = {
            document["_id"]: document
            for document in self.db[DELIVERIES].find({"_id": {"$in": ids}}, session=self.session)
        }
        for document in documents:
            self.audit("delivery", document["_id"], document, written.get(document["_id"]))

    def held(self, limit: int = 1000) -> list[dict[str, Any]]:
        cursor = self.db[DELIVERIES].find({"status": HELD}).sort("created_at", 1)
        return list(cursor.limit(limit))

    # Reading: the audit.

    def about(self, subject_ref: str, limit: int) -> list[dict[str, Any]]:
        cursor = self.db[DELIVERIES].find({"subject_ref": subject_ref, "kind": "notification"})
        return [_delivery_record(d) for d in cursor.sort("created_at", 1).limit(limit)]

    def deliveries(
        self, filters: dict[str, Any], limit: int, after: Position | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of deliveries, newest first, and whether more follow."""
        found, more = _page(self.db[DELIVERIES], filters, "created_at", after, limit)
        return [_delivery_record(d) for d in found], more

    def attempts(
        self, filters: dict[str, Any], limit: int, after: Position | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of attempts, newest first (a delivery's later attempt first on a tie)."""
        found, more = _page(self.db[ATTEMPTS], filters, "at", after, limit)
        return [as_record(d) for d in found], more

    def requeue(self, delivery_id: str, now: datetime) -> bool:
        """Give a dead delivery a fresh retry horizon (an operator decided to try again)."""
        fresh = {"$set": {**_fresh(now), "requeued_at": now}}

        def work() -> bool:
            previous = self.db[DELIVERIES].find_one({"_id": delivery_id}, session=self.session)
            requeued = self.compare_and_set(DELIVERIES, delivery_id, {"status": DEAD}, fresh)
            if requeued is None:
                return False
            self.audit("delivery", delivery_id, previous, self.stored(DELIVERIES, delivery_id))
            return True

        return self.run_in_transaction(work)

    # Bureau subscriptions.

    def add_subscription(
        self, url: str, event_types: list[str], secret: str, owner: str, now: datetime
    ) -> dict[str, Any]:
        document = {
            "_id": str(uuid.uuid4()),
            "url": url,
            "event_types": event_types,
            "secret": secret,
            "status": "active",
            "owner": owner,
            "created_at": now,
            "updated_at": now,
        }

        def work() -> None:
            self.db[SUBSCRIPTIONS].insert_one(document, session=self.session)
            after = self.stored(SUBSCRIPTIONS, document["_id"])
            self.audit("subscription", document["_id"], None, after)

        self.run_in_transaction(work)
        return as_record(document)

    def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        document = self.db[SUBSCRIPTIONS].find_one({"_id": subscription_id})
        return as_record(document) if document else None

    def subscriptions(self, owner: str | None, limit: int = 500) -> list[dict[str, Any]]:
        query = {"owner": owner} if owner else {}
        cursor = self.db[SUBSCRIPTIONS].find(query).sort("created_at", 1)
        return [as_record(d) for d in cursor.limit(limit)]

    def routing_table(self) -> RoutingTable:
        """Every rule, live subscription and template, read outside any transaction."""
        live = self.db[SUBSCRIPTIONS].find(
            {"status": {"$ne": "deleted"}}, {"_id": 1, "event_types": 1}
        )
        return RoutingTable.of(
            self.rules(),
            [(document["_id"], document.get("event_types") or []) for document in live],
            self.templates(),
        )

    def subscribed_to(self, event_type: str) -> list[str]:
        found = self.db[SUBSCRIPTIONS].find(
            {"event_types": event_type, "status": {"$ne": "deleted"}}, {"_id": 1},
            session=self.session,
        )  # fmt: skip
        return [document["_id"] for document in found]

    def set_subscription_status(self, subscription_id: str, status: str, now: datetime) -> None:
        def work() -> None:
            self._change_subscription(subscription_id, {"status": status, "updated_at": now})
            if status == "active":
                paused = self.db[DELIVERIES].find(
                    {"subscription": subscription_id, "status": PAUSED}, session=self.session
                )
                self._move_recorded(
                    list(paused), {"status": PENDING, "due_at": now, "lease_until": None}
                )

        self.run_in_transaction(work)

    def rotate_secret(self, subscription_id: str, secret: str, now: datetime) -> None:
        """Replace the signing secret; the record holds the documents' hashes, never the secret."""
        self.run_in_transaction(
            lambda: self._change_subscription(
                subscription_id, {"secret": secret, "updated_at": now}
            )
        )

    def delete_subscription(self, subscription_id: str, now: datetime) -> None:
        """Mark the subscription deleted and its undelivered deliveries dead, in one transaction."""

        def work() -> None:
            self.set_subscription_status(subscription_id, "deleted", now)
            waiting = self.db[DELIVERIES].find(
                {"subscription": subscription_id, "status": {"$in": [PENDING, PAUSED]}},
                session=self.session,
            )
            self._move_recorded(
                list(waiting), {"status": DEAD, "last_error": "the subscription was deleted"}
            )

        self.run_in_transaction(work)

    def _change_subscription(self, subscription_id: str, changes: dict[str, Any]) -> None:
        previous = self.db[SUBSCRIPTIONS].find_one({"_id": subscription_id}, session=self.session)
        if previous is None:
            return
        written = self.update_by_id(SUBSCRIPTIONS, subscription_id, {"$set": changes})
        self.audit("subscription", subscription_id, previous, written)


Position = tuple[datetime, str]


def _page(
    collection: Any, filters: dict[str, Any], field: str, after: Position | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Keyset pagination over ``(field, _id)``, newest first (``shequ.pagination``)."""
    query = dict(filters)
    if after is not None:
        moment, last_id = after
        query = {
            "$and": [
                filters,
                {"$or": [{field: {"$lt": moment}}, {field: moment, "_id": {"$lt": last_id}}]},
            ]
        }
    cursor = collection.find(query).sort([(field, DESCENDING), ("_id", DESCENDING)])
    found = list(cursor.limit(limit + 1))
    return found[:limit], len(found) > limit


def _fresh(now: datetime) -> dict[str, Any]:
    return {
        "status": PENDING,
        "due_at": now,
        "lease_until": None,
        "created_at": now,
        "attempts": 0,
        "channel_index": 0,
        "first_attempt_at": None,
        "last_error": None,
        "sent_at": None,
        "channel": None,
    }


def _to_rule(document: dict[str, Any]) -> Rule:
    return Rule(
        id=document["_id"],
        event_type=document["event_type"],
        audiences=tuple(document["audiences"]),
        template=document["template"],
        urgency=document.get("urgency", "normal"),
        fallback=bool(document.get("fallback", True)),
        enabled=bool(document.get("enabled", True)),
    )


def _to_template(document: dict[str, Any]) -> Template:
    return Template(
        id=document["_id"], body=document.get("body") or {}, subject=document.get("subject") or {}
    )


def _to_contact(document: dict[str, Any]) -> Contact:
    quiet = document.get("quiet_hours")
    return Contact(
        recipient=document["_id"],
        channels=tuple(ContactChannel(c["kind"], c["address"]) for c in document["channels"]),
        language=document.get("language") or "zh-CN",
        timezone=document.get("timezone") or "Asia/Shanghai",
        quiet_hours=(
            QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]))
            if quiet
            else None
        ),
        digest=bool(document.get("digest")),
    )


def _contact_record(document: dict[str, Any]) -> dict[str, Any]:
    record = as_record(document)
    record["recipient"] = record.pop("id")
    return record


def _delivery_record(document: dict[str, Any]) -> dict[str, Any]:
    record = as_record(document)
    rendered = record.get("rendered") or {}
    record["text"] = rendered.get("text")
    record.pop("context", None)
    record.pop("body", None)
    record.pop("resolved", None)
    return record


class NotifyStore(Store):
    """The store provider, handing each repository the keyring from configuration.

    Keys (``NOTIFY_KEYS``, ...) are read in ``setup()``: without them the
    service does not start rather than store contact addresses in the clear.
    """

    def setup(self) -> None:
        super().setup()
        self.keyring = sealing.Keyring.from_settings(self.container.config, "notify")

    def get_dependency(self, worker_ctx: Any) -> Repository:
        repository = super().get_dependency(worker_ctx)
        repository.keyring = self.keyring  # type: ignore[attr-defined]
        return repository
