"""Acknowledging a message after the broker connection broke must not raise.

nameko acks from the worker's ``handle_result``, where an exception kills the
service's container. The fault suite's broker restart caught it: a handler
finished just as RabbitMQ went away, the ack hit a reset socket, and notify
exited. ``TrackedQueueConsumer`` leaves such a message to the broker, which
delivers it again once the connection is gone.
"""

from __future__ import annotations

import socket
import uuid

import kombu

from shequ.events import TrackedQueueConsumer
from tests.conftest import Servers, wait_for


def test_an_ack_on_a_broken_connection_leaves_the_message_to_the_broker(
    servers: Servers,
) -> None:
    queue = kombu.Queue(f"settling-{uuid.uuid4().hex[:8]}", durable=False, auto_delete=False)
    with kombu.Connection(servers.amqp_uri) as setup:
        bound = queue(setup.default_channel)
        bound.declare()
        setup.default_channel.basic_publish(
            setup.default_channel.prepare_message(b"once"), exchange="", routing_key=queue.name
        )
        consumer_side = kombu.Connection(servers.amqp_uri)
        message = queue(consumer_side.default_channel).get(no_ack=False)
        assert message is not None and message.body == b"once"
        # The socket breaks under the consumer, as when the broker restarts.
        consumer_side.connection.sock.shutdown(socket.SHUT_RDWR)

        for settle in (TrackedQueueConsumer().ack_message, TrackedQueueConsumer().requeue_message):
            settle(message)  # must not raise

        consumer_side.collect()
        again = wait_for(
            lambda: bound.get(no_ack=True),
            timeout=30,
            interval=0.1,
            what="the broker to deliver the unacknowledged message again",
        )
        assert again.body == b"once" and again.delivery_info["redelivered"]
        bound.delete()
