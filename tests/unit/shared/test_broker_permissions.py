"""Each service's broker permissions, derived from its class, admit its own resources only.

RabbitMQ matches a permission regex against the whole resource name with
``re:run``; the regexes here are anchored, so Python's ``re.search`` sees the
same thing. tests/integration/test_broker_accounts.py checks them on a
real broker.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from shequ.discovery import discover_services, load_service
from shequ.events import dead_letter_queue_name, retry_exchange_name
from shequ.rpc import ServiceRpcProxy, rpc_calls
from shequ.topology import (
    RPC_EXCHANGE,
    BrokerUse,
    Subscription,
    broker_permissions,
    broker_use,
)

USES = {name: broker_use(load_service(name)) for name in sorted(discover_services())}
PERMS = {name: broker_permissions(use) for name, use in USES.items()}


def allows(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None


def topic(perms: dict[str, Any], exchange: str) -> dict[str, str] | None:
    return next((t for t in perms["topics"] if t["exchange"] == exchange), None)


def owned(use: BrokerUse) -> list[str]:
    """Every exchange and queue name that belongs to the service ``use`` describes."""
    names = [
        f"{use.service}.events",
        dead_letter_queue_name(use.service),
        retry_exchange_name(use.service, 1000),
        retry_exchange_name(use.service, 30000),
        f"rpc-{use.service}",
        f"rpc.reply-{use.service}-{uuid.uuid4()}",
    ]
    return names + [sub.queue for sub in use.subscriptions]


def test_every_service_of_the_platform_is_covered() -> None:
    assert set(USES) >= {"grid", "notify", "disclosure", "mediation", "volunteer"}


@pytest.mark.parametrize("service", sorted(USES))
def test_a_service_may_use_everything_it_owns(service: str) -> None:
    use, perms = USES[service], PERMS[service]
    queues = [dead_letter_queue_name(service), retry_exchange_name(service, 5000)]
    queues += [sub.queue for sub in use.subscriptions]
    for name in queues:
        for kind in ("configure", "write", "read"):
            assert allows(perms[kind], name), (kind, name)
    # Its outbox declares its events exchange and publishes there.
    assert allows(perms["configure"], f"{service}.events")
    assert allows(perms["write"], f"{service}.events")
    # Binding a handler queue needs read on the source's exchange.
    for sub in use.subscriptions:
        assert allows(perms["read"], sub.exchange), sub.exchange


@pytest.mark.parametrize("service", sorted(USES))
def test_a_service_can_touch_no_resource_of_another(service: str) -> None:
    perms = PERMS[service]
    sources = {sub.exchange for sub in USES[service].subscriptions}
    for other, other_use in USES.items():
        if other == service:
            continue
        for name in owned(other_use):
            assert not allows(perms["configure"], name), ("configure", name)
            assert not allows(perms["write"], name), ("write", name)
            if name not in sources:
                assert not allows(perms["read"], name), ("read", name)


@pytest.mark.parametrize("service", sorted(USES))
def test_no_service_may_publish_through_the_default_exchange(service: str) -> None:
    """Write on ``amq.default`` would let it put a message into any queue by name."""
    for kind in ("configure", "write", "read"):
        assert not allows(PERMS[service][kind], "amq.default")
        assert not allows(PERMS[service][kind], "")


@pytest.mark.parametrize("service", sorted(USES))
def test_a_service_publishes_only_its_own_event_types(service: str) -> None:
    own = topic(PERMS[service], f"{service}.events")
    assert own is not None
    for event in USES[service].events:
        assert allows(own["write"], event)
    for other, other_use in USES.items():
        for event in other_use.events:
            if event not in USES[service].events:
                assert not allows(own["write"], event), (other, event)


def test_a_subscriber_binds_to_the_events_it_handles_and_no_others() -> None:
    grid = topic(PERMS["mediation"], "grid.events")
    assert grid is not None
    assert allows(grid["read"], "incident.reported")
    assert not allows(grid["read"], "incident.closed")
    assert not allows(grid["read"], "#")
    assert not allows(grid["read"], "incident.*")
    assert grid["write"] == "^$"
    assert not allows(PERMS["mediation"]["write"], "grid.events")
    assert not allows(PERMS["mediation"]["configure"], "grid.events")


def test_the_grid_answers_rpc_and_notify_asks_it_one_question() -> None:
    grid, notify = PERMS["grid"], PERMS["notify"]
    reply_key = str(uuid.uuid4())
    assert allows(grid["read"], "rpc-grid") and allows(grid["read"], RPC_EXCHANGE)
    assert allows(notify["write"], RPC_EXCHANGE)
    grid_rpc = topic(grid, RPC_EXCHANGE)
    assert grid_rpc is not None
    assert allows(grid_rpc["read"], "grid.*")
    assert not allows(grid_rpc["read"], "notify.*")
    assert allows(grid_rpc["write"], reply_key)
    assert not allows(grid_rpc["write"], "grid.reporter_of")

    notify_rpc = topic(notify, RPC_EXCHANGE)
    assert notify_rpc is not None
    assert allows(notify_rpc["write"], "grid.reporter_of")
    assert not allows(notify_rpc["write"], "grid.other_method")
    assert allows(notify_rpc["read"], reply_key)
    assert not allows(notify_rpc["read"], "grid.*")
    assert not allows(notify["read"], "rpc-grid")


@pytest.mark.parametrize("service", sorted(USES))
def test_no_service_may_declare_or_delete_a_shared_exchange(service: str) -> None:
    shared = {RPC_EXCHANGE} | {sub.exchange for use in USES.values() for sub in use.subscriptions}
    for exchange in shared - {f"{service}.events"}:
        assert not allows(PERMS[service]["configure"], exchange), exchange


def test_services_without_rpc_get_nothing_on_the_rpc_exchange() -> None:
    for service in ("mediation", "volunteer", "disclosure"):
        for kind in ("configure", "write", "read"):
            assert not allows(PERMS[service][kind], RPC_EXCHANGE)
        assert topic(PERMS[service], RPC_EXCHANGE) is None


def test_the_reply_queue_of_a_service_proxy_is_the_one_its_account_allows() -> None:
    proxy = ServiceRpcProxy("notify", {"AMQP_URI": "memory://"})
    proxy._reply_listener.setup()
    name = proxy._reply_listener.queue.name
    assert name.startswith("rpc.reply-notify-")
    assert allows(PERMS["notify"]["configure"], name)
    assert allows(PERMS["notify"]["read"], name)
    assert not allows(PERMS["grid"]["read"], name)


def test_a_service_that_uses_nothing_shared_gets_only_its_own_names() -> None:
    perms = broker_permissions(BrokerUse(service="solo"))
    assert perms["read"] == r"^(solo\.dead\-letters|solo\.retry\.[0-9]+ms)$"
    assert [t["exchange"] for t in perms["topics"]] == ["solo.events"]
    assert perms["topics"][0]["write"] == "^$"


def test_a_hand_built_use_is_derived_the_same_way() -> None:
    sub = Subscription("b", "on_x_done", "a", "x.done")
    perms = broker_permissions(BrokerUse(service="b", subscriptions=(sub,), events=("y.made",)))
    assert allows(perms["configure"], "evt-a-x.done--b.on_x_done")
    assert not allows(perms["configure"], "evt-a-x.done--b.on_x_donex")
    assert allows(perms["read"], "a.events")
    assert not allows(perms["read"], "aXevents")
    assert topic(perms, "a.events") == {
        "exchange": "a.events",
        "write": "^$",
        "read": r"^(x\.done)$",
    }


def test_rpc_calls_must_name_a_service_and_a_method() -> None:
    with pytest.raises(ValueError, match="service"):
        rpc_calls("reporter_of")
    with pytest.raises(ValueError, match="service"):
        rpc_calls("grid.a.b")
