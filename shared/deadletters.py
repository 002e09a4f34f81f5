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


def _describe(properties: Any, body: bytes) -> DeadLetter:
    headers = dict(properties.headers or {})
    try:
        event = json.loads(body)
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    return DeadLetter(
        message_id=properties.message_id,
        queue=headers.get(QUEUE_HEADER),
        attempts=int(headers.get(ATTEMPTS_HEADER, 0)),
        error=headers.get(ERROR_HEADER),
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
            headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-shequ-")}
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
