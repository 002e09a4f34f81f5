"""The delivery worker: sends due deliveries, records every attempt, retries, falls back.

It runs from a timer in the service (and directly, with a controlled clock,
in the tests). Each pass reads what is due, then claims each delivery under a
lease (a conditional update on the lease read, so replicas never send the
same one twice), does the network I/O with no transaction open, then records
the attempt and the delivery's new state in one transaction. A process that
dies mid-send leaves the lease to expire and the delivery is tried again: at
least once, never silently lost.

Deliveries to different recipients go side by side, in up to
``concurrency`` lanes; one recipient's go one after another in one lane, so
its rate limit and its order hold within a pass. A ``reporter-of:``
recipient is known only once grid has answered who reported the incident,
so acknowledgements of two incidents to the same reporter may share a pass
side by side before that, and its rate limit be passed by one each. A
delivery spends most of its time waiting on the store and the network:
twelve or thirteen store commands (the claim, the contact, the finish
with its attempt, audit record and event) and the channel. One lane sent
about 20 a second while the store was idle, and one or two while it took a
burst of reports (docs/performance.md).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shequ.contracts import REGISTRY, CloudEvent
from shequ.metrics import NOTIFICATION_DELAY, NOTIFICATION_SECONDS, NOTIFICATIONS
from shequ.store import BacklogWindow
from shequ_services.notify import domain, signing, templates
from shequ_services.notify.channels import Channel, ChannelError, Message, post_json
from shequ_services.notify.domain import Contact, ContactChannel, RetryPolicy
from shequ_services.notify.routing import Routing
from shequ_services.notify.store import DEAD, PAUSED, PENDING, SENT, SKIPPED, NotifyRepository

log = logging.getLogger("shequ.notify.delivery")


@dataclass
class Settings:
    """The worker's tunables, read once from config (see services/notify/config.yaml)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    subscription_retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease: timedelta = timedelta(minutes=2)
    rate_limit: int = 20
    rate_window: timedelta = timedelta(hours=1)
    digest_hour: int = 8
    default_channels: tuple[str, ...] = ("log",)
    http_timeout: float = 10.0
    batch: int = 100
    #: Deliveries to different recipients sent at once (green threads in the service).
    concurrency: int = 8

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        def policy(prefix: str, horizon_default: float) -> RetryPolicy:
            return RetryPolicy(
                base_seconds=float(config.get(f"{prefix}_RETRY_BASE_SECONDS") or 30),
                factor=float(config.get(f"{prefix}_RETRY_FACTOR") or 2),
                max_delay_seconds=float(config.get(f"{prefix}_RETRY_MAX_DELAY_SECONDS") or 3600),
                horizon_seconds=float(
                    config.get(f"{prefix}_RETRY_HORIZON_SECONDS") or horizon_default
                ),
            )

        defaults = config.get("NOTIFY_DEFAULT_CHANNELS") or ["log"]
        if isinstance(defaults, str):
            defaults = [part for part in defaults.split(",") if part]
        return cls(
            retry=policy("NOTIFY", 6 * 3600),
            subscription_retry=policy("NOTIFY_SUBSCRIPTION", 24 * 3600),
            lease=timedelta(seconds=float(config.get("NOTIFY_LEASE_SECONDS") or 120)),
            rate_limit=int(config.get("NOTIFY_RATE_LIMIT") or 20),
            rate_window=timedelta(seconds=float(config.get("NOTIFY_RATE_WINDOW_SECONDS") or 3600)),
            digest_hour=int(config.get("NOTIFY_DIGEST_HOUR") or 8),
            default_channels=tuple(defaults),
            http_timeout=float(config.get("NOTIFY_HTTP_TIMEOUT_SECONDS") or 10),
            concurrency=_at_least_one(config, "NOTIFY_DELIVERY_CONCURRENCY", 8),
        )


def _at_least_one(config: Mapping[str, Any], name: str, default: int) -> int:
    """A whole number of at least 1 from ``config`` (``default`` if unset); 0 is refused."""
    value = config.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, (bool, float)):
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return number


Resolver = Callable[[str], str | None]


def record_event(
    repo: NotifyRepository, event: CloudEvent, now: datetime, routing: Routing | None = None
) -> None:
    """Record the deliveries an event calls for (in the caller's transaction); send nothing.

    Templates see the payload in its JSON form (as the schema dumps it) plus
    ``event`` (id, type, subject, time); a bureau subscription gets the
    CloudEvent itself. The rules and subscriptions come from ``routing`` (the
    service's ``CachedRouting``), else straight from the store.
    """
    routing = repo if routing is None else routing
    spec = event.spec or REGISTRY.by_dataschema(event.dataschema)
    data = spec.schema().dump(event.data)
    envelope = {
        "id": event.id,
        "type": event.type,
        "subject": event.subject,
        "time": event.time.isoformat(),
    }
    rules = routing.rules_for(event.type)
    plans = domain.plan(
        rules, event_id=event.id, event_type=event.type, subject=event.subject, data=data
    )
    for planned in plans:
        repo.record_planned(planned, {**data, "event": envelope}, now)
    for subscription_id in routing.subscribed_to(event.type):
        body = {**event.to_json_dict(), "data": data}
        repo.record_for_subscription(
            subscription_id, event.id, event.type, event.subject, body, now
        )


#: People's notifications and bureau webhooks are sent by separate timers, so
#: a slow or failing bureau endpoint never holds up a resident's notification.
PEOPLE = ("notification", "digest")
BUREAUS = ("subscription",)


class DeliveryWorker:
    def __init__(
        self,
        repo: NotifyRepository,
        channels: Mapping[str, Channel],
        settings: Settings,
        *,
        resolve_reporter: Resolver,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] | None = None,
        stopping: Callable[[], bool] = lambda: False,
        windows: dict[str | None, BacklogWindow] | None = None,
        routing: Routing | None = None,
    ) -> None:
        self.repo = repo
        #: Where templates are looked up: the service's ``CachedRouting``, else the store.
        self.routing = repo if routing is None else routing
        self.stopping = stopping
        #: Each kind's place in the due backlog, kept by the caller between passes.
        self.windows = {} if windows is None else windows
        self.channels = channels
        self.settings = settings
        self.resolve_reporter = resolve_reporter
        self.clock = clock
        self.rand = rand

    def run_once(self, kinds: tuple[str, ...] | None = None) -> int:
        """Send what is due now (of ``kinds``, else all); the number of deliveries looked at.

        Reads what is due again after each round, so what a round made due
        (a fallback to the recipient's next channel) goes in the same pass.
        Once ``stopping`` says so it claims nothing more: what is left stays
        due for the next process, and a shutdown waits for one send per lane
        at most.
        """
        handled = 0
        with ThreadPoolExecutor(self.settings.concurrency) as lanes:
            while handled < self.settings.batch:
                wanted = self.settings.batch - handled
                due = self.repo.due(self.clock(), kinds, wanted, self.windows)
                claimed = sum(lanes.map(self._run_lane, by_recipient(due)))
                if not claimed or self.stopping():
                    return handled + claimed
                handled += claimed
        return handled

    def _run_lane(self, candidates: list[dict[str, Any]]) -> int:
        """Claim and send one recipient's due deliveries in order; how many were claimed."""
        lane = copy.copy(self)
        lane.repo = self.repo.sibling()  # its own transactions, beside the other lanes'
        claimed = 0
        for candidate in candidates:
            if lane.stopping():
                break
            delivery = lane.repo.claim(candidate, lane.clock(), lane.settings.lease)
            if delivery is None:
                continue  # another worker took it, or it changed: it is theirs
            claimed += 1
            try:
                lane.deliver(delivery)
            except Exception:
                # Leave the lease to expire: the delivery is tried again later.
                log.exception("delivery %s failed unexpectedly", delivery["_id"])
        return claimed

    def deliver(self, delivery: dict[str, Any]) -> None:
        if delivery["kind"] == "subscription":
            self._deliver_subscription(delivery)
        else:
            self._deliver_notification(delivery)

    # Notifications to people (and digests).

    def _deliver_notification(self, delivery: dict[str, Any]) -> None:
        now = self.clock()
        recipient = delivery.get("resolved") or delivery["recipient"]
        if recipient.startswith("reporter-of:"):
            try:
                found = self.resolve_reporter(recipient.split(":", 1)[1])
            except Exception as exc:  # noqa: BLE001 - grid unreachable is a failed attempt
                self._failed(delivery, now, "resolve", f"asking grid: {type(exc).__name__}", [])
                return
            if found is None:
                self.repo.finish(
                    delivery,
                    status=SKIPPED,
                    attempt=None,
                    changes={"last_error": "the incident has no reporter to tell"},
                )
                return
            recipient = found
            self.repo.set_resolved(delivery["_id"], recipient)
            delivery["resolved"] = recipient
        contact = self.repo.contact(recipient)
        routes = self._routes(contact)
        if delivery["kind"] == "notification" and delivery["urgency"] == domain.DIGEST:
            if contact is not None and contact.digest:
                self.repo.hold_for_digest(
                    delivery["_id"], domain.digest_day(now, contact), recipient
                )
                return
        wait = (
            domain.not_before(
                urgency=delivery["urgency"],
                now=now,
                contact=contact,
                recent_sends=self.repo.sends_to(recipient, now - self.settings.rate_window),
                rate_limit=self.settings.rate_limit,
                rate_window=self.settings.rate_window,
            )
            if domain.can_wait(delivery["urgency"], contact)
            else None
        )
        if wait is not None:
            self.repo.defer(delivery["_id"], *wait)
            return
        try:
            subject, text = self._render(delivery, contact)
        except Exception as exc:  # noqa: BLE001 - a stored template failing on real data
            # Checked at save time against the schema's sample, a template can still
            # fail on a real value; retrying would fail the same way, so it is dead now.
            error = f"the template failed: {type(exc).__name__}: {exc}"[:500]
            self._observe("template", "dead", 0.0)
            self.repo.finish(
                delivery,
                status=DEAD,
                attempt=self._attempt(delivery, recipient, "template", "dead", 0.0, error, now),
                changes={"last_error": error, "attempts": delivery["attempts"] + 1},
            )
            return
        index = min(delivery.get("channel_index", 0), len(routes) - 1)
        route = routes[index]
        channel = self.channels.get(route.kind)
        started = time.monotonic()
        try:
            if channel is None:
                raise ChannelError(f"no channel plugin {route.kind!r} is installed")
            channel.send(
                Message(
                    delivery_id=delivery["_id"],
                    event_type=delivery["event_type"],
                    audience=domain.audience_role(delivery["recipient"]),
                    subject_ref=delivery["subject_ref"],
                    address=route.address,
                    subject=subject,
                    body=text,
                )
            )
        except ChannelError as exc:
            self._failed(delivery, now, route.kind, str(exc), routes, started, recipient)
            return
        latency = time.monotonic() - started
        # When the channel took it, not when the attempt began: resolving the
        # reporter and reading the contact come before, and are not the send.
        sent = self.clock()
        self._observe(route.kind, "sent", latency)
        NOTIFICATION_DELAY.labels(route.kind).observe(_since(delivery["created_at"], sent))
        self.repo.finish(
            delivery,
            status=SENT,
            attempt=self._attempt(delivery, recipient, route.kind, "sent", latency, None, now),
            changes={
                "channel": route.kind,
                "sent_at": sent,
                "attempts": delivery["attempts"] + 1,
                "first_attempt_at": delivery.get("first_attempt_at") or now,
                "rendered": {"subject": subject, "text": text},
                "waiting_for": None,
            },
            announce=True,
        )

    def _routes(self, contact: Contact | None) -> list[ContactChannel]:
        if contact is not None and contact.channels:
            return list(contact.channels)
        return [ContactChannel(kind, "") for kind in self.settings.default_channels]

    def _render(self, delivery: dict[str, Any], contact: Contact | None) -> tuple[str, str]:
        if delivery.get("rendered"):
            return delivery["rendered"]["subject"], delivery["rendered"]["text"]
        template = self.routing.template(delivery["template"])
        if template is None:
            return "", f"[{delivery['event_type']}] {delivery['subject_ref']}"
        language = contact.language if contact else domain.DEFAULT_LANGUAGE
        return templates.render(template, delivery["context"], language)

    def _failed(
        self,
        delivery: dict[str, Any],
        now: datetime,
        channel: str,
        error: str,
        routes: list[ContactChannel],
        started: float | None = None,
        recipient: str | None = None,
    ) -> None:
        latency = time.monotonic() - started if started is not None else 0.0
        attempts = delivery["attempts"] + 1
        first = delivery.get("first_attempt_at") or now
        index = delivery.get("channel_index", 0)
        changes: dict[str, Any] = {
            "attempts": attempts,
            "first_attempt_at": first,
            "last_error": error,
            "channel": channel,
        }
        if delivery.get("fallback") and index + 1 < len(routes):
            # The next channel right away; the back-off starts when all have failed.
            status, changes["channel_index"], changes["due_at"] = PENDING, index + 1, now
            outcome = "fallback"
        else:
            failures = delivery.get("round", 0) + 1
            due = domain.next_retry(
                attempt=failures,
                first_attempt_at=first,
                now=now,
                policy=self.settings.retry,
                **({"rand": self.rand} if self.rand else {}),
            )
            changes["round"] = failures
            changes["channel_index"] = 0
            if due is None:
                status, outcome = DEAD, "dead"
            else:
                status, outcome, changes["due_at"] = PENDING, "failed", due
        self._observe(channel, outcome, latency)
        attempt = self._attempt(
            delivery, recipient or delivery["recipient"], channel, outcome, latency, error, now
        )
        self.repo.finish(delivery, status=status, attempt=attempt, changes=changes)

    # Bureau subscriptions: a signed CloudEvent to the bureau's endpoint.

    def _deliver_subscription(self, delivery: dict[str, Any]) -> None:
        now = self.clock()
        subscription = self.repo.subscription(delivery["subscription"])
        if subscription is None or subscription["status"] == "deleted":
            self.repo.finish(
                delivery, status=DEAD, attempt=None, changes={"last_error": "no subscription"}
            )
            return
        if subscription["status"] == "paused":
            self.repo.finish(delivery, status=PAUSED, attempt=None, changes={})
            return
        body = json.dumps(delivery["body"], ensure_ascii=False, sort_keys=True).encode("utf-8")
        timestamp = int(now.timestamp())
        headers = signing.signed_headers(subscription["secret"], timestamp, body)
        headers["X-Shequ-Delivery"] = delivery["_id"]
        started = time.monotonic()
        try:
            post_json(
                subscription["url"], body, timeout=self.settings.http_timeout, headers=headers
            )
        except ChannelError as exc:
            latency = time.monotonic() - started
            attempts = delivery["attempts"] + 1
            first = delivery.get("first_attempt_at") or now
            due = domain.next_retry(
                attempt=attempts,
                first_attempt_at=first,
                now=now,
                policy=self.settings.subscription_retry,
                **({"rand": self.rand} if self.rand else {}),
            )
            outcome = "dead" if due is None else "failed"
            self._observe("subscription", outcome, latency)
            changes: dict[str, Any] = {
                "attempts": attempts,
                "first_attempt_at": first,
                "last_error": str(exc),
                "channel": "subscription",
            }
            if due is not None:
                changes["due_at"] = due
            self.repo.finish(
                delivery,
                status=DEAD if due is None else PENDING,
                attempt=self._attempt(
                    delivery, delivery["recipient"], "subscription", outcome, latency, str(exc), now
                ),
                changes=changes,
            )
            return
        latency = time.monotonic() - started
        sent = self.clock()  # when the bureau answered, as for a notification
        self._observe("subscription", "sent", latency)
        NOTIFICATION_DELAY.labels("subscription").observe(_since(delivery["created_at"], sent))
        self.repo.finish(
            delivery,
            status=SENT,
            attempt=self._attempt(
                delivery, delivery["recipient"], "subscription", "sent", latency, None, now
            ),
            changes={
                "attempts": delivery["attempts"] + 1,
                "first_attempt_at": delivery.get("first_attempt_at") or now,
                "sent_at": sent,
                "channel": "subscription",
            },
        )

    # Daily digests.

    def run_digests(self) -> int:
        """Bundle each opted-in recipient's held notifications of a past day into one."""
        now = self.clock()
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for item in self.repo.held():
            groups.setdefault((item["resolved"], item["digest_day"]), []).append(item)
        made = 0
        for (recipient, day_text), items in groups.items():
            contact = self.repo.contact(recipient)
            if contact is None or not contact.digest:
                # Opted out (or forgotten) since: each goes out on its own after all.
                self.repo.release_held([item["_id"] for item in items], now)
                continue
            day = date.fromisoformat(day_text)
            if not domain.digest_due(now, contact, day, self.settings.digest_hour):
                continue
            lines = [self._render(item, contact)[1] for item in items]
            subject, text = domain.compose_digest(day, lines, contact.language)
            self.repo.record_digest(
                recipient, day, subject, text, [item["_id"] for item in items], now
            )
            made += 1
        return made

    # Records.

    def _attempt(
        self,
        delivery: dict[str, Any],
        recipient: str,
        channel: str,
        outcome: str,
        latency: float,
        error: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            # Zero-padded so that the id orders a delivery's attempts as numbers do.
            "_id": f"{delivery['_id']}:{delivery['attempts'] + 1:05d}",
            "delivery_id": delivery["_id"],
            "attempt": delivery["attempts"] + 1,
            "event_id": delivery["event_id"],
            "event_type": delivery["event_type"],
            "kind": delivery["kind"],
            "subscription": delivery.get("subscription"),
            "recipient": recipient,
            "channel": channel,
            "outcome": outcome,
            "latency_ms": round(latency * 1000, 3),
            "error": error,
            "at": now,
            "urgent": delivery["urgency"] == domain.IMMEDIATE,
        }

    @staticmethod
    def _observe(channel: str, outcome: str, latency: float) -> None:
        NOTIFICATIONS.labels(channel, outcome).inc()
        NOTIFICATION_SECONDS.labels(channel, outcome).observe(latency)


def by_recipient(candidates: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Due deliveries in one lane per recipient (as resolved, where it has been), in order."""
    lanes: dict[str, list[dict[str, Any]]] = {}
    for candidate in candidates:
        recipient = candidate.get("resolved") or candidate["recipient"]
        lanes.setdefault(recipient, []).append(candidate)
    return list(lanes.values())


def _since(moment: datetime, now: datetime) -> float:
    return max((now - moment).total_seconds(), 0.0)
