"""Operator access to a service's dead-letter queue: list and replay.

Listing reads every message without acknowledging it and then closes the
channel, so the broker keeps them all. Replaying republishes a message to
the queue it failed on (with its attempt count reset), with a publisher
confirm, and only then acknowledges it in the dead-letter queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pika

from shequ.events import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, dead_letter_queue_name


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    queue: str | None
    attempts: int
    error: str | None
    event_type: str | None
    subject: str | None
    headers: dict[str, Any]


#: Headers the broker sets when it dead-letters a message itself.
BROKER_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _broker_death(headers: dict[str, Any]) -> tuple[str | None, str | None]:
    """The queue and reason of the broker's latest dead-lettering, if it did any.

    In Kubernetes a policy gives handler queues a delivery limit (a message
    that kills its consumer every time); the broker then dead-letters the
    message to the service's dead-letter exchange with ``x-death`` instead of
    the ``x-shequ-*`` headers the service's own retry path writes.
    """
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return None, None
    return _text(deaths[0].get("queue")), _text(deaths[0].get("reason"))


def _describe(properties: Any, body: bytes) -> DeadLetter:
    headers = dict(properties.headers or {})
    try:
        event = json.loads(body)
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    death_queue, death_reason = _broker_death(headers)
    error = headers.get(ERROR_HEADER)
    if error is None and death_reason is not None:
        error = f"dead-lettered by the broker: {death_reason}"
    return DeadLetter(
        message_id=properties.message_id,
        queue=headers.get(QUEUE_HEADER) or death_queue,
        attempts=int(headers.get(ATTEMPTS_HEADER, 0)),
        error=error,
        event_type=event.get("type"),
        subject=event.get("subject"),
        headers=headers,
    )


def list_dead_letters(amqp_uri: str, service: str, limit: int = 1000) -> list[DeadLetter]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = connection.channel()
        found = []
        for _ in range(limit):
            method, properties, body = channel.basic_get(dead_letter_queue_name(service))
            if method is None:
                break
            found.append(_describe(properties, body))
        channel.close()  # unacknowledged messages go back to the queue
        return found
    finally:
        connection.close()


def replay_dead_letters(amqp_uri: str, service: str, message_id: str | None = None) -> int:
    """Send dead letters back to their queues; only ``message_id`` if given."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    replayed = 0
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        dlq = dead_letter_queue_name(service)
        skipped = []
        while True:
            method, properties, body = channel.basic_get(dlq)
            if method is None:
                break
            letter = _describe(properties, body)
            if (message_id and letter.message_id != message_id) or not letter.queue:
                skipped.append(method.delivery_tag)
                continue
            headers = {
                k: v
                for k, v in letter.headers.items()
                if not k.startswith(("x-shequ-", *BROKER_DEATH_HEADERS))
            }
            headers[ATTEMPTS_HEADER] = 0
            channel.basic_publish(
                exchange="",
                routing_key=letter.queue,
                body=body,
                properties=pika.BasicProperties(
                    content_type=properties.content_type,
                    content_encoding=properties.content_encoding,
                    message_id=properties.message_id,
                    delivery_mode=2,
                    headers=headers,
                ),
                mandatory=True,
            )
            channel.basic_ack(method.delivery_tag)
            replayed += 1
        for tag in skipped:
            channel.basic_nack(tag, requeue=True)
        channel.close()
    finally:
        connection.close()
    return replayed
