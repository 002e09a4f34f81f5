"""Poison on the platform's real queues: dead-lettered with a reason, and the queue flows on."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika
import pytest

from shequ.cli import main as shequ
from shequ.contracts.grid import INCIDENT_REPORTED_V1
from tests.conftest import Platform, wait_for
from tests.e2e.test_incident_fanout import effects, report

pytestmark = pytest.mark.e2e

CONSUMERS = ("notify", "disclosure", "mediation", "volunteer")


def publish_raw(platform: Platform, body: bytes) -> str:
    message_id = str(uuid.uuid4())
    connection = pika.BlockingConnection(pika.URLParameters(platform.servers.amqp_uri))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            INCIDENT_REPORTED_V1.exchange,
            INCIDENT_REPORTED_V1.name,
            body,
            pika.BasicProperties(
                content_type="application/cloudevents+json", delivery_mode=2, message_id=message_id
            ),
        )
    finally:
        connection.close()
    return message_id


def envelope(**changes: Any) -> bytes:
    event = {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/shequ/dev/grid",
        "type": INCIDENT_REPORTED_V1.type, "subject": "INC-poison", "time": "2026-11-23T10:00:00Z",
        "dataschema": INCIDENT_REPORTED_V1.dataschema, "sequence": 1,
        "datacontenttype": "application/json", "data": {"incident_id": "INC-poison"},
    }  # fmt: skip
    event.update(changes)
    return json.dumps(event).encode()


def dead_letters(service: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert shequ(["dlq", "list", service]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_invalid_json_unknown_types_and_invalid_payloads_are_dead_lettered_with_a_reason(
    platform: Platform, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHEQU_AMQP_URI", platform.servers.amqp_uri)
    unknown = envelope(
        type="shequ.grid.incident.exploded",
        dataschema="urn:shequ:schema:grid.incident.exploded:v1",
    )
    poison = {
        publish_raw(platform, b"{not json"): "not JSON",
        publish_raw(platform, unknown): "",
        publish_raw(platform, envelope()): "payload is invalid",
    }

    def all_parked(service: str) -> list[dict[str, Any]] | None:
        found = dead_letters(service, capsys)
        return found if {letter["message_id"] for letter in found} >= set(poison) else None

    for service in CONSUMERS:
        letters = wait_for(
            lambda service=service: all_parked(service),
            timeout=60,
            interval=0.5,
            what=f"the three poison messages in {service}'s dead letters",
        )
        by_id = {letter["message_id"]: letter for letter in letters}
        for message_id, reason in poison.items():
            assert by_id[message_id]["attempts"] == 1, by_id[message_id]
            assert reason in (by_id[message_id]["error"] or "")
    # The queue keeps flowing: a real report after the poison reaches everyone.
    created = report(
        platform, {"category": "neighbour_dispute", "grid_cell": "qy-02", "description": "噪音"}
    ).json()
    wait_for(
        lambda: all(effects(platform, created["id"])[name] for name in ("notify", "mediation")),
        what="the report after the poison to fan out",
    )
