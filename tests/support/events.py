"""Putting an event on the broker the way a producer's outbox relay does, for tests."""

from __future__ import annotations

import json
from typing import Any

import pika

from shequ.contracts import EventSpec
from shequ.contracts.envelope import new_event
from shequ.outbox import published_ids
from shequ.store import OUTBOX


def publish_event(amqp_uri: str, spec: EventSpec, data: dict[str, Any], subject: str) -> str:
    """Publish one event, persistent and confirmed; returns its id."""
    event = new_event(spec, district="dev", subject=subject, sequence=1, data=data)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            spec.exchange,
            spec.name,
            json.dumps(event.to_json_dict()).encode(),
            pika.BasicProperties(
                content_type="application/cloudevents+json", delivery_mode=2, message_id=event.id
            ),
        )
    finally:
        connection.close()
    return event.id


def published_entries(db: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a service's outbox matching ``query`` that its relay has published
    (the broker confirmed them: they are in the relay's publication log)."""
    logged = published_ids(db)
    return [entry for entry in db[OUTBOX].find(query) if entry["_id"] in logged]
