"""The fan-out benchmark's code paths with tiny sizes: every part counts what it moved.

No time is asserted (benchmarks measure, tests do not): each part raises
when a message, transaction or effect is missing, and these tests check the
counts and that the results render into the generated table. The platform
part needs a whole stack and is left to ``make bench``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import Servers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fanout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fanout", ROOT / "bench" / "fanout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fanout"] = module
    spec.loader.exec_module(module)
    return module


def test_the_ceilings_move_every_message_and_transaction(
    fanout: ModuleType, servers: Servers
) -> None:
    assert fanout.broker_kombu(servers.amqp_uri, 50, window=8)["messages"] == 50
    assert fanout.broker_pika(servers.amqp_uri, 20)["messages"] == 20
    store = fanout.store_transactions(servers.mongo_uri, 10, threads=2)
    assert store["transactions"] == 10
    assert store["txns_per_s"] > 0


def test_the_relay_and_the_stock_dispatcher_deliver_every_event(
    fanout: ModuleType, servers: Servers
) -> None:
    relay = fanout.relay_rate(servers.amqp_uri, servers.mongo_uri, 30, batch_size=7, queues=2)
    assert (relay["events"], relay["queues"], relay["batch_size"]) == (30, 2, 7)
    assert fanout.stock_dispatch_rate(servers.amqp_uri, 10)["events"] == 10


def test_the_plain_nameko_baseline_fans_every_report_out(
    fanout: ModuleType, servers: Servers, tmp_path: Path
) -> None:
    args = argparse.Namespace(incidents=6, reporters=2, settle=60.0)
    baseline = fanout.measure_baseline(servers.amqp_uri, servers.mongo_uri, tmp_path, args)
    assert baseline["incidents"] == 6
    assert baseline["effects"] == 6 * 4


def test_results_render_into_the_table(fanout: ModuleType) -> None:
    load = {"load_average_1m": 1.0}
    result: dict[str, Any] = {
        "measured_at": "2026-11-24T00:00:00+00:00",
        "revision": "abc1234",
        "command": "bench/fanout.py --quick",
        "machine": {"cpus": 2},
        "external_servers": False,
        "ceilings": {
            "broker": {"kombu": {"how": "kombu", "msgs_per_s": 1234.5, **load}},
            "store": [{"threads": 1, "txns_per_s": 321.0, **load}],
        },
        "relay": {
            "confirmed_per_s": 900.0,
            "batch_size": 100,
            "read_from": "change stream",
            **load,
        },
        "relay_catching_up": {"confirmed_per_s": 700.0, "read_from": "outbox", **load},
        "stock_dispatch": {"confirmed_per_s": 300.0, **load},
        "platform": {
            "incidents_per_s": 6.5,
            "incidents": 60,
            "reporters": 8,
            "latency_ms": {"50%": {"rate_per_s": 3.2, "p50": 1.0, "p95": 2.0, "p99": 3.0, **load}},
            "p99_ms_at_50pct": 3.0,
            "store_writes_per_incident": 40.0,
            **load,
        },
        "ratios": {"relay_to_stock_dispatch": 3.0, "to_store_ceiling": 0.4, "to_baseline": 0.2},
    }
    table = fanout.table(result)
    assert (
        "| outbox relay, confirmed events/s (batch of 100, read from the change stream) "
        "| 900 | 1.0 |" in table
    )
    assert (
        "| outbox relay catching up, confirmed events/s (no position: read from the outbox)"
        " | 700 | 1.0 |" in table
    )
    assert "| `ratios.relay_to_stock_dispatch` | 3.00 | >= 3 |" in table
    assert "Store writes per report: 40.0" in table
