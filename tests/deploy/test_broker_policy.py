"""The broker resources of the manifests, applied to a real RabbitMQ node.

What the Messaging Topology Operator would create from the rendered prod
overlay (the vhost with its default queue type, one policy per service) is
created here through the management API of the session's RabbitMQ node; then
``shequ init`` declares the platform's topology in that vhost, exactly as the
install job does. The handler queues must come out as quorum queues under
their service's policy, a stock declaration must not be refused, and a
delivery over the limit must reach the service's dead-letter queue.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import kombu
import pika
import pytest
import requests

from shequ import accounts
from shequ.bureau import management_from
from shequ.deadletters import DeadLetter, list_dead_letters, replay_dead_letters
from shequ.discovery import load_service
from shequ.events import declare_service_queues, verify_or_declare, verify_service_queues
from shequ.install import prepare
from shequ.store import OUTBOX, OUTBOX_ORDER_INDEX, OUTBOX_PUBLISHED
from shequ.topology import RPC_EXCHANGE, broker_use, subscriptions
from tests.conftest import Servers, wait_for
from tests.deploy.conftest import SERVICES, of_kind, rendered

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

GUEST = ("guest", "guest")


def api(servers: Servers, method: str, path: str, body: Any = None) -> requests.Response:
    response = requests.request(
        method, f"{servers.management_url}/api/{path}", json=body, auth=GUEST, timeout=10
    )
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response


@pytest.fixture(scope="module")
def vhost(servers: Servers) -> Iterator[str]:
    """A vhost set up from the rendered manifests' Vhost and Policy resources."""
    docs = rendered("prod")
    (spec,) = [doc["spec"] for doc in of_kind(docs, "Vhost")]
    name = f"{spec['name']}-{uuid.uuid4().hex[:8]}"
    quoted = urllib.parse.quote(name, safe="")
    queue_type = spec["defaultQueueType"]
    # RabbitMQ 3.10's HTTP API names the field `defaultqueuetype`; later ones
    # (which the operator talks to) `default_queue_type`. Send both, check it took.
    api(
        servers,
        "PUT",
        f"vhosts/{quoted}",
        {"defaultqueuetype": queue_type, "default_queue_type": queue_type},
    )
    assert api(servers, "GET", f"vhosts/{quoted}").json()["default_queue_type"] == queue_type
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    api(servers, "PUT", f"permissions/{quoted}/guest", everything)
    for policy in of_kind(docs, "Policy"):
        p = policy["spec"]
        assert p["vhost"] == spec["name"]
        api(
            servers,
            "PUT",
            f"policies/{quoted}/{p['name']}",
            {
                "pattern": p["pattern"],
                "definition": p["definition"],
                "apply-to": p["applyTo"],
                "priority": p["priority"],
            },
        )
    yield name
    api(servers, "DELETE", f"vhosts/{quoted}")


def amqp_uri(servers: Servers, vhost: str) -> str:
    return servers.amqp_uri.rstrip("/") + "/" + urllib.parse.quote(vhost, safe="")


def test_handler_queues_are_quorum_queues_under_their_service_policy(
    servers: Servers, vhost: str
) -> None:
    result = prepare(amqp_uri(servers, vhost), None)
    assert result.queues > 0
    quoted = urllib.parse.quote(vhost, safe="")
    expected = [s.queue for name in SERVICES for s in subscriptions(load_service(name))]
    assert expected, "no handler queues: the services declare no event handlers?"

    def with_policy(name: str) -> dict[str, Any] | None:
        path = f"queues/{quoted}/{urllib.parse.quote(name, safe='')}"
        queue = api(servers, "GET", path).json()
        return queue if queue.get("policy") else None

    for name in expected:
        service = name.split("--", 1)[1].split(".", 1)[0]
        queue = wait_for(lambda name=name: with_policy(name), timeout=15, what=f"{name}'s policy")
        assert queue["type"] == "quorum", name
        assert queue["policy"] == f"shequ-{service}-handlers", name
        applied = queue["effective_policy_definition"]
        assert applied["dead-letter-exchange"] == f"{service}.dead-letters", name
    # Declaring again, as each service does at start, is accepted unchanged.
    assert prepare(amqp_uri(servers, vhost), None).queues == result.queues


def test_a_delivery_over_the_limit_goes_to_the_service_dead_letters(
    servers: Servers, vhost: str
) -> None:
    prepare(amqp_uri(servers, vhost), None)
    policies = {p["spec"]["name"]: p["spec"] for p in of_kind(rendered("prod"), "Policy")}
    policy = policies["shequ-notify-handlers"]
    limit = int(policy["definition"]["delivery-limit"])
    queue = next(s.queue for s in subscriptions(load_service("notify")))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri(servers, vhost)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        marker = uuid.uuid4().hex
        channel.basic_publish(
            "", queue, b"{}", pika.BasicProperties(delivery_mode=2, message_id=marker)
        )
        attempts = 0
        # Each rejection with requeue counts as a delivery; the broker drops the
        # message from the queue after limit + 1 deliveries.
        for _ in range(limit + 5):
            method, _props, _body = channel.basic_get(queue)
            if method is None:
                break
            attempts += 1
            channel.basic_nack(method.delivery_tag, requeue=True)
        assert attempts == limit + 1

    finally:
        connection.close()

    # The operator's tools see where it came from and can send it back.
    uri = amqp_uri(servers, vhost)

    def listed() -> DeadLetter | None:
        return next((d for d in list_dead_letters(uri, "notify") if d.message_id == marker), None)

    letter = wait_for(listed, timeout=10, what="the message in notify.dead-letters")
    assert letter.queue == queue
    assert letter.error == "dead-lettered by the broker: delivery_limit"
    assert replay_dead_letters(uri, "notify", marker) == 1
    connection = pika.BlockingConnection(pika.URLParameters(uri))
    try:
        channel = connection.channel()
        method, props, _body = wait_for(
            lambda: (got := channel.basic_get(queue))[0] and got, timeout=10, what="the replay"
        )
        channel.basic_ack(method.delivery_tag)
        assert props.message_id == marker
        assert "x-death" not in (props.headers or {})
    finally:
        connection.close()


def rendered_permissions(service: str) -> dict[str, Any]:
    """A service's permissions as the rendered prod manifests grant them."""
    docs = rendered("prod")
    user = f"shequ-{service}"
    (permission,) = [d for d in of_kind(docs, "Permission") if d["metadata"]["name"] == user]
    topics = [
        d["spec"]["permissions"]
        for d in of_kind(docs, "TopicPermission")
        if d["spec"]["userReference"]["name"] == user
    ]
    return {**permission["spec"]["permissions"], "topics": topics}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_starts_on_the_account_the_manifests_give_it(
    servers: Servers, vhost: str, service: str
) -> None:
    """After ``shequ init``, what the service declares and publishes at start is allowed."""
    uri = amqp_uri(servers, vhost)
    prepare(uri, None)
    management, _ = management_from(servers.management_url, servers.amqp_uri)
    user = f"shequ-{service}-{uuid.uuid4().hex[:6]}"
    own = accounts.create_user(management, vhost, uri, user, rendered_permissions(service))
    try:
        use = broker_use(load_service(service))
        delays = (1000, 5000, 30000)
        verify_or_declare(
            own,
            partial(verify_service_queues, service=service, delays=delays),
            partial(declare_service_queues, service=service, delays=delays),
        )
        # Confirmed publishes: a refused one raises here instead of passing unseen.
        with kombu.Connection(own, transport_options={"confirm_publish": True}) as connection:
            channel = connection.default_channel
            for sub in use.subscriptions:
                # As ReliableEventHandler declares it: the source's exchange is only found.
                exchange = kombu.Exchange(sub.exchange, type="topic", no_declare=True)
                kombu.Queue(sub.queue, exchange=exchange, routing_key=sub.event_name,
                            durable=True)(channel).declare()  # fmt: skip
            # nameko-rpc too: found (shequ.rpc.with_found_exchange), never declared.
            rpc = kombu.Exchange(RPC_EXCHANGE, type="topic", no_declare=True)
            if use.rpc_server:
                kombu.Queue(f"rpc-{service}", exchange=rpc, routing_key=f"{service}.*",
                            durable=True)(channel).declare()  # fmt: skip
            if use.rpc_calls:
                key = str(uuid.uuid4())
                kombu.Queue(f"rpc.reply-{service}-{key}", exchange=rpc, routing_key=key,
                            queue_arguments={"x-expires": 300000})(channel).declare()  # fmt: skip
            events = kombu.Exchange(f"{service}.events", type="topic", durable=True)
            events(channel).declare()
            producer = kombu.Producer(channel)
            for event in use.events:
                producer.publish({}, exchange=events, routing_key=event)
    finally:
        api(servers, "DELETE", f"users/{user}")


def test_shequ_init_creates_every_service_database_indexes(servers: Servers, vhost: str) -> None:
    prefix = f"init{uuid.uuid4().hex[:8]}_"
    result = prepare(amqp_uri(servers, vhost), servers.mongo_uri, database_prefix=prefix)
    assert sorted(result.databases) == sorted(f"{prefix}{s}" for s in SERVICES)
    client = servers.mongo()
    try:
        for database in result.databases:
            keys = [dict(index["key"]) for index in client[database][OUTBOX].list_indexes()]
            assert dict(OUTBOX_ORDER_INDEX) in keys, database
            logged = [dict(i["key"]) for i in client[database][OUTBOX_PUBLISHED].list_indexes()]
            assert {"at": 1} in logged and {"through": 1} in logged, database
    finally:
        client.close()
