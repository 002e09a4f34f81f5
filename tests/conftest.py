"""Shared fixtures: the real servers and the running platform, started once per session.

Three levels, each runnable alone:

* ``tests/unit``: pure logic, no servers, seconds.
* ``tests/integration``: runtime pieces against a real RabbitMQ node and a
  real SecantusDB server that this file starts on free loopback ports in a
  temporary directory (``servers``).
* ``tests/e2e``: the whole platform (every service in its own process and the
  front door) on those servers, driven through HTTP (``platform``).

pytest itself is not eventlet-patched: services always run in their own
processes (``python -m shequ.runner``), exactly as in production, so tests
can kill one service alone. Nothing here sleeps a fixed time; ``wait_for``
polls a condition with a bound.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pymongo
import pytest
import requests

from shequ.auth import mint_token
from shequ.embedded import RabbitMQNode, SecantusServer, free_port
from shequ.stack import Stack
from shequ_services.disclosure import checkpoint as disclosure_keys

T = TypeVar("T")
#: The name of the session platform's disclosure witness.
WITNESS = "test-witness"


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``.

    ``what`` may be a callable, asked only on failure, so the message can say
    what the last poll saw.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout} s waiting for {said or condition}")
        time.sleep(interval)


@dataclass
class Servers:
    amqp_uri: str
    mongo_uri: str
    management_url: str

    def mongo(self) -> pymongo.MongoClient[Any]:
        return pymongo.MongoClient(self.mongo_uri, tz_aware=True)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("servers")
    rabbit = RabbitMQNode(root / "rabbitmq")
    store = SecantusServer(root / "secantus")
    rabbit.start()
    try:
        store.start()
        try:
            yield Servers(rabbit.amqp_uri, store.mongo_uri, rabbit.management_url)
        finally:
            store.stop()
    finally:
        rabbit.stop()


@dataclass
class Platform:
    """A running stack and what tests need to talk to it."""

    stack: Stack
    servers: Servers
    db_prefix: str
    #: The private key of the disclosure log's one configured witness (base64).
    witness_key: str = ""

    @property
    def url(self) -> str:
        return self.stack.url

    def token(
        self, *roles: str, sub: str = "tester", communities: tuple[str, ...] = (), **claims: Any
    ) -> str:
        return mint_token(
            self.stack.jwt_secret(), roles=roles, sub=sub, communities=communities, **claims
        )

    def session(self, *roles: str, **claims: Any) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token(*roles, **claims)}"
        return session

    def db(self, service: str) -> Any:
        return self.servers.mongo()[f"{self.db_prefix}{service}"]


def stack_on(
    servers: Servers,
    data_dir: Path,
    *,
    services: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Stack:
    """A stack on the session's servers with its own database prefix (not started).

    The prefix separates databases, not queues: consumers of an event type share
    one queue per handler on the session's broker. So a second stack here runs
    services that consume nothing the session's ``platform`` also produces while
    they run (the grid alone, whose one subscription is mediation's
    ``case.closed``; a test service); one that needs every service gets servers
    of its own, as ``tests/e2e/test_demo.py`` does.
    """
    return Stack(
        data_dir,
        port=free_port(),
        services=services,
        amqp_uri=servers.amqp_uri,
        mongo_uri=servers.mongo_uri,
        # Each service connects as its own broker user, as in production.
        management_url=servers.management_url,
        extra_env={
            "SHEQU_MONGO_DATABASE_PREFIX": f"t{uuid.uuid4().hex[:8]}_",
            # Short back-offs keep the dead-letter tests quick; the rule is the same.
            "SHEQU_RETRY_DELAYS_MS": "[100, 300]",
            "SHEQU_OUTBOX_POLL_SECONDS": "0.2",
            # Notify: a quick delivery worker, short retry schedules, and the
            # tests' own http endpoints on loopback.
            "SHEQU_NOTIFY_DELIVER_SECONDS": "0.2",
            # Rule, template and subscription changes made through notify's
            # API must count at once, not when the kept routing ages out.
            "SHEQU_NOTIFY_ROUTING_MAX_AGE_SECONDS": "3600",
            "SHEQU_NOTIFY_ALLOW_HTTP_LOOPBACK": "true",
            "SHEQU_NOTIFY_RETRY_BASE_SECONDS": "0.2",
            "SHEQU_NOTIFY_RETRY_MAX_DELAY_SECONDS": "1",
            "SHEQU_NOTIFY_RETRY_HORIZON_SECONDS": "4",
            "SHEQU_NOTIFY_SUBSCRIPTION_RETRY_BASE_SECONDS": "0.2",
            "SHEQU_NOTIFY_SUBSCRIPTION_RETRY_MAX_DELAY_SECONDS": "1",
            "SHEQU_NOTIFY_SUBSCRIPTION_RETRY_HORIZON_SECONDS": "4",
            # Every test posts from loopback: the per-client limit on public
            # writes is lifted, except in the tests of the limit itself.
            "SHEQU_RATE_LIMIT_PER_MINUTE": "60000",
            "SHEQU_RATE_LIMIT_BURST": "10000",
            **(env or {}),
        },
    )


@pytest.fixture(scope="session")
def platform(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    witness_key = disclosure_keys.new_private_key()
    witness_public = disclosure_keys.public_key_of(disclosure_keys.load_private_key(witness_key))
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("platform"),
        env={
            "SHEQU_DISCLOSURE_WITNESSES": f"{WITNESS}={disclosure_keys.b64(witness_public)}",
            # Checkpoints come on demand in tests; the schedule is the same code.
            "SHEQU_DISCLOSURE_CHECKPOINT_SECONDS": "3600",
        },
    )
    stack.start()
    try:
        yield Platform(stack, servers, stack.extra_env["SHEQU_MONGO_DATABASE_PREFIX"], witness_key)
    finally:
        stack.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
