"""RPC entrypoints that survive the broker going away while they answer.

Stock nameko publishes an RPC reply from the worker's ``handle_result``; if
the broker is unreachable at that moment (a restart, a failover) the publish
raises there, and an exception in ``handle_result`` kills the whole service
container: every HTTP request in flight answers 500 and the process exits.
The fault suite's broker restart found it, when notify asked the grid who
reported an incident just as RabbitMQ went down.

A reply that cannot be sent is no reason to stop a service: the caller
times out and asks again, and the unacknowledged request goes back to its
queue when the broker closes the channel. So the failure is logged and the
container keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import kombu
import kombu.exceptions
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.rpc import Rpc, RpcConsumer, get_rpc_exchange
from nameko.standalone.rpc import (
    ClusterRpcProxy,
    PollingQueueConsumer,
    SingleThreadedReplyListener,
)

from shequ.events import BROKER_GONE, verify_or_declare

log = logging.getLogger(__name__)


def with_found_exchange(queue: kombu.Queue, config: dict[str, Any]) -> kombu.Queue:
    """``queue``, bound to nameko's RPC exchange once it is found, without declaring it.

    nameko declares ``nameko-rpc`` whenever it consumes an RPC or reply
    queue, and declaring an exchange needs configure on it (the right to
    delete it too), which no service's broker account has on that shared
    exchange: the administrator declares it with the topology, and a
    service on an administrator's account still declares it when missing
    (``shequ.events.verify_or_declare``).
    """
    exchange = get_rpc_exchange(config)
    verify_or_declare(
        config[AMQP_URI_CONFIG_KEY],
        lambda channel: channel.exchange_declare(exchange.name, exchange.type, passive=True),
        lambda channel: exchange(channel).declare(),
    )
    return kombu.Queue(
        queue.name,
        exchange=kombu.Exchange(exchange.name, type=exchange.type, durable=True, no_declare=True),
        routing_key=queue.routing_key,
        durable=queue.durable,
        queue_arguments=queue.queue_arguments,
    )


class FoundExchangeRpcConsumer(RpcConsumer):
    """nameko's RPC consumer, consuming ``rpc-<service>`` without declaring ``nameko-rpc``."""

    def setup(self) -> None:
        super().setup()
        # The queue consumer declares the queue only when it starts, after every setup.
        self.queue = with_found_exchange(self.queue, self.container.config)


class ResilientRpc(Rpc):
    rpc_consumer = FoundExchangeRpcConsumer()

    def handle_result(
        self, message: Any, worker_ctx: Any, result: Any, exc_info: Any
    ) -> tuple[Any, Any]:
        try:
            return super().handle_result(message, worker_ctx, result, exc_info)
        except BROKER_GONE as exc:
            log.warning(
                "the reply of %s.%s could not be sent (%s); the caller will ask again",
                self.container.service_name,
                self.method_name,
                exc.__class__.__name__,
            )
            return result, exc_info


rpc = ResilientRpc.decorator


class _FoundExchangeQueueConsumer(PollingQueueConsumer):  # type: ignore[misc]
    """The standalone proxy's reply consumer; it declares the queue as soon as it is given it."""

    def register_provider(self, provider: Any) -> None:
        provider.queue = with_found_exchange(provider.queue, provider.container.config)
        super().register_provider(provider)


class _ReplyListener(SingleThreadedReplyListener):  # type: ignore[misc]
    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self.queue_consumer = _FoundExchangeQueueConsumer(timeout=timeout)


class _CallerContainer(ClusterRpcProxy.ServiceContainer):  # type: ignore[misc,name-defined]
    """A standalone proxy's stand-in container, named for the service that asks."""

    def __init__(self, service_name: str, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.service_name = service_name


class ServiceRpcProxy(ClusterRpcProxy):  # type: ignore[misc]
    """A standalone ``ClusterRpcProxy`` whose reply queue carries the caller's name.

    Stock standalone proxies all name their reply queues
    ``rpc.reply-standalone_rpc_proxy-<uuid>``, so a broker account cannot be
    limited to its own. Named ``rpc.reply-<service>-<uuid>`` they can
    (``shequ.topology.broker_permissions``). Like the RPC consumer, it finds
    ``nameko-rpc`` rather than declaring it.
    """

    def __init__(self, service_name: str, config: dict[str, Any], **kwargs: Any) -> None:
        self.ServiceContainer = partial(_CallerContainer, service_name)
        super().__init__(config, reply_listener_cls=_ReplyListener, **kwargs)


def rpc_calls(*calls: str) -> Callable[[type], type]:
    """Declare, on a dependency provider class, the ``<service>.<method>`` RPCs it makes.

    The broker account of a service that uses the provider may send those
    requests and no others (``shequ.topology.rpc_calls_of``).
    """
    for call in calls:
        service, _, method = call.partition(".")
        if not service or not method or "." in method:
            raise ValueError(f"an RPC call is <service>.<method>, not {call!r}")

    def mark(cls: type) -> type:
        cls.rpc_calls = tuple(calls)  # type: ignore[attr-defined]
        return cls

    return mark
