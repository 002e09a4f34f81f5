"""Consuming events reliably: retries with back-off, a dead-letter queue, idempotence.

nameko's stock ``event_handler`` acks a message whose handler raised, and the
event is gone; with ``requeue_on_error`` it redelivers in a hot loop. Here a
failed delivery is republished to a per-service delay queue (one per back-off
step, a fanout exchange whose queue has a TTL and dead-letters back to the
original queue through the default exchange) and only then acked. After the
last step it goes to ``<service>.dead-letters`` with the error in its headers,
where an operator can list and replay it (``shequ deadletters``).

Republish-then-ack means a crash in between yields a duplicate, never a loss;
``idempotent`` handlers absorb the duplicate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial, wraps
from typing import Any, TypeVar

import amqp.exceptions
import kombu
import kombu.exceptions
import kombu.serialization
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import SharedExtension
from nameko.messaging import QueueConsumer
from pymongo.errors import ConnectionFailure

from shequ.contracts import CloudEvent, EnvelopeError, parse_event
from shequ.contracts.envelope import CONTENT_TYPE
from shequ.errors import PoisonMessage
from shequ.faults import fault_point
from shequ.metrics import DEAD_LETTERS, EVENT_HANDLE_SECONDS, EVENT_LAG_SECONDS, EVENT_RETRIES
from shequ.startup import wait_through
from shequ.store import AlreadyProcessed

#: What a publish or an ack raises when the broker connection is gone.
BROKER_GONE = (kombu.exceptions.OperationalError, amqp.exceptions.AMQPError, OSError)

log = logging.getLogger(__name__)
T = TypeVar("T")

SERIALIZER = "cloudevents"
DEFAULT_RETRY_DELAYS_MS = (1000, 5000, 30000)

ATTEMPTS_HEADER = "x-shequ-attempts"
ERROR_HEADER = "x-shequ-error"
QUEUE_HEADER = "x-shequ-queue"
HANDLER_HEADER = "x-shequ-handler"
FAILED_AT_HEADER = "x-shequ-failed-at"

kombu.serialization.register(
    SERIALIZER,
    lambda obj: json.dumps(obj, ensure_ascii=False),
    json.loads,
    content_type=CONTENT_TYPE,
    content_encoding="utf-8",
)


def event_queue_name(source_service: str, event_name: str, service: str, method: str) -> str:
    """nameko's queue name for a service-pool event handler (kept for compatibility)."""
    return f"evt-{source_service}-{event_name}--{service}.{method}"


def dead_letter_queue_name(service: str) -> str:
    return f"{service}.dead-letters"


def retry_exchange_name(service: str, delay_ms: int) -> str:
    return f"{service}.retry.{delay_ms}ms"


def retry_delays(config: dict[str, Any]) -> tuple[int, ...]:
    delays = config.get("EVENT_RETRY_DELAYS_MS") or DEFAULT_RETRY_DELAYS_MS
    return tuple(int(delay) for delay in delays)


def handler_queue_arguments(config: Mapping[str, Any], service: str) -> dict[str, Any]:
    """The arguments every handler queue of ``service`` is declared with.

    ``QUEUE_TYPE: quorum`` (production) makes them replicated quorum queues
    whose broker-side delivery limit catches what the runtime's own retries
    cannot: a message that kills its consumer before the ack, every time.
    After ``QUEUE_DELIVERY_LIMIT`` such deliveries it is dead-lettered to the
    service's dead-letter queue. Classic queues (the default, for the
    embedded single node) take no arguments. Producers' topology and the
    consumers must agree, so both call this.
    """
    if str(config.get("QUEUE_TYPE") or "classic") != "quorum":
        return {}
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": int(config.get("QUEUE_DELIVERY_LIMIT") or 5),
        "x-dead-letter-exchange": dead_letter_queue_name(service),
    }


def declare_service_queues(channel: Any, service: str, delays: Iterable[int]) -> None:
    """Declare a service's dead-letter queue and its back-off delay queues."""
    dlq = dead_letter_queue_name(service)
    kombu.Queue(dlq, exchange=kombu.Exchange(dlq, type="fanout", durable=True), durable=True)(
        channel
    ).declare()
    for delay in delays:
        name = retry_exchange_name(service, delay)
        kombu.Queue(
            name,
            exchange=kombu.Exchange(name, type="fanout", durable=True),
            durable=True,
            queue_arguments={"x-message-ttl": delay, "x-dead-letter-exchange": ""},
        )(channel).declare()


def verify_service_queues(channel: Any, service: str, delays: Iterable[int]) -> None:
    """Check, without declaring, that those queues and exchanges exist (else ``NotFound``)."""
    for name in (
        dead_letter_queue_name(service),
        *(retry_exchange_name(service, d) for d in delays),
    ):
        channel.exchange_declare(name, "fanout", passive=True)
        channel.queue_declare(name, passive=True)


def verify_or_declare(
    amqp_uri: str, verify: Callable[[Any], None], declare: Callable[[Any], None]
) -> None:
    """Check passively that something exists; declare it only when it does not.

    A passive check needs no permission; declaring does. A service on its
    own broker account lacks some of it on purpose: a delay queue
    dead-letters through the default exchange, and creating one needs write
    there, which would let the service publish into any queue; declaring an
    exchange needs configure on it, even when it exists, and the source
    exchanges of its handlers are other services'. The stack and ``shequ
    init`` declare all of that first as the administrator, so the service
    only finds it; a service alone on an administrator's account (tests, a
    single process) declares it here as before.
    """
    try:
        with kombu.Connection(amqp_uri) as connection:
            verify(connection.default_channel)
        return
    except amqp.exceptions.ChannelError as exc:
        # NotFound from RabbitMQ; kombu's in-memory transport says 404 plainly.
        if str(exc.reply_code or getattr(exc, "code", "")) != "404":
            raise
    try:
        with kombu.Connection(amqp_uri) as connection:
            declare(connection.default_channel)
    except amqp.exceptions.AccessRefused as exc:
        raise RuntimeError(
            f"the broker topology is missing and this service's account may not declare it "
            f"({exc}); run `shequ init` (or start through `shequ up`) first"
        ) from exc


#: Held by the one start-up step that waits for the broker (``broker_at_start``).
_BROKER_WAIT = threading.Lock()


def broker_away(exc: Exception) -> bool:
    """Whether ``exc`` says the broker could not be reached, not that it refused what was asked.

    A closed port or a broker shutting down, not a refused login or a
    missing exchange: waiting would not change those.
    """
    return isinstance(
        exc,
        (kombu.exceptions.OperationalError, OSError, amqp.exceptions.RecoverableConnectionError),
    )


def broker_at_start(config: Mapping[str, Any], step: Callable[[], T], what: str) -> T:
    """Run a start-up ``step`` that needs the broker, waiting for the broker if it is away.

    For up to ``AMQP_START_TIMEOUT_SECONDS`` (``shequ.startup.wait_through``).
    The steps that declare or find the topology run in nameko's setup phase,
    before the web server starts, so meanwhile the process does not answer
    ``/healthz``; Kubernetes' start-up probe bounds the wait there
    (docs/deploy.md). nameko sets up every handler at once; once the broker
    is found away, one step waits (and logs) at a time, the others following
    once it is back, so a service with thirty handlers logs one wait, not
    thirty.
    """
    try:
        return step()
    except Exception as exc:
        if not broker_away(exc):
            raise
    with _BROKER_WAIT:
        return wait_through(
            step,
            away=broker_away,
            server="the broker",
            what=what,
            timeout=float(config.get("AMQP_START_TIMEOUT_SECONDS") or 300),
        )


class FailurePublisher(SharedExtension):
    """One confirmed-publish connection per container for retries and dead letters."""

    def setup(self) -> None:
        config = self.container.config
        self.amqp_uri = config[AMQP_URI_CONFIG_KEY]
        self.delays = retry_delays(config)
        self.service = self.container.service_name
        self._connection: kombu.Connection | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        broker_at_start(
            self.container.config,
            partial(
                verify_or_declare,
                self.amqp_uri,
                partial(verify_service_queues, service=self.service, delays=self.delays),
                partial(declare_service_queues, service=self.service, delays=self.delays),
            ),
            "finding its retry and dead-letter queues",
        )

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None

    def republish(self, message: Any, exchange: str, routing_key: str, headers: dict) -> None:
        with self._lock:
            self._republish(message, exchange, routing_key, headers)

    def _republish(self, message: Any, exchange: str, routing_key: str, headers: dict) -> None:
        if self._connection is None:
            self._connection = kombu.Connection(
                self.amqp_uri, transport_options={"confirm_publish": True}
            )
        producer = kombu.Producer(self._connection.default_channel)
        try:
            producer.publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers=headers,
                delivery_mode=2,
                message_id=message.properties.get("message_id"),
                retry=False,
            )
        except Exception:
            self._connection.release()
            self._connection = None
            raise


class TrackedQueueConsumer(QueueConsumer):
    """nameko's queue consumer, remembering whether it is consuming right now.

    ``/readyz`` reads ``consuming``: a service whose broker connection dropped
    is alive but not ready.
    """

    consuming = False

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kw: Any) -> None:
        self.consuming = True
        super().on_consume_ready(connection, channel, consumers, **kw)

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.consuming = False
        super().on_connection_error(exc, interval)

    def stop(self) -> None:
        self.consuming = False
        super().stop()

    def ack_message(self, message: Any) -> None:
        self._settle(super().ack_message, message, "acknowledge")

    def requeue_message(self, message: Any) -> None:
        self._settle(super().requeue_message, message, "return")

    def _settle(self, settle: Callable[[Any], None], message: Any, what: str) -> None:
        """Ack or requeue; on a lost broker connection, leave the message to the broker.

        Stock nameko acks from the worker's ``handle_result``, where an
        exception kills the whole container, so a broker restart at the
        moment a handler finished took the service down with it (the fault
        suite's broker restart found it). The broker gives an unacknowledged
        message to the next consumer when the connection goes, and the
        handler's processed mark makes that delivery a no-op.
        """
        try:
            settle(message)
        except BROKER_GONE as exc:
            log.warning(
                "could not %s a message, the broker connection is gone (%s): "
                "the broker delivers it again",
                what,
                type(exc).__name__,
            )

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu logs an undecodable body and acks it: a silent loss. Dead-letter it instead."""
        tag = message.delivery_info.get("consumer_tag")
        for provider, consumer in self._consumers.items():
            if tag in getattr(consumer, "_active_tags", {}).values() and isinstance(
                provider, ReliableEventHandler
            ):
                provider.dead_letter_undecodable(message, exc)
                return
        log.error("an undecodable message on an unknown consumer (%s); returning it", tag)
        self.requeue_message(message)


class ReliableEventHandler(EventHandler):
    """An ``event_handler`` whose failures are retried with back-off, then dead-lettered.

    Also measures every delivery: handling time by outcome, and lag from the
    event's own time to the end of its handling.
    """

    failures = FailurePublisher()
    queue_consumer = TrackedQueueConsumer()

    def setup(self) -> None:
        super().setup()
        exchange = self.queue.exchange
        broker_at_start(
            self.container.config,
            partial(
                verify_or_declare,
                self.container.config[AMQP_URI_CONFIG_KEY],
                lambda channel: channel.exchange_declare(
                    exchange.name, exchange.type, passive=True
                ),
                lambda channel: exchange(channel).declare(),
            ),
            f"finding the exchange {exchange.name}",
        )
        # Found or made: the queue consumer need not declare the source's
        # exchange again (a service's own account may not; see verify_or_declare).
        self.queue = kombu.Queue(
            self.queue.name,
            exchange=kombu.Exchange(
                exchange.name, type=exchange.type, durable=True, no_declare=True
            ),
            routing_key=self.queue.routing_key,
            durable=True,
            queue_arguments=handler_queue_arguments(
                self.container.config, self.container.service_name
            ),
        )

    def handle_message(self, body: Any, message: Any) -> None:
        fault_point(self.container.service_name, "before_handler")
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self.handle_result, message, time.monotonic(), body)
        try:
            self.container.spawn_worker(
                self, (body,), {}, context_data=context_data, handle_result=handle_result
            )
        except ContainerBeingKilled:
            # Shutting down: the broker redelivers it to whoever consumes next.
            self.queue_consumer.requeue_message(message)

    def handle_result(  # type: ignore[override]
        self,
        message: Any,
        started: float,
        body: Any,
        worker_ctx: Any,
        result: Any = None,
        exc_info: Any = None,
    ) -> tuple[Any, Any]:
        service = self.container.service_name
        outcome = "success" if exc_info is None else "error"
        EVENT_HANDLE_SECONDS.labels(service, self.method_name, self.event_type, outcome).observe(
            time.monotonic() - started
        )
        if exc_info is None:
            self._observe_lag(service, body)
            fault_point(service, "after_commit")
            self.queue_consumer.ack_message(message)
        else:
            self._handle_failure(message, exc_info)
        return result, exc_info

    def dead_letter_undecodable(self, message: Any, exc: Exception) -> None:
        poison = PoisonMessage(f"the body is not JSON: {exc}")
        self._handle_failure(message, (PoisonMessage, poison, None))

    def _observe_lag(self, service: str, body: Any) -> None:
        try:
            sent = datetime.fromisoformat(body["time"])
        except (TypeError, KeyError, ValueError):
            return
        lag = (datetime.now(UTC) - sent).total_seconds()
        EVENT_LAG_SECONDS.labels(service, self.method_name, self.event_type).observe(max(lag, 0))

    def _handle_failure(self, message: Any, exc_info: Any) -> None:
        service = self.container.service_name
        headers = dict(message.headers or {})
        exc = exc_info[1]
        delays = self.failures.delays
        poison = isinstance(exc, PoisonMessage | EnvelopeError)
        # The store being unreachable says nothing about the message: wait
        # for it without using up the message's attempts (an outage longer
        # than the back-off must not dead-letter good events).
        outage = isinstance(exc, ConnectionFailure) and bool(delays)
        attempts = int(headers.get(ATTEMPTS_HEADER, 0)) + (0 if outage else 1)
        headers[ATTEMPTS_HEADER] = attempts
        try:
            if outage:
                delay = delays[0]
                log.warning(
                    "%s.%s could not reach the store, retrying in %d ms: %s",
                    service, self.method_name, delay, type(exc).__name__,
                )  # fmt: skip
                self.failures.republish(
                    message, retry_exchange_name(service, delay), self.queue.name, headers
                )
                EVENT_RETRIES.labels(service, self.method_name, self.event_type).inc()
            elif not poison and attempts <= len(delays):
                delay = delays[attempts - 1]
                log.warning(
                    "%s.%s failed on attempt %d, retrying in %d ms: %s",
                    service, self.method_name, attempts, delay, type(exc).__name__,
                )  # fmt: skip
                self.failures.republish(
                    message, retry_exchange_name(service, delay), self.queue.name, headers
                )
                EVENT_RETRIES.labels(service, self.method_name, self.event_type).inc()
            else:
                reason = "poison" if poison else "retries_exhausted"
                headers[ERROR_HEADER] = _describe(exc)[:2000]
                headers[QUEUE_HEADER] = self.queue.name
                headers[HANDLER_HEADER] = f"{service}.{self.method_name}"
                headers[FAILED_AT_HEADER] = datetime.now(UTC).isoformat()
                log.error(
                    "%s.%s gave up after %d attempts (%s); moved to %s",
                    service, self.method_name, attempts, reason, dead_letter_queue_name(service),
                )  # fmt: skip
                self.failures.republish(
                    message, dead_letter_queue_name(service), self.queue.name, headers
                )
                DEAD_LETTERS.labels(service, self.method_name, self.event_type, reason).inc()
        except Exception:
            # Could not park the message anywhere: leave it with the broker.
            log.exception("could not schedule a retry; returning the message to its queue")
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{frame.name}:{frame.lineno}" for frame in frames)
    return f"{type(exc).__name__}: {exc} [{where}]"


event_handler = ReliableEventHandler.decorator


def idempotent(repository: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make an event handler's effects happen exactly once per event id.

    The wrapped method receives the parsed ``CloudEvent`` instead of the raw
    body. Its writes, made through the service repository named by
    ``repository``, and the handler's "processed" mark commit in one
    transaction: a redelivered event finds the mark and changes nothing; a
    handler that fails leaves no mark and no partial effects.
    """

    def decorator(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def wrapper(self: Any, body: Any) -> Any:
            try:
                event: CloudEvent = parse_event(body)
            except EnvelopeError as exc:
                raise PoisonMessage(str(exc)) from exc
            repo = getattr(self, repository)
            repo.actor = {"event_id": event.id, "source": event.source, "type": event.type}
            repo.action = event.type

            def work() -> Any:
                repo.mark_processed(method.__name__, event)
                result = method(self, event)
                fault_point(repo.service, "in_transaction")
                return result

            try:
                return repo.run_in_transaction(work)
            except AlreadyProcessed:
                log.info("%s skipped redelivered event %s", method.__name__, event.id)
                return None

        return wrapper

    return decorator
