"""``RpcProxyPool`` against a real RabbitMQ: proxies kept open, closed when in doubt.

The server here is a plain pika consumer answering nameko's RPC wire format
(a JSON ``{"result", "error"}`` reply to the request's ``reply_to``, with
its correlation id), so the pool is tested on its own, without a service
container, on a broker of its own that a test may restart.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from nameko.exceptions import RemoteError, RpcTimeout

from shequ import rpc as rpc_module
from shequ.embedded import RabbitMQNode
from shequ.rpc import RpcProxyPool
from shequ.topology import RPC_EXCHANGE
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SERVICE = "pooltarget"


class Server(threading.Thread):
    """Answers ``pooltarget.echo`` with its argument, ``pooltarget.fail`` with a
    remote error, and never answers ``pooltarget.ignore``; reconnects after a
    broker restart."""

    def __init__(self, amqp_uri: str) -> None:
        super().__init__(daemon=True)
        self.amqp_uri = amqp_uri
        self.stopping = threading.Event()
        self.consuming = threading.Event()
        self.asked = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._serve()
            except pika.exceptions.AMQPError:
                self.consuming.clear()
                self.stopping.wait(0.2)

    def _serve(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_uri))
        try:
            channel = connection.channel()
            channel.exchange_declare(RPC_EXCHANGE, "topic", durable=True)
            channel.queue_declare(f"rpc-{SERVICE}", durable=True)
            channel.queue_bind(f"rpc-{SERVICE}", RPC_EXCHANGE, f"{SERVICE}.*")
            self.consuming.set()
            while not self.stopping.is_set():
                method, properties, body = channel.basic_get(f"rpc-{SERVICE}", auto_ack=True)
                if method is None:
                    connection.sleep(0.02)
                    continue
                self.asked += 1
                reply = self._answer(method.routing_key.split(".", 1)[1], json.loads(body))
                if reply is not None:
                    channel.basic_publish(
                        RPC_EXCHANGE,
                        properties.reply_to,
                        json.dumps(reply).encode(),
                        pika.BasicProperties(
                            correlation_id=properties.correlation_id,
                            content_type="application/json",
                        ),
                    )
        finally:
            if connection.is_open:
                connection.close()

    @staticmethod
    def _answer(method: str, request: dict[str, Any]) -> dict[str, Any] | None:
        if method == "echo":
            return {"result": request["args"][0], "error": None}
        if method == "fail":
            error = {"exc_type": "ValueError", "exc_path": "builtins.ValueError",
                     "exc_args": ["no"], "value": "no"}  # fmt: skip
            return {"result": None, "error": error}
        return None


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    node = RabbitMQNode(Path(tmp_path_factory.mktemp("rpc-pool")) / "rabbitmq")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def server(broker: RabbitMQNode) -> Iterator[Server]:
    running = Server(broker.amqp_uri)
    running.start()
    wait_for(running.consuming.is_set, timeout=30, what="the test RPC server consuming")
    yield running
    running.stopping.set()
    running.join(timeout=10)


@pytest.fixture
def pool(broker: RabbitMQNode) -> Iterator[RpcProxyPool]:
    made = RpcProxyPool("caller", {"AMQP_URI": broker.amqp_uri}, timeout=5, size=2)
    yield made
    made.close()


def test_one_proxy_answers_one_caller_after_another(server: Server, pool: RpcProxyPool) -> None:
    assert [pool.call(SERVICE, "echo", n) for n in range(5)] == list(range(5))
    assert pool.opened == 1


def test_callers_at_once_each_get_their_own_answer(server: Server, pool: RpcProxyPool) -> None:
    answers: dict[int, Any] = {}

    def ask(n: int) -> None:
        answers[n] = [pool.call(SERVICE, "echo", f"{n}-{k}") for k in range(3)]

    callers = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    assert answers == {n: [f"{n}-{k}" for k in range(3)] for n in range(4)}
    # Never more open than callers at once, and at most ``size`` kept afterwards.
    assert 1 <= pool.opened <= 4
    assert pool.call(SERVICE, "echo", "again") == "again"


def test_a_remote_error_is_raised_and_the_proxy_kept(server: Server, pool: RpcProxyPool) -> None:
    with pytest.raises(RemoteError, match="no"):
        pool.call(SERVICE, "fail")
    assert pool.call(SERVICE, "echo", 1) == 1
    assert pool.opened == 1


def test_a_proxy_that_timed_out_is_closed_not_kept(broker: RabbitMQNode, server: Server) -> None:
    quick = RpcProxyPool("caller", {"AMQP_URI": broker.amqp_uri}, timeout=0.5)
    try:
        with pytest.raises(RpcTimeout):
            quick.call(SERVICE, "ignore")
        assert quick.call(SERVICE, "echo", "after") == "after"
        assert quick.opened == 2
    finally:
        quick.close()


def test_a_kept_proxy_answers_after_the_broker_restarts(
    broker: RabbitMQNode, server: Server, pool: RpcProxyPool
) -> None:
    assert pool.call(SERVICE, "echo", "before") == "before"
    broker.restart()
    wait_for(server.consuming.is_set, timeout=60, what="the test RPC server back")
    assert pool.call(SERVICE, "echo", "after") == "after"
    # The kept proxy's connection went with the broker: it was closed when
    # taken and another opened, rather than sending into a lost reply queue.
    assert pool.opened == 2


def test_a_proxy_is_checked_only_after_it_has_been_idle_a_while(
    server: Server, pool: RpcProxyPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check lets every other green thread run first, so a proxy just
    given back is trusted; one idle for ``check_after`` is checked again."""
    checked: list[object] = []
    really_connected = rpc_module._still_connected

    def counted(proxy: object) -> bool:
        checked.append(proxy)
        return really_connected(proxy)

    monkeypatch.setattr(rpc_module, "_still_connected", counted)
    pool.check_after = 3600.0
    assert [pool.call(SERVICE, "echo", n) for n in range(3)] == [0, 1, 2]
    assert checked == []
    pool.check_after = 0.0
    assert pool.call(SERVICE, "echo", "again") == "again"
    assert len(checked) == 1
    assert pool.opened == 1
