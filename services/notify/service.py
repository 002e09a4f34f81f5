"""The notify service: tells people what happened, through pluggable channels.

Event handlers only record deliveries (in the handler's transaction, with
its processed mark); the ``deliver`` timer sends them (``delivery.py``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import marshmallow
import yaml
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request

from shequ import policy
from shequ.contracts import REGISTRY, CloudEvent, EventSpec
from shequ.contracts import grid as grid_events
from shequ.contracts import mediation as mediation_events
from shequ.contracts import volunteer as volunteer_events
from shequ.errors import InvalidInput, NotFound
from shequ.events import event_handler, idempotent
from shequ.http import load_body, load_query, route
from shequ.pagination import Cursors, InvalidCursor, query_scope
from shequ.reconcile import Effect
from shequ.rpc import RpcProxyPool, rpc_calls
from shequ.service import PlatformService, provider_of
from shequ.store import BacklogWindow, Store
from shequ.timers import container_stopping, timer, wake_timers, wakeable_timer
from shequ_services.notify import domain, signing, templates
from shequ_services.notify.channels import UnsafeUrl, check_url, load_channels
from shequ_services.notify.delivery import (
    BUREAUS,
    PEOPLE,
    DeliveryWorker,
    Settings,
    record_event,
)
from shequ_services.notify.domain import Contact, ContactChannel, QuietHours, Rule, Template
from shequ_services.notify.routing import CachedRouting, RoutingTable
from shequ_services.notify.schemas import (
    AttemptPageSchema,
    AttemptQuerySchema,
    AttemptSchema,
    ContactBodySchema,
    ContactSchema,
    DeliveryListSchema,
    DeliveryPageSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    NotificationQuerySchema,
    RuleBodySchema,
    RuleListSchema,
    RuleSchema,
    SecretSchema,
    SubscriptionBodySchema,
    SubscriptionCreatedSchema,
    SubscriptionListSchema,
    SubscriptionSchema,
    TemplateBodySchema,
    TemplateListSchema,
    TemplateSchema,
    sample_context,
)
from shequ_services.notify.store import NotifyRepository, NotifyStore, Position

SEED_FILE = Path(__file__).with_name("rules.yaml")
RECIPIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,159}")

#: Every event type notify consumes: rules and subscriptions can name only these.
CONSUMED: dict[str, EventSpec] = {
    spec.type: spec
    for spec in REGISTRY.all()
    if spec.service in (grid_events.SERVICE, mediation_events.SERVICE, volunteer_events.SERVICE)
}


def load_seed(path: Path) -> tuple[list[Rule], list[Template]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = [
        Template(id=name, body=spec["body"], subject=spec.get("subject") or {})
        for name, spec in raw["templates"].items()
    ]
    rules = [
        Rule(
            id=item["id"],
            event_type=item["event_type"],
            audiences=tuple(item["audiences"]),
            template=item["template"],
            urgency=item.get("urgency", domain.NORMAL),
            fallback=bool(item.get("fallback", True)),
        )
        for item in raw["rules"]
    ]
    return rules, found


def check_rule(rule: Rule, templates_by_id: dict[str, Template]) -> None:
    """A rule's own checks plus its template rendered against the event's sample."""
    spec = CONSUMED.get(rule.event_type)
    fields = list(spec.schema().fields) if spec else None
    domain.check_rule(rule, fields, set(templates_by_id))
    if spec is not None:
        errors = templates.check(templates_by_id[rule.template], {spec.type: sample_context(spec)})
        if errors:
            raise domain.RuleError({"template": errors})


@rpc_calls("grid.reporter_of")
class Reporters(DependencyProvider):
    """Asks grid, over RPC, who reported an incident: a subject id, never contact data.

    Through standalone proxies with a timeout, so a grid that is down makes
    the attempt fail (and be retried) instead of hanging the worker, kept
    open between questions (``RpcProxyPool``): every incident reported asks
    once, and opening a proxy per question cost a connection and a reply
    queue each time.
    """

    def setup(self) -> None:
        timeout = float(self.container.config.get("NOTIFY_RPC_TIMEOUT_SECONDS") or 5)
        # Reply queues named for notify, as notify's broker account requires;
        # as many kept open as the delivery worker has lanes asking at once.
        self.pool = RpcProxyPool(
            self.container.service_name,
            dict(self.container.config),
            timeout=timeout,
            size=Settings.from_config(self.container.config).concurrency,
        )

    def stop(self) -> None:
        self.pool.close()

    def kill(self) -> None:
        self.pool.close()

    def get_dependency(self, worker_ctx: Any) -> Callable[[str], str | None]:
        def reporter_of(incident_id: str) -> str | None:
            found = self.pool.call("grid", "reporter_of", incident_id)
            return str(found) if found else None

        return reporter_of


SEED_WAIT_SECONDS = 30.0


class Delivery(DependencyProvider):
    """The channel plugins, the worker's settings and the routing, loaded once per container."""

    def setup(self) -> None:
        config = self.container.config
        self.settings = Settings.from_config(config)
        self.channels = load_channels(config)
        self.allow_http_loopback = str(config.get("NOTIFY_ALLOW_HTTP_LOOPBACK", "")).lower() in (
            "1",
            "true",
        )
        self.seed_file = Path(config.get("NOTIFY_RULES_FILE") or SEED_FILE)
        self.seeded = threading.Event()
        #: The delivery passes' places in the due backlog (``BacklogWindow``), per kind.
        self.windows: dict[str | None, BacklogWindow] = {}
        #: Rules, subscriptions and templates in memory (``routing.CachedRouting``).
        max_age = config.get("NOTIFY_ROUTING_MAX_AGE_SECONDS")
        self.routing = CachedRouting(
            self._read_routing, max_age=float(5 if max_age in (None, "") else max_age)
        )

    def start(self) -> None:
        """Seed the rules into a notify database that has none, before any event is handled."""
        store = provider_of(self.container, Store)
        # The store creates its collections in its own start(), maybe right now;
        # creating them first keeps the seed's transaction clear of that.
        store.at_start(store.ensure_indexes, "creating indexes")
        repo = store.get_dependency(None)
        if not store.at_start(repo.has_rules, "looking for rules"):
            rules, seeded = load_seed(self.seed_file)
            store.at_start(lambda: repo.seed(rules, seeded, datetime.now(UTC)), "seeding rules")
        self.routing.changed()
        self.seeded.set()

    def get_dependency(self, worker_ctx: Any) -> Delivery:
        return self

    def wake(self) -> None:
        """Start the delivery passes now: an event handler has just recorded deliveries."""
        wake_timers(self.container)

    def _read_routing(self) -> RoutingTable:
        repo: NotifyRepository = provider_of(self.container, Store).get_dependency(None)
        return repo.routing_table()

    def stopping(self) -> bool:
        """Whether the process is shutting down (the delivery worker stops claiming)."""
        return container_stopping(self.container)


def _handles(source: str, event_name: str, method: str) -> Callable[..., Any]:
    """An idempotent handler recording what one event type calls for.

    The method names are part of queue names (``evt-<source>-<event>--notify.<method>``),
    so they are fixed here and never derived from anything that may change.
    """

    def handle(self: NotifyService, event: CloudEvent) -> None:
        record_event(self.notifications, event, datetime.now(UTC), self.delivery.routing)

    handle.__name__ = method
    handle_once = idempotent("notifications")(handle)

    def wait_for_rules_then_handle(self: NotifyService, body: Any) -> Any:
        self._wait_for_rules()
        result = handle_once(self, body)
        # Committed: send what it recorded now, not at the delivery timers' next tick.
        self.delivery.wake()
        return result

    wait_for_rules_then_handle.__name__ = method
    return event_handler(source, event_name)(wait_for_rules_then_handle)


class NotifyService(PlatformService):
    name = "notify"

    notifications = NotifyStore(NotifyRepository)
    reporters = Reporters()
    delivery = Delivery()
    cursors = Cursors()
    report_effects = (
        Effect(
            "deliveries",
            "subject_ref",
            match={"kind": "notification", "event_type": grid_events.INCIDENT_REPORTED_V1.type},
            many=True,
            unique_by=("event_id", "recipient", "rule"),
        ),
    )

    on_incident_reported = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_REPORTED, "on_incident_reported"
    )
    on_incident_accepted = _handles(
        grid_events.SERVICE, "incident.accepted", "on_incident_accepted"
    )
    on_incident_rejected = _handles(
        grid_events.SERVICE, "incident.rejected", "on_incident_rejected"
    )
    on_incident_dispatched = _handles(
        grid_events.SERVICE, "incident.dispatched", "on_incident_dispatched"
    )
    on_incident_returned = _handles(
        grid_events.SERVICE, "incident.returned", "on_incident_returned"
    )
    on_incident_started = _handles(grid_events.SERVICE, "incident.started", "on_incident_started")
    on_incident_handled = _handles(grid_events.SERVICE, "incident.handled", "on_incident_handled")
    on_incident_deferred = _handles(
        grid_events.SERVICE, "incident.deferred", "on_incident_deferred"
    )
    on_incident_resumed = _handles(grid_events.SERVICE, "incident.resumed", "on_incident_resumed")
    on_incident_closed = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_CLOSED, "on_incident_closed"
    )
    on_incident_reopened = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_REOPENED, "on_incident_reopened"
    )
    on_incident_merged = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_MERGED, "on_incident_merged"
    )
    on_incident_subtask_handled = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_SUBTASK_HANDLED, "on_incident_subtask_handled"
    )
    on_incident_extension_requested = _handles(
        grid_events.SERVICE,
        grid_events.INCIDENT_EXTENSION_REQUESTED,
        "on_incident_extension_requested",
    )
    on_incident_extension_approved = _handles(
        grid_events.SERVICE,
        grid_events.INCIDENT_EXTENSION_APPROVED,
        "on_incident_extension_approved",
    )
    on_incident_extension_refused = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_EXTENSION_REFUSED, "on_incident_extension_refused"
    )
    on_incident_warned = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_WARNED, "on_incident_warned"
    )
    on_incident_overdue = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_OVERDUE, "on_incident_overdue"
    )
    on_incident_escalated = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_ESCALATED, "on_incident_escalated"
    )
    on_incident_rated = _handles(
        grid_events.SERVICE, grid_events.INCIDENT_RATED, "on_incident_rated"
    )
    on_case_opened = _handles(
        mediation_events.SERVICE, mediation_events.CASE_OPENED, "on_case_opened"
    )
    on_task_created = _handles(
        volunteer_events.SERVICE, volunteer_events.TASK_CREATED, "on_task_created"
    )
    on_task_offered = _handles(
        volunteer_events.SERVICE, volunteer_events.TASK_OFFERED, "on_task_offered"
    )
    on_task_escalated = _handles(
        volunteer_events.SERVICE, volunteer_events.TASK_ESCALATED, "on_task_escalated"
    )
    on_case_assigned = _handles(
        mediation_events.SERVICE, mediation_events.CASE_ASSIGNED, "on_case_assigned"
    )
    on_case_session_scheduled = _handles(
        mediation_events.SERVICE, mediation_events.CASE_SESSION_SCHEDULED,
        "on_case_session_scheduled",
    )  # fmt: skip
    on_case_overdue = _handles(
        mediation_events.SERVICE, mediation_events.CASE_OVERDUE, "on_case_overdue"
    )

    def _wait_for_rules(self) -> None:
        """nameko starts every extension at once, so an event can arrive before
        the seed's rules are stored: planning then would find no rule and mark
        the event handled with nobody told. Wait for them *before* the
        handler's transaction starts: a transaction reads the store as it was
        when it began, so waiting inside it still finds no rule (the fault
        suite's SIGTERM case caught exactly that). Failing here retries the
        event later instead."""
        if not self.delivery.seeded.wait(SEED_WAIT_SECONDS):
            raise RuntimeError("notify's rules are not loaded yet")

    @wakeable_timer("NOTIFY_DELIVER_SECONDS", 2)
    def deliver(self) -> None:
        """Send people's due notifications, then bundle digests whose day is over."""
        worker = self._worker()
        worker.run_once(PEOPLE)
        worker.run_digests()

    @timer("NOTIFY_KEY_ROTATION_SECONDS", 60)
    def rotate_keys(self) -> None:
        """Re-seal, in batches, contacts sealed under an old key or stored before sealing."""
        self.notifications.reseal_batch(limit=100)

    @wakeable_timer("NOTIFY_DELIVER_SECONDS", 2)
    def deliver_to_bureaus(self) -> None:
        """Send due bureau webhook deliveries (their own timer: see ``delivery.BUREAUS``)."""
        self._worker().run_once(BUREAUS)

    def _worker(self) -> DeliveryWorker:
        return DeliveryWorker(
            self.notifications,
            self.delivery.channels,
            self.delivery.settings,
            resolve_reporter=self.reporters,
            stopping=self.delivery.stopping,
            windows=self.delivery.windows,
            routing=self.delivery.routing,
        )

    # Compatibility with the first slice: notifications about one subject.

    @route(
        "GET",
        "/api/v1/notify/notifications",
        action="notify.notification.read",
        summary="The notifications recorded about one subject (an incident, a case)",
        query=NotificationQuerySchema,
        response=DeliveryListSchema,
        errors=(403,),
    )
    def list_notifications(self, request: Request) -> dict[str, Any]:
        query = load_query(request, NotificationQuerySchema())
        found = self.notifications.about(query["subject_ref"], query["limit"])
        return {"items": DeliverySchema(many=True).dump(found)}

    # Rules and templates (admin writes; staff and auditors read).

    @route(
        "GET",
        "/api/v1/notify/rules",
        action="notify.rule.read",
        summary="Every notification rule",
        response=RuleListSchema,
        errors=(403,),
    )
    def list_rules(self, request: Request) -> dict[str, Any]:
        return {"items": RuleSchema(many=True).dump(self.notifications.rules())}

    @route(
        "PUT",
        "/api/v1/notify/rules/<string:rule_id>",
        action="notify.rule.change",
        summary="Create or replace a rule; its template is rendered against the event's sample",
        body=RuleBodySchema,
        response=RuleSchema,
        errors=(403,),
    )
    def put_rule(self, request: Request, rule_id: str) -> dict[str, Any]:
        _check_id(rule_id, "rule_id")
        body = load_body(request, RuleBodySchema())
        rule = Rule(id=rule_id, **{**body, "audiences": tuple(body["audiences"])})
        by_id = {t.id: t for t in self.notifications.templates()}
        try:
            check_rule(rule, by_id)
        except domain.RuleError as exc:
            raise InvalidInput("the rule cannot be saved", exc.errors) from exc
        self.notifications.save_rule(rule, datetime.now(UTC))
        self.delivery.routing.changed()
        return RuleSchema().dump(rule)

    @route(
        "DELETE",
        "/api/v1/notify/rules/<string:rule_id>",
        action="notify.rule.change",
        summary="Delete a rule",
        response={"type": "object"},
        errors=(403,),
    )
    def delete_rule(self, request: Request, rule_id: str) -> dict[str, Any]:
        if not self.notifications.delete_rule(rule_id):
            raise NotFound(f"no rule {rule_id}")
        self.delivery.routing.changed()
        return {"deleted": rule_id}

    @route(
        "GET",
        "/api/v1/notify/templates",
        action="notify.template.read",
        summary="Every message template",
        response=TemplateListSchema,
        errors=(403,),
    )
    def list_templates(self, request: Request) -> dict[str, Any]:
        found = [
            {"id": t.id, "body": dict(t.body), "subject": dict(t.subject)}
            for t in self.notifications.templates()
        ]
        return {"items": TemplateSchema(many=True).dump(found)}

    @route(
        "PUT",
        "/api/v1/notify/templates/<string:template_id>",
        action="notify.template.change",
        summary="Create or replace a template; rendered now against every event that uses it",
        body=TemplateBodySchema,
        response=TemplateSchema,
        errors=(403,),
    )
    def put_template(self, request: Request, template_id: str) -> dict[str, Any]:
        """A template in use is rendered against each rule's event sample, so a
        field that one of those events lacks is refused here rather than at send time."""
        _check_id(template_id, "template_id")
        body = load_body(request, TemplateBodySchema())
        template = Template(id=template_id, body=body["body"], subject=body.get("subject") or {})
        samples = {
            event_type: sample_context(CONSUMED[event_type])
            for event_type in self.notifications.event_types_using(template_id)
            if event_type in CONSUMED
        }
        errors = templates.check(template, samples)
        if errors:
            raise InvalidInput("the template cannot be saved", errors)
        self.notifications.save_template(template, datetime.now(UTC))
        self.delivery.routing.changed()
        return {"id": template_id, "body": dict(template.body), "subject": dict(template.subject)}

    # Contact points: the only place contact data lives.

    @route(
        "GET",
        "/api/v1/notify/contacts/<string:recipient>",
        action="notify.contact.read",
        summary="A recipient's contact points (admins, or the user themself)",
        response=ContactSchema,
        errors=(403,),
    )
    def get_contact(self, request: Request, recipient: str) -> dict[str, Any]:
        policy.require(request.identity, "notify.contact.read", _contact(recipient))
        found = self.notifications.contact_record(recipient)
        if found is None:
            raise NotFound(f"no contact points for {recipient}")
        return ContactSchema().dump(found)

    @route(
        "PUT",
        "/api/v1/notify/contacts/<string:recipient>",
        action="notify.contact.change",
        summary="Set a recipient's ordered channels, language, quiet hours and digest choice",
        body=ContactBodySchema,
        response=ContactSchema,
        errors=(403,),
    )
    def put_contact(self, request: Request, recipient: str) -> dict[str, Any]:
        """``recipient`` is a user's subject or a group id such as ``department:<code>``,
        ``grid_worker:<cell>``, ``staff:<community>``, ``volunteers:<cell>``."""
        policy.require(request.identity, "notify.contact.change", _contact(recipient))
        _check_id(recipient, "recipient")
        body = load_body(request, ContactBodySchema())
        errors: dict[str, Any] = {}
        for n, channel in enumerate(body["channels"]):
            problem = self._channel_problem(channel["kind"], channel["address"])
            if problem:
                errors[str(n)] = {problem[0]: [problem[1]]}
        if errors:
            raise InvalidInput("the contact points cannot be saved", {"channels": errors})
        quiet = body["quiet_hours"]
        contact = Contact(
            recipient=recipient,
            channels=tuple(ContactChannel(c["kind"], c["address"]) for c in body["channels"]),
            language=body["language"],
            timezone=body["timezone"],
            quiet_hours=(
                QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"]))
                if quiet
                else None
            ),
            digest=body["digest"],
        )
        return ContactSchema().dump(self.notifications.save_contact(contact, datetime.now(UTC)))

    @route(
        "DELETE",
        "/api/v1/notify/contacts/<string:recipient>",
        action="notify.contact.change",
        summary="Forget a recipient's contact points",
        response={"type": "object"},
        errors=(403,),
    )
    def delete_contact(self, request: Request, recipient: str) -> dict[str, Any]:
        policy.require(request.identity, "notify.contact.change", _contact(recipient))
        if not self.notifications.delete_contact(recipient):
            raise NotFound(f"no contact points for {recipient}")
        return {"deleted": recipient}

    def _channel_problem(self, kind: str, address: str) -> tuple[str, str] | None:
        if kind not in self.delivery.channels:
            known = ", ".join(sorted(self.delivery.channels))
            return "kind", f"no channel {kind!r} is installed; one of {known}"
        if kind in ("webhook", "wecom"):
            try:
                check_url(address, allow_http_loopback=self.delivery.allow_http_loopback)
            except UnsafeUrl as exc:
                return "address", str(exc)
        if kind == "email" and "@" not in address:
            return "address", "not an e-mail address"
        if kind == "sms" and not address.lstrip("+").isdigit():
            return "address", "a phone number: digits with an optional leading +"
        return None

    # Bureau subscriptions.

    @route(
        "POST",
        "/api/v1/notify/subscriptions",
        action="notify.subscription.create",
        summary="Subscribe an HTTPS endpoint to event types; the answer holds its secret",
        body=SubscriptionBodySchema,
        response=SubscriptionCreatedSchema,
        status=201,
        errors=(403,),
    )
    def create_subscription(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = load_body(request, SubscriptionBodySchema())
        errors: dict[str, Any] = {}
        try:
            check_url(body["url"], allow_http_loopback=self.delivery.allow_http_loopback)
        except UnsafeUrl as exc:
            errors["url"] = [str(exc)]
        unknown = {
            str(n): [f"notify does not carry {t!r}"]
            for n, t in enumerate(body["event_types"])
            if t not in CONSUMED
        }
        if unknown:
            errors["event_types"] = unknown
        if errors:
            raise InvalidInput("the subscription cannot be created", errors)
        created = self.notifications.add_subscription(
            body["url"],
            sorted(set(body["event_types"])),
            signing.new_secret(),
            request.identity.sub,
            datetime.now(UTC),
        )
        self.delivery.routing.changed()
        return 201, SubscriptionCreatedSchema().dump(created)

    @route(
        "GET",
        "/api/v1/notify/subscriptions",
        action="notify.subscription.read",
        summary="The caller's subscriptions (every one for admins and auditors)",
        response=SubscriptionListSchema,
        errors=(403,),
    )
    def list_subscriptions(self, request: Request) -> dict[str, Any]:
        reach = policy.reach(request.identity, "notify.subscription.read")
        owner = None if reach.everything else request.identity.sub
        found = self.notifications.subscriptions(owner)
        return {"items": SubscriptionSchema(many=True).dump(found)}

    @route(
        "GET",
        "/api/v1/notify/subscriptions/<string:subscription_id>",
        action="notify.subscription.read",
        summary="One subscription",
        response=SubscriptionSchema,
    )
    def get_subscription(self, request: Request, subscription_id: str) -> dict[str, Any]:
        return SubscriptionSchema().dump(
            self._own_subscription(request, subscription_id, "notify.subscription.read")
        )

    @route(
        "POST",
        "/api/v1/notify/subscriptions/<string:subscription_id>/pause",
        action="notify.subscription.change",
        summary="Pause a subscription: its deliveries wait until it is resumed",
        response=SubscriptionSchema,
    )
    def pause_subscription(self, request: Request, subscription_id: str) -> dict[str, Any]:
        return self._set_status(request, subscription_id, "paused")

    @route(
        "POST",
        "/api/v1/notify/subscriptions/<string:subscription_id>/resume",
        action="notify.subscription.change",
        summary="Resume a paused subscription; what waited is delivered",
        response=SubscriptionSchema,
    )
    def resume_subscription(self, request: Request, subscription_id: str) -> dict[str, Any]:
        return self._set_status(request, subscription_id, "active")

    @route(
        "DELETE",
        "/api/v1/notify/subscriptions/<string:subscription_id>",
        action="notify.subscription.change",
        summary="Delete a subscription; its undelivered events are marked dead",
        response=SubscriptionSchema,
    )
    def delete_subscription(self, request: Request, subscription_id: str) -> dict[str, Any]:
        self._own_subscription(request, subscription_id, "notify.subscription.change")
        self.notifications.delete_subscription(subscription_id, datetime.now(UTC))
        self.delivery.routing.changed()
        return SubscriptionSchema().dump(self.notifications.subscription(subscription_id))

    @route(
        "POST",
        "/api/v1/notify/subscriptions/<string:subscription_id>/rotate-secret",
        action="notify.subscription.change",
        summary="Replace a subscription's secret; the new one signs every later attempt",
        response=SecretSchema,
    )
    def rotate_secret(self, request: Request, subscription_id: str) -> dict[str, Any]:
        self._own_subscription(request, subscription_id, "notify.subscription.change")
        secret = signing.new_secret()
        self.notifications.rotate_secret(subscription_id, secret, datetime.now(UTC))
        return {"id": subscription_id, "secret": secret}

    @route(
        "GET",
        "/api/v1/notify/subscriptions/<string:subscription_id>/deliveries",
        action="notify.subscription.read",
        summary="A subscription's delivery log: each event, its state and attempts",
        query=DeliveryQuerySchema,
        response=DeliveryPageSchema,
    )
    def subscription_deliveries(self, request: Request, subscription_id: str) -> dict[str, Any]:
        self._own_subscription(request, subscription_id, "notify.subscription.read")
        query = load_query(request, DeliveryQuerySchema())
        filters = {**_delivery_filters(query), "subscription": subscription_id}
        return self._page(
            {**query, "subscription": subscription_id},
            lambda after: self.notifications.deliveries(filters, query["limit"], after),
            lambda item: item["created_at"],
            DeliverySchema(many=True),
        )

    def _own_subscription(
        self, request: Request, subscription_id: str, action: str
    ) -> dict[str, Any]:
        """The subscription if the caller may do ``action`` to it; a stranger's is 404."""
        found = self.notifications.subscription(subscription_id)
        if found is None or not policy.allows(
            request.identity,
            action,
            policy.Target("subscription", subscription_id, owners=(found["owner"],)),
        ):
            raise NotFound(f"no subscription {subscription_id}")
        return found

    def _set_status(self, request: Request, subscription_id: str, status: str) -> dict[str, Any]:
        current = self._own_subscription(request, subscription_id, "notify.subscription.change")
        if current["status"] == "deleted":
            raise NotFound(f"subscription {subscription_id} was deleted")
        self.notifications.set_subscription_status(subscription_id, status, datetime.now(UTC))
        self.delivery.routing.changed()
        return SubscriptionSchema().dump(self.notifications.subscription(subscription_id))

    # The audit: deliveries and every attempt.

    @route(
        "GET",
        "/api/v1/notify/deliveries",
        action="notify.delivery.read",
        summary="Deliveries by event, recipient, state or kind (dead ones included)",
        query=DeliveryQuerySchema,
        response=DeliveryPageSchema,
        errors=(403,),
    )
    def list_deliveries(self, request: Request) -> dict[str, Any]:
        query = load_query(request, DeliveryQuerySchema())
        filters = _delivery_filters(query)
        return self._page(
            query,
            lambda after: self.notifications.deliveries(filters, query["limit"], after),
            lambda item: item["created_at"],
            DeliverySchema(many=True),
        )

    @route(
        "POST",
        "/api/v1/notify/deliveries/<string:delivery_id>/retry",
        action="notify.delivery.retry",
        summary="Give a dead delivery a fresh retry horizon (admin)",
        response={"type": "object"},
        errors=(403,),
    )
    def retry_delivery(self, request: Request, delivery_id: str) -> dict[str, Any]:
        if not self.notifications.requeue(delivery_id, datetime.now(UTC)):
            raise NotFound(f"no dead delivery {delivery_id}")
        return {"requeued": delivery_id}

    @route(
        "GET",
        "/api/v1/notify/attempts",
        action="notify.delivery.read",
        summary="Every delivery attempt for an event, a recipient or a delivery",
        query=AttemptQuerySchema,
        response=AttemptPageSchema,
        errors=(403,),
    )
    def list_attempts(self, request: Request) -> dict[str, Any]:
        query = load_query(request, AttemptQuerySchema())
        filters = {k: query[k] for k in ("event_id", "recipient", "delivery_id") if k in query}
        return self._page(
            query,
            lambda after: self.notifications.attempts(filters, query["limit"], after),
            lambda item: item["at"],
            AttemptSchema(many=True),
        )

    def _page(
        self,
        query: dict[str, Any],
        fetch: Callable[[Position | None], tuple[list[dict[str, Any]], bool]],
        moment: Callable[[dict[str, Any]], datetime],
        schema: marshmallow.Schema,
    ) -> dict[str, Any]:
        """One keyset page (``shequ.pagination``): a cursor works only with its own filters."""
        filters = {k: v for k, v in query.items() if k not in ("limit", "cursor")}
        scope = query_scope(filters)
        after = None
        if query.get("cursor"):
            position = self.cursors.decode(query["cursor"], scope=scope)
            try:
                after = (datetime.fromisoformat(position[0]), str(position[1]))
            except (IndexError, TypeError, ValueError) as exc:
                raise InvalidCursor() from exc
        found, more = fetch(after)
        next_cursor = None
        if more:
            last = found[-1]
            next_cursor = self.cursors.encode([moment(last).isoformat(), last["id"]], scope=scope)
        return {"items": schema.dump(found), "next_cursor": next_cursor}


def _contact(recipient: str) -> policy.Target:
    """A recipient's contact points belong to the recipient (a user's subject)."""
    return policy.Target("contact", recipient, owners=(recipient,))


def _check_id(value: str, name: str) -> None:
    if not RECIPIENT_ID.fullmatch(value):
        raise InvalidInput(f"the {name} is not valid", {name: ["letters, digits, _ . : - only"]})


def _delivery_filters(query: dict[str, Any]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for key in ("event_id", "recipient", "kind"):
        if key in query:
            filters[key] = query[key]
    if query.get("status"):
        filters["status"] = {"$in": query["status"]}
    return filters
