"""Broker topology declared ahead of the services.

An event published before its consumer's queue exists is silently dropped.
So ``shequ up`` (and, in Kubernetes, a job that runs before the services roll
out) declares every exchange, handler queue, delay queue and dead-letter
queue of every known service first. The names and arguments are exactly the
ones the services declare themselves, so either may come first.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kombu
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from shequ.events import (
    ReliableEventHandler,
    declare_service_queues,
    event_queue_name,
    handler_queue_arguments,
)


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
