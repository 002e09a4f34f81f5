"""Broker topology declared ahead of the services.

An event published before its consumer's queue exists is silently dropped.
So ``shequ up`` (and, in Kubernetes, a job that runs before the services roll
out) declares every exchange, handler queue, delay queue and dead-letter
queue of every known service first. The names and arguments are exactly the
ones the services declare themselves, so on an administrator's account
either may come first. On its own account (``broker_permissions``) a service
may not declare the shared exchanges nor create its delay queues: there
this must come first, and the service only finds them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kombu
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR, DependencyProvider
from nameko.rpc import Rpc

from shequ.contracts import REGISTRY
from shequ.events import (
    ReliableEventHandler,
    dead_letter_queue_name,
    declare_service_queues,
    event_queue_name,
    handler_queue_arguments,
)

#: nameko's RPC exchange (its ``RPC_EXCHANGE`` setting, which Shequ leaves alone).
RPC_EXCHANGE = "nameko-rpc"
#: The routing key of an RPC reply: the caller's reply-queue uuid.
REPLY_KEY = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True)
class Subscription:
    """One handler's queue: which service consumes which event, through which method."""

    service: str
    method: str
    source_service: str
    event_name: str

    @property
    def queue(self) -> str:
        return event_queue_name(self.source_service, self.event_name, self.service, self.method)

    @property
    def exchange(self) -> str:
        return f"{self.source_service}.events"


def subscriptions(service_cls: type) -> list[Subscription]:
    """The event subscriptions a service class declares through ``event_handler``."""
    found = []
    for method_name, method in inspect.getmembers(service_cls, inspect.isfunction):
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, ReliableEventHandler):
                found.append(
                    Subscription(
                        service=service_cls.name,
                        method=method_name,
                        source_service=entrypoint.source_service,
                        event_name=entrypoint.event_type,
                    )
                )
    return sorted(found, key=lambda s: s.queue)


def declare_topology(
    amqp_uri: str,
    service_classes: Iterable[type],
    delays: Iterable[int],
    config: Mapping[str, Any] | None = None,
) -> int:
    """Declare everything the given services consume from; return the queue count."""
    delays = tuple(delays)
    count = 0
    with kombu.Connection(amqp_uri) as connection:
        channel: Any = connection.default_channel
        # Shared by every service that answers or calls RPC; none may declare it.
        kombu.Exchange(RPC_EXCHANGE, type="topic", durable=True)(channel).declare()
        for service_cls in service_classes:
            declare_service_queues(channel, service_cls.name, delays)
            for sub in subscriptions(service_cls):
                exchange = kombu.Exchange(sub.exchange, type="topic", durable=True)
                kombu.Queue(
                    sub.queue,
                    exchange=exchange,
                    routing_key=sub.event_name,
                    durable=True,
                    queue_arguments=handler_queue_arguments(config or {}, service_cls.name),
                )(channel).declare()
                count += 1
    return count


@dataclass(frozen=True)
class BrokerUse:
    """What one service does on the broker, read off its class (``broker_use``)."""

    service: str
    subscriptions: tuple[Subscription, ...] = ()
    #: ``<entity>.<verb>`` of the events it publishes on ``<service>.events``.
    events: tuple[str, ...] = ()
    #: True when it answers RPC (an ``@rpc`` entrypoint: queue ``rpc-<service>``).
    rpc_server: bool = False
    #: ``<service>.<method>`` requests it sends (``shequ.rpc.rpc_calls``).
    rpc_calls: tuple[str, ...] = field(default=())


def rpc_calls_of(service_cls: type) -> tuple[str, ...]:
    """The RPCs a service's dependency providers declare with ``shequ.rpc.rpc_calls``."""
    calls: set[str] = set()
    for value in vars(service_cls).values():
        if isinstance(value, DependencyProvider):
            calls.update(getattr(value, "rpc_calls", ()))
    return tuple(sorted(calls))


def broker_use(service_cls: type) -> BrokerUse:
    """A service class's subscriptions, published events and RPC, for its broker account."""
    rpc_server = any(
        isinstance(entrypoint, Rpc)
        for _, method in inspect.getmembers(service_cls, inspect.isfunction)
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ())
    )
    return BrokerUse(
        service=service_cls.name,
        subscriptions=tuple(subscriptions(service_cls)),
        events=tuple(sorted(s.name for s in REGISTRY.published() if s.service == service_cls.name)),
        rpc_server=rpc_server,
        rpc_calls=rpc_calls_of(service_cls),
    )


def _any_of(patterns: Iterable[str]) -> str:
    """One anchored regex matching any of ``patterns`` (each already a regex); none: nothing."""
    unique = sorted(set(patterns))
    return f"^({'|'.join(unique)})$" if unique else "^$"


def broker_permissions(use: BrokerUse, rpc_exchange: str = RPC_EXCHANGE) -> dict[str, Any]:
    """A service's RabbitMQ permissions: its own exchanges and queues and no one else's.

    The three vhost regexes (``configure``: declare and delete; ``write``:
    publish to an exchange, bind a queue; ``read``: consume from a queue,
    bind to an exchange) and topic permissions limiting the routing keys it
    may publish and bind on the exchanges it shares with others. What it
    owns, by the names ``shequ.events`` and nameko give them:

    * ``<service>.events``, where its outbox publishes (only its own event
      types);
    * ``<service>.dead-letters`` and ``<service>.retry.<n>ms``, exchange and
      queue each, for its back-off and dead letters;
    * one queue per event handler, ``evt-<source>-<event>--<service>.<method>``,
      bound to the source's ``<source>.events`` with that event's key only;
    * ``rpc-<service>`` if it answers RPC, bound to ``nameko-rpc`` with
      ``<service>.*``, and whose replies it publishes there to the caller's
      uuid;
    * ``rpc.reply-<service>-<uuid>`` if it calls RPC, and the requests it
      declared.

    It may declare (and so delete) only those, never a shared exchange
    (the runtime finds those, ``shequ.events.verify_or_declare``); the topic
    permissions keep the routing keys it may publish and bind on the shared
    exchanges to the ones it uses.
    """
    name = re.escape(use.service)
    uses_rpc = use.rpc_server or bool(use.rpc_calls)
    events = re.escape(f"{use.service}.events")
    # Exchange and queue each: bound to each other, so read and write on both.
    backoff = [re.escape(dead_letter_queue_name(use.service)), rf"{name}\.retry\.[0-9]+ms"]
    queues = [re.escape(sub.queue) for sub in use.subscriptions]
    if use.rpc_server:
        queues.append(re.escape(f"rpc-{use.service}"))
    if use.rpc_calls:
        queues.append(rf"rpc\.reply-{name}-{REPLY_KEY}")
    sources = [re.escape(sub.exchange) for sub in use.subscriptions]
    rpc = [re.escape(rpc_exchange)] if uses_rpc else []

    topics: dict[str, dict[str, list[str]]] = {}

    def topic(exchange: str) -> dict[str, list[str]]:
        return topics.setdefault(exchange, {"write": [], "read": []})

    topic(f"{use.service}.events")["write"].extend(re.escape(event) for event in use.events)
    for sub in use.subscriptions:
        topic(sub.exchange)["read"].append(re.escape(sub.event_name))
    if uses_rpc:
        keys = topic(rpc_exchange)
        keys["write"].extend(re.escape(call) for call in use.rpc_calls)
        if use.rpc_server:
            keys["write"].append(REPLY_KEY)
            keys["read"].append(re.escape(f"{use.service}.*"))
        if use.rpc_calls:
            keys["read"].append(REPLY_KEY)
    return {
        # Declare and delete. The delay queues, the source exchanges and
        # nameko-rpc are only found (shequ.events.verify_or_declare): the
        # administrator declares them first.
        "configure": _any_of([events, *backoff, *queues]),
        # Publish (its events, retries, dead letters, RPC), and bind its queues.
        "write": _any_of([events, *backoff, *queues, *rpc]),
        # Consume its queues, and bind them to the exchanges they listen on.
        "read": _any_of([*backoff, *queues, *sources, *rpc]),
        "topics": [
            {"exchange": exchange, "write": _any_of(keys["write"]), "read": _any_of(keys["read"])}
            for exchange, keys in sorted(topics.items())
        ],
    }
