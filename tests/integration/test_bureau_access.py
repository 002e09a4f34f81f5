"""A bureau's broker user from `shequ bureau add` reads what it was given, nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from shequ.catalogue import example_payload
from shequ.contracts import REGISTRY
from shequ.embedded import free_port
from tests.conftest import Servers, wait_for
from tests.support.events import publish_event

pytestmark = pytest.mark.integration

REPORTED = REGISTRY.get("grid", "incident.reported")
CLOSED = REGISTRY.get("grid", "incident.closed")
CASE_OPENED = REGISTRY.get("mediation", "case.opened")


def data(spec: Any) -> dict[str, Any]:
    """The catalogue's example payload, loaded (``new_event`` dumps it again)."""
    return dict(spec.schema().load(example_payload(spec.schema)))


def shequ_bureau(servers: Servers, *args: str, management: str | None = None) -> Any:
    env = {
        "SHEQU_AMQP_URI": servers.amqp_uri,
        "SHEQU_RABBITMQ_MANAGEMENT_URL": management or servers.management_url,
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "shequ.cli", "bureau", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def declare_exchanges(servers: Servers) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(servers.amqp_uri))
    channel = connection.channel()
    for spec in (REPORTED, CASE_OPENED):
        channel.exchange_declare(spec.exchange, exchange_type="topic", durable=True)
    connection.close()


@pytest.fixture
def bureau(servers: Servers) -> Iterator[dict[str, Any]]:
    declare_exchanges(servers)
    name = f"t{uuid.uuid4().hex[:8]}"
    done = shequ_bureau(servers, "add", name, "--events", "grid.incident.reported")
    assert done.returncode == 0, done.stderr
    yield json.loads(done.stdout)
    shequ_bureau(servers, "remove", name)


def refused(action: Any) -> int:
    """Run ``action`` on a fresh channel; return the broker's close code (0 if none)."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as exc:
        return int(exc.reply_code)
    return 0


@pytest.fixture
def connection(bureau: dict[str, Any]) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(bureau["amqp_uri"]))
    yield conn
    if conn.is_open:
        conn.close()


def test_add_prints_the_uri_vhost_and_queue(bureau: dict[str, Any], servers: Servers) -> None:
    assert bureau["queue"] == f"bureau.{bureau['bureau']}.events"
    assert bureau["vhost"] == "/"
    assert bureau["amqp_uri"].startswith(f"amqp://bureau-{bureau['bureau']}:")
    assert "guest" not in bureau["amqp_uri"]
    assert bureau["bindings"] == [{"exchange": "grid.events", "routing_key": "incident.reported"}]
    assert bureau["events"] == ["shequ.grid.incident.reported"]


def test_a_bureau_consumes_the_events_it_was_given_and_only_those(
    bureau: dict[str, Any], connection: pika.BlockingConnection, servers: Servers
) -> None:
    unwanted = publish_event(servers.amqp_uri, CLOSED, data(CLOSED), "INC-1")
    wanted = publish_event(servers.amqp_uri, REPORTED, data(REPORTED), "INC-1")
    channel = connection.channel()
    seen: list[dict[str, Any]] = []

    def reached_wanted() -> bool:
        _, _, body = channel.basic_get(bureau["queue"], auto_ack=True)
        if body:
            seen.append(json.loads(body))
        return any(event["id"] == wanted for event in seen)

    wait_for(reached_wanted, timeout=20, what="the allowed event on the bureau's queue")
    # The closed event was published first: had it been routed, it would have come first.
    assert unwanted not in {event["id"] for event in seen}
    assert {event["type"] for event in seen} == {REPORTED.type}


def test_a_bureau_cannot_publish_to_an_events_exchange(
    connection: pika.BlockingConnection,
) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    assert refused(lambda: channel.basic_publish("grid.events", "incident.reported", b"{}")) == 403


def test_a_bureau_cannot_publish_through_the_default_exchange(
    bureau: dict[str, Any], connection: pika.BlockingConnection
) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    assert refused(lambda: channel.basic_publish("", bureau["queue"], b"{}")) == 403


def test_a_bureau_cannot_read_another_queue(
    connection: pika.BlockingConnection, servers: Servers
) -> None:
    admin = pika.BlockingConnection(pika.URLParameters(servers.amqp_uri))
    other = f"bureau.other{uuid.uuid4().hex[:6]}.events"
    admin.channel().queue_declare(other, durable=False, auto_delete=False)
    try:
        channel = connection.channel()
        assert refused(lambda: channel.basic_get(other)) == 403
    finally:
        admin.channel().queue_delete(other)
        admin.close()


def test_a_bureau_declares_and_binds_its_own_queue_within_its_patterns(
    bureau: dict[str, Any], connection: pika.BlockingConnection
) -> None:
    channel = connection.channel()
    mine = f"bureau.{bureau['bureau']}.replay"
    channel.queue_declare(mine, durable=True)
    channel.queue_bind(mine, "grid.events", "incident.reported")
    channel.queue_delete(mine)


def test_a_bureau_cannot_bind_to_an_exchange_it_was_not_given(
    bureau: dict[str, Any], connection: pika.BlockingConnection
) -> None:
    channel = connection.channel()
    assert refused(lambda: channel.queue_bind(bureau["queue"], "mediation.events", "#")) == 403


def test_a_bureau_cannot_widen_its_routing_keys(
    bureau: dict[str, Any], connection: pika.BlockingConnection
) -> None:
    channel = connection.channel()
    assert refused(lambda: channel.queue_bind(bureau["queue"], "grid.events", "incident.*")) == 403
    channel = connection.channel()
    assert refused(lambda: channel.queue_bind(bureau["queue"], "grid.events", "#")) == 403


def test_a_bureau_cannot_declare_a_queue_outside_its_prefix(
    connection: pika.BlockingConnection,
) -> None:
    channel = connection.channel()
    assert refused(lambda: channel.queue_declare("evt-grid-mine", durable=True)) == 403


def test_remove_deletes_the_user_and_its_queues(servers: Servers) -> None:
    declare_exchanges(servers)
    name = f"t{uuid.uuid4().hex[:8]}"
    added = json.loads(shequ_bureau(servers, "add", name, "--events", "grid.*").stdout)
    removed = shequ_bureau(servers, "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["queues_removed"] == [added["queue"]]
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(added["amqp_uri"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "Bad Name", "--events", "grid.*"], "bad bureau name"),
        (["add", "civil", "--events", "grid"], "bad event pattern"),
        (["add", "civil", "--events", "grid.incident.vanished"], "matches no known event type"),
        (["remove", "never-added"], "no bureau never-added"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    servers: Servers, args: list[str], message: str
) -> None:
    done = shequ_bureau(servers, *args)
    assert done.returncode != 0 and done.stdout == ""
    assert message in done.stderr


def test_an_unreachable_management_api_is_a_clear_error_without_the_password(
    servers: Servers,
) -> None:
    done = shequ_bureau(
        servers,
        "add",
        "civil",
        "--events",
        "grid.*",
        management=f"http://admin:s3cret-pw@127.0.0.1:{free_port()}",
    )
    assert done.returncode == 1
    assert "cannot reach the RabbitMQ management API" in done.stderr
    assert "s3cret-pw" not in done.stderr and "guest" not in done.stderr
