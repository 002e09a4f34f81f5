"""Per-service broker accounts on the real broker: own traffic flows, nothing else does.

The accounts are derived exactly as the stack derives them
(``broker_permissions``) and created through the same management calls
(``accounts.create_user``), for three made-up services with unique names, so
the session's running platform, which shares this broker and its queue
names, never sees their messages: ``a<id>`` publishes ``thing.done``,
``b<id>`` handles it and calls ``s<id>.ping`` over nameko's RPC exchange,
``s<id>`` answers. The administrator declares the topology first, as
``shequ up`` and ``shequ init`` do, ``nameko-rpc`` included; the services
only find the shared exchanges.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import kombu
import pika
import pika.exceptions
import pytest

from shequ import accounts
from shequ.bureau import management_from
from shequ.events import (
    declare_service_queues,
    retry_exchange_name,
    verify_or_declare,
    verify_service_queues,
)
from shequ.topology import RPC_EXCHANGE, BrokerUse, Subscription, broker_permissions
from tests.conftest import Servers, wait_for

pytestmark = pytest.mark.integration

DELAYS = (100, 300)
ACCESS_REFUSED = 403


@dataclass
class World:
    a: str
    b: str
    s: str
    handler: Subscription
    uris: dict[str, str]
    admin: str

    def channel(self, who: str, confirm: bool = True) -> Any:
        connection = pika.BlockingConnection(pika.URLParameters(self.uris[who]))
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        return channel


@pytest.fixture(scope="module")
def world(servers: Servers) -> Iterator[World]:
    tag = uuid.uuid4().hex[:8]
    a, b, s = f"a{tag}", f"b{tag}", f"s{tag}"
    handler = Subscription(b, "on_thing_done", a, "thing.done")
    uses = {
        a: BrokerUse(a, events=("thing.done",)),
        b: BrokerUse(b, subscriptions=(handler,), rpc_calls=(f"{s}.ping",)),
        s: BrokerUse(s, rpc_server=True),
    }
    with kombu.Connection(servers.amqp_uri) as connection:
        for name in uses:
            declare_service_queues(connection.default_channel, name, DELAYS)
    admin = pika.BlockingConnection(pika.URLParameters(servers.amqp_uri))
    channel = admin.channel()
    for name in uses:
        channel.exchange_declare(f"{name}.events", "topic", durable=True)
    channel.exchange_declare(RPC_EXCHANGE, "topic", durable=True)
    channel.queue_declare(handler.queue, durable=True)
    channel.queue_bind(handler.queue, handler.exchange, handler.event_name)
    management, vhost = management_from(servers.management_url, servers.amqp_uri)
    uris = {
        name: accounts.create_user(
            management,
            vhost,
            servers.amqp_uri,
            accounts.user_name(name, tag),
            broker_permissions(use),
        )
        for name, use in uses.items()
    }
    yield World(a, b, s, handler, uris, servers.amqp_uri)
    accounts.remove(management, uses, tag)
    for name in uses:
        for queue in (f"{name}.dead-letters", *(retry_exchange_name(name, d) for d in DELAYS)):
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        channel.exchange_delete(f"{name}.events")
    channel.queue_delete(handler.queue)
    admin.close()


def refused(action: Callable[[], Any]) -> int:
    """Run ``action``; the broker's close code if it closed the channel, else 0."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as exc:
        return int(exc.reply_code)
    return 0


# -- what each service does is allowed ----------------------------------------


def test_an_event_flows_from_its_publisher_to_its_handler_queue(world: World) -> None:
    publisher = world.channel(world.a)
    publisher.basic_publish(f"{world.a}.events", "thing.done", b'{"n": 1}', mandatory=True)
    consumer = world.channel(world.b)
    got: list[bytes] = []

    def arrived() -> bool:
        _, _, body = consumer.basic_get(world.handler.queue, auto_ack=True)
        if body:
            got.append(body)
        return bool(got)

    wait_for(arrived, timeout=20, what="the event on b's handler queue")
    assert got == [b'{"n": 1}']


def test_a_handler_declares_and_binds_its_own_queue_as_nameko_does(world: World) -> None:
    channel = world.channel(world.b)
    channel.queue_declare(world.handler.queue, durable=True)
    channel.queue_bind(world.handler.queue, world.handler.exchange, world.handler.event_name)


def test_a_service_finds_its_delay_queues_but_cannot_create_them(world: World) -> None:
    def verify(delays: tuple[int, ...]) -> Callable[[Any], None]:
        return partial(verify_service_queues, service=world.b, delays=delays)

    def declare(delays: tuple[int, ...]) -> Callable[[Any], None]:
        return partial(declare_service_queues, service=world.b, delays=delays)

    verify_or_declare(world.uris[world.b], verify(DELAYS), declare(DELAYS))
    # Creating one needs write on the default exchange (its dead-letter
    # exchange), which a service's account does not have: the administrator's
    # topology must come first, and the error says so.
    with pytest.raises(RuntimeError, match="shequ init"):
        verify_or_declare(world.uris[world.b], verify((700,)), declare((700,)))


def test_a_retry_and_a_dead_letter_go_to_the_service_s_own_exchanges(world: World) -> None:
    channel = world.channel(world.b)
    channel.basic_publish(retry_exchange_name(world.b, DELAYS[0]), world.handler.queue, b"{}")
    channel.basic_publish(f"{world.b}.dead-letters", world.handler.queue, b"{}")


def test_rpc_request_and_reply_flow_between_caller_and_server(world: World) -> None:
    server = world.channel(world.s)
    server.queue_declare(f"rpc-{world.s}", durable=True)
    server.queue_bind(f"rpc-{world.s}", RPC_EXCHANGE, f"{world.s}.*")
    caller = world.channel(world.b)
    reply_key = str(uuid.uuid4())
    reply_queue = f"rpc.reply-{world.b}-{reply_key}"
    caller.queue_declare(reply_queue, arguments={"x-expires": 300000})
    caller.queue_bind(reply_queue, RPC_EXCHANGE, reply_key)
    caller.basic_publish(
        RPC_EXCHANGE,
        f"{world.s}.ping",
        b"{}",
        pika.BasicProperties(reply_to=reply_key, correlation_id="c1"),
        mandatory=True,
    )
    request: list[Any] = []

    def asked() -> bool:
        method, properties, _ = server.basic_get(f"rpc-{world.s}", auto_ack=True)
        if method:
            request.append(properties)
        return bool(request)

    wait_for(asked, timeout=20, what="the request on the server's queue")
    server.basic_publish(
        RPC_EXCHANGE,
        request[0].reply_to,
        b'{"result": "pong"}',
        pika.BasicProperties(correlation_id=request[0].correlation_id),
    )
    replies: list[bytes] = []

    def answered() -> bool:
        _, _, body = caller.basic_get(reply_queue, auto_ack=True)
        if body:
            replies.append(body)
        return bool(replies)

    wait_for(answered, timeout=20, what="the reply on the caller's queue")
    assert replies == [b'{"result": "pong"}']
    server.queue_delete(f"rpc-{world.s}")


# -- and nothing else -----------------------------------------------------------


def test_a_service_cannot_publish_to_another_s_events_exchange(world: World) -> None:
    channel = world.channel(world.b)
    assert refused(lambda: channel.basic_publish(f"{world.a}.events", "thing.done", b"{}")) == (
        ACCESS_REFUSED
    )


def test_a_service_cannot_publish_into_a_queue_through_the_default_exchange(
    world: World,
) -> None:
    channel = world.channel(world.a)
    assert refused(lambda: channel.basic_publish("", world.handler.queue, b"{}")) == ACCESS_REFUSED


def test_a_service_cannot_publish_its_events_under_another_s_types(world: World) -> None:
    channel = world.channel(world.a)
    assert refused(lambda: channel.basic_publish(f"{world.a}.events", "case.closed", b"{}")) == (
        ACCESS_REFUSED
    )


def test_a_service_cannot_consume_another_s_queue(world: World) -> None:
    for who in (world.a, world.s):
        for queue in (world.handler.queue, f"{world.b}.dead-letters"):
            channel = world.channel(who, confirm=False)
            assert refused(partial(channel.basic_get, queue)) == ACCESS_REFUSED


def test_a_service_cannot_declare_or_delete_another_s_queues(world: World) -> None:
    channel = world.channel(world.a, confirm=False)
    assert refused(lambda: channel.queue_declare(world.handler.queue, durable=True)) == (
        ACCESS_REFUSED
    )
    channel = world.channel(world.a, confirm=False)
    assert refused(lambda: channel.queue_delete(world.handler.queue)) == ACCESS_REFUSED
    channel = world.channel(world.a, confirm=False)
    assert refused(lambda: channel.queue_declare(f"evt-{world.a}-x.y--{world.b}.on_y")) == (
        ACCESS_REFUSED
    )


def test_a_service_cannot_declare_or_delete_another_s_exchange(world: World) -> None:
    """Not even the exchange of a service it listens to."""
    channel = world.channel(world.b, confirm=False)
    assert refused(lambda: channel.exchange_delete(f"{world.a}.events")) == ACCESS_REFUSED
    channel = world.channel(world.b, confirm=False)
    assert refused(
        lambda: channel.exchange_declare(f"{world.a}.events", "topic", durable=True)
    ) == ACCESS_REFUSED  # fmt: skip


def test_a_service_cannot_bind_another_s_queue(world: World) -> None:
    channel = world.channel(world.a, confirm=False)
    assert refused(
        lambda: channel.queue_bind(world.handler.queue, f"{world.a}.events", "other.thing")
    ) == ACCESS_REFUSED  # fmt: skip


def test_a_handler_queue_cannot_be_bound_to_events_it_does_not_handle(world: World) -> None:
    channel = world.channel(world.b, confirm=False)
    assert refused(
        lambda: channel.queue_bind(world.handler.queue, f"{world.a}.events", "#")
    ) == ACCESS_REFUSED  # fmt: skip


def test_an_rpc_caller_may_ask_only_what_it_declared(world: World) -> None:
    channel = world.channel(world.b)
    assert refused(
        lambda: channel.basic_publish(RPC_EXCHANGE, f"{world.s}.shutdown", b"{}")
    ) == ACCESS_REFUSED  # fmt: skip


def test_no_one_but_the_server_consumes_or_binds_to_its_requests(world: World) -> None:
    channel = world.channel(world.b, confirm=False)
    mine = f"rpc.reply-{world.b}-{uuid.uuid4()}"
    channel.queue_declare(mine, arguments={"x-expires": 300000})
    assert refused(lambda: channel.queue_bind(mine, RPC_EXCHANGE, f"{world.s}.*")) == (
        ACCESS_REFUSED
    )
    channel = world.channel(world.a, confirm=False)
    assert refused(lambda: channel.queue_declare(f"rpc-{world.s}", durable=True)) == (
        ACCESS_REFUSED
    )
    for who in (world.a, world.b, world.s):
        channel = world.channel(who, confirm=False)
        assert refused(partial(channel.exchange_delete, RPC_EXCHANGE)) == ACCESS_REFUSED
