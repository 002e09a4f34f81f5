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
from typing import Any

import amqp.exceptions
import kombu.exceptions
from nameko.rpc import Rpc

log = logging.getLogger(__name__)

#: What a publish or an ack raises when the broker connection is gone.
BROKER_GONE = (kombu.exceptions.OperationalError, amqp.exceptions.AMQPError, OSError)


class ResilientRpc(Rpc):
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
