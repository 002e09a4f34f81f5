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
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import kombu
import kombu.exceptions
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import RemoteError
from nameko.rpc import Rpc, RpcConsumer, get_rpc_exchange
from nameko.standalone.rpc import (
    ClusterRpcProxy,
    PollingQueueConsumer,
    SingleThreadedReplyListener,
)

from shequ.events import BROKER_GONE, broker_at_start, verify_or_declare

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
        self.queue = broker_at_start(
            self.container.config,
            partial(with_found_exchange, self.queue, self.container.config),
            "finding the RPC exchange",
        )


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


class RpcProxyPool:
    """Standalone RPC proxies kept open between calls, as many as are used at once.

    Opening a proxy costs a connection, a channel, and a reply queue declared,
    bound and consumed, then all of it torn down: about as much broker work
    as the call itself, for every call. The pool keeps each proxy open once
    it has answered, for the next caller, up to ``size`` idle ones.

    A proxy is used by one caller at a time (its reply consumer is polled by
    the caller). One that timed out or failed other than by the remote
    method's own error is closed, not kept: a reply that comes late would
    otherwise wait in it forever. A kept proxy whose connection dropped (a
    broker restart took its reply queue with it) is closed when next taken,
    not used: nameko's proxy would notice only after sending the request,
    and declare its reply queue again only then, so a quick answer could
    find no queue and the caller would wait out its timeout.

    Only a proxy idle for ``check_after`` seconds or more is checked. The
    check is a read that waits for nothing, and under eventlet it lets the
    hub run every other green thread first: in notify under load, taking a
    kept proxy took 42 ms at p99 and 222 ms at most with the check, 0.1 ms
    at p99 without it (docs/performance.md). A connection that dropped
    less than ``check_after`` after its last answer is missed, and that one
    call waits out its timeout, as before the pool checked at all.
    """

    def __init__(
        self,
        service_name: str,
        config: dict[str, Any],
        *,
        timeout: float,
        size: int = 4,
        check_after: float = 1.0,
    ) -> None:
        self.service_name = service_name
        self.config = config
        self.timeout = timeout
        self.size = size
        self.check_after = check_after
        #: Idle proxies, each with the ``time.monotonic()`` it was given back at.
        self._idle: list[tuple[ServiceRpcProxy, Any, float]] = []
        self._lock = threading.Lock()
        #: Proxies opened so far: how often the pool had none idle.
        self.opened = 0

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``service.method(*args, **kwargs)`` over RPC, waiting at most ``timeout`` seconds.

        Raises ``RemoteError`` when the remote method raised, ``RpcTimeout``
        when no answer came in time, and the broker's error when it cannot
        be reached.
        """
        proxy, cluster = self._take()
        try:
            result = getattr(getattr(cluster, service), method)(*args, **kwargs)
        except RemoteError:
            self._give_back(proxy, cluster)
            raise
        except BaseException:
            _stop_quietly(proxy)
            raise
        self._give_back(proxy, cluster)
        return result

    def close(self) -> None:
        """Close every idle proxy; one in use is closed when it comes back."""
        with self._lock:
            idle, self._idle, self.size = self._idle, [], 0
        for proxy, _, _ in idle:
            _stop_quietly(proxy)

    def _take(self) -> tuple[ServiceRpcProxy, Any]:
        while True:
            with self._lock:
                kept = self._idle.pop() if self._idle else None
                if kept is None:
                    self.opened += 1
                    break
            proxy, cluster, returned = kept
            if time.monotonic() - returned < self.check_after or _still_connected(proxy):
                return proxy, cluster
            _stop_quietly(proxy)
        proxy = ServiceRpcProxy(self.service_name, self.config, timeout=self.timeout)
        return proxy, proxy.start()

    def _give_back(self, proxy: ServiceRpcProxy, cluster: Any) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append((proxy, cluster, time.monotonic()))
                return
        _stop_quietly(proxy)


def _still_connected(proxy: ServiceRpcProxy) -> bool:
    """Whether a kept proxy's reply connection is still up: a read that waits for nothing.

    A connection the broker closed fails the read at once (tens of
    microseconds); a live one times out at once, having nothing to read.
    """
    connection = proxy._reply_listener.queue_consumer.connection
    try:
        connection.drain_events(timeout=0)
    except TimeoutError:
        return True
    except Exception:  # noqa: BLE001 - any failure means: open another
        return False
    return True


def _stop_quietly(proxy: ServiceRpcProxy) -> None:
    """Close a proxy whose connection may already be gone."""
    try:
        proxy.stop()
    except Exception as exc:  # noqa: BLE001 - closing what the broker already closed
        log.debug("closing an RPC proxy: %s", exc.__class__.__name__)


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
