"""Integration tests of shequ.embedded: the private servers behind the dev stack and tests.

They boot the real RabbitMQ and SecantusDB, because what matters is how those
behave as child processes: loopback-only ports, data kept across restarts,
side-by-side nodes, and nothing left running after stop(). RabbitMQ boots are
the expensive part, so the file boots a node three times in all: the first
test seeds a data dir that the restart test reuses, and the side-by-side test
runs next to that restarted node.
"""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import sys
import time
import urllib.request

import pika
import pymongo
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from shequ import embedded
from shequ.embedded import EmbeddedError, RabbitMQNode, SecantusServer

pytestmark = pytest.mark.integration

SURVIVOR_QUEUE = "embedded.survivor"
SURVIVOR_BODY = b"still here after a restart"


def _processes_of(node: RabbitMQNode) -> list[str]:
    """Live processes belonging to ``node``: its name in the command line or environment.

    The environment catches the private epmd, whose command line does not
    name the node.
    """
    name = node.node_name.encode()
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if name in cmdline or b"RABBITMQ_NODENAME=" + name in environ.split(b"\0"):
            args = cmdline.replace(b"\0", b" ")[:120]
            found.append(f"{proc.name}: {args!r}")
    return found


def _assert_nothing_left(node: RabbitMQNode, ports: list[int]) -> None:
    """No process of ``node`` survives and none of its ports still listens (bounded poll)."""
    deadline = time.monotonic() + 5
    while True:
        left = _processes_of(node)
        listening = [p for p in ports if _accepts(p)]
        if not left and not listening:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind after stop: processes {left}, listening ports {listening}")
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _listen_addresses(port: int) -> set[str]:
    """Hex local addresses of listening TCP sockets on ``port`` (from /proc/net)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                addresses.add(address)
    return addresses


def _ports(node: RabbitMQNode) -> list[int]:
    ports = [node.amqp_port, node.management_port, node.dist_port, node.epmd_port]
    assert None not in ports, "the node was never started"
    return [p for p in ports if p is not None]


def _channel(node: RabbitMQNode) -> tuple[pika.BlockingConnection, BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(node.amqp_uri))
    return connection, connection.channel()


def _seed_survivor(node: RabbitMQNode) -> None:
    """Leave a persistent message in a durable queue, confirmed by the broker."""
    connection, channel = _channel(node)
    try:
        channel.confirm_delivery()
        channel.queue_declare(SURVIVOR_QUEUE, durable=True)
        channel.basic_publish(
            "",
            SURVIVOR_QUEUE,
            SURVIVOR_BODY,
            pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )
    finally:
        connection.close()


@pytest.fixture(scope="module")
def shared_rabbit_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("rabbit-shared")


@pytest.fixture(scope="module")
def restarted_node(shared_rabbit_dir: pathlib.Path):
    """The node of ``shared_rabbit_dir`` started again, after the first test seeded it.

    Seeds the dir itself (one extra boot) when the first test did not run.
    """
    if not (shared_rabbit_dir / "seeded").exists():
        with RabbitMQNode(shared_rabbit_dir) as node:
            _seed_survivor(node)
    node = RabbitMQNode(shared_rabbit_dir)
    node.start()
    yield node
    ports = _ports(node)
    node.stop()
    _assert_nothing_left(node, ports)


def test_a_rabbitmq_node_starts_on_free_loopback_ports_confirms_publishes_and_stops_cleanly(
    shared_rabbit_dir: pathlib.Path,
) -> None:
    node = RabbitMQNode(shared_rabbit_dir)
    with node:
        ports = _ports(node)
        assert len(set(ports)) == 4
        assert node.amqp_uri == f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/"
        for port in ports:
            assert _listen_addresses(port) <= {"0100007F", "00000000000000000000000001000000"}
            assert "0100007F" in _listen_addresses(port)

        connection, channel = _channel(node)
        try:
            channel.confirm_delivery()
            queue = channel.queue_declare("", exclusive=True).method.queue
            for i in range(3):
                # With confirms on, basic_publish raises unless the broker acks it.
                channel.basic_publish("", queue, f"m{i}".encode(), mandatory=True)
            bodies = []
            for method, _props, body in channel.consume(queue, inactivity_timeout=5):
                assert method is not None, "timed out waiting for a message"
                channel.basic_ack(method.delivery_tag)
                bodies.append(body)
                if len(bodies) == 3:
                    break
            channel.cancel()
            assert bodies == [b"m0", b"m1", b"m2"]
        finally:
            connection.close()

        request = urllib.request.Request(f"{node.management_url}/api/overview")  # noqa: S310
        auth = base64.b64encode(b"guest:guest").decode()
        request.add_header("Authorization", f"Basic {auth}")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            assert json.load(response)["node"] == node.node_name

        _seed_survivor(node)
        assert node.pid is not None and node.log_dir.is_dir()

    assert node.pid is None
    _assert_nothing_left(node, ports)
    node.stop()  # idempotent
    (shared_rabbit_dir / "seeded").touch()


def test_a_durable_queue_with_a_persistent_message_survives_a_restart_of_the_same_data_dir(
    restarted_node: RabbitMQNode,
) -> None:
    connection, channel = _channel(restarted_node)
    try:
        method, _props, body = channel.basic_get(SURVIVOR_QUEUE, auto_ack=False)
        assert method is not None, "the persistent message did not survive the restart"
        assert body == SURVIVOR_BODY
        channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()


def test_two_nodes_with_different_data_dirs_run_side_by_side(
    restarted_node: RabbitMQNode, tmp_path: pathlib.Path
) -> None:
    with RabbitMQNode(tmp_path / "second") as second:
        assert second.node_name != restarted_node.node_name
        assert not set(_ports(second)) & set(_ports(restarted_node))

        connection, channel = _channel(second)
        try:
            # The second node has its own data: the first node's queue is unknown here.
            with pytest.raises(pika.exceptions.ChannelClosedByBroker):
                channel.queue_declare(SURVIVOR_QUEUE, passive=True)
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare("only.on.second", durable=True)
            channel.basic_publish("", "only.on.second", b"x", mandatory=True)
        finally:
            connection.close()

        connection, channel = _channel(restarted_node)
        try:
            assert channel.queue_declare(SURVIVOR_QUEUE, passive=True).method.message_count == 1
            with pytest.raises(pika.exceptions.ChannelClosedByBroker):
                channel.queue_declare("only.on.second", passive=True)
        finally:
            connection.close()
        second_ports = _ports(second)

    _assert_nothing_left(second, second_ports)
    assert restarted_node.running


def test_a_secantus_server_starts_supports_a_multi_document_transaction_and_stops(
    tmp_path: pathlib.Path,
) -> None:
    server = SecantusServer(tmp_path / "secantus")
    with server:
        assert server.mongo_uri.endswith("/?directConnection=true&retryWrites=false")
        with pytest.raises(EmbeddedError, match="already in use"):
            SecantusServer(tmp_path / "secantus").start()
        client: pymongo.MongoClient = pymongo.MongoClient(
            server.mongo_uri, serverSelectionTimeoutMS=5000
        )
        try:
            # Retryable writes are off on the embedded store (SecantusServer.uri_for).
            assert client.options.retry_writes is False
            db = client.shequ_test
            db.create_collection("cases")
            db.create_collection("events")
            with client.start_session() as session:
                with session.start_transaction():
                    db.cases.insert_one({"_id": 1, "state": "open"}, session=session)
                    db.events.insert_one({"case": 1, "kind": "opened"}, session=session)
                with pytest.raises(RuntimeError, match="abort"):
                    with session.start_transaction():
                        db.cases.insert_one({"_id": 2, "state": "open"}, session=session)
                        raise RuntimeError("abort this one")
            assert [d["_id"] for d in db.cases.find()] == [1]
            assert db.events.count_documents({"case": 1}) == 1
        finally:
            client.close()
        proc, port = server._proc, server.port
        assert proc is not None and port is not None

    assert proc.poll() is not None
    assert not _accepts(port)
    assert (tmp_path / "secantus" / "store").is_dir()
    server.stop()  # idempotent


def test_a_missing_rabbitmq_binary_raises_a_clear_embedded_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "RABBITMQ_BIN_DIR", tmp_path / "no-rabbitmq")
    with pytest.raises(EmbeddedError, match=r"apt-get install rabbitmq-server"):
        RabbitMQNode(tmp_path / "data").start()
    assert not (tmp_path / "data").exists()


def test_a_missing_secantusd_script_raises_a_clear_embedded_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(EmbeddedError, match=r"pip install SecantusDB"):
        SecantusServer(tmp_path / "data").start()
