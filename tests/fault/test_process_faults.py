"""Processes dying at the worst moments: nothing is lost, nothing is doubled.

One stack, every death armed at once: a consumer killed before its handler
runs, one inside its transaction, one after its commit but before the ack,
the grid's relay between publishing and marking sent, and then a SIGTERM
while reports flow. After each, the stack's supervisor restarts the process
(as ``shequ up`` and Kubernetes do) and reconciliation must come out clean.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests

from shequ import faults
from shequ.auth import mint_token
from shequ.stack import Stack
from tests.conftest import wait_for
from tests.fault.conftest import MIX, reconciled

pytestmark = pytest.mark.fault

ARMED = {
    ("mediation", "before_handler"): 2,
    ("volunteer", "in_transaction"): 2,
    ("notify", "after_commit"): 3,
    ("disclosure", "in_transaction"): 4,
    ("grid", "relay_after_publish"): 6,
}


def report(stack: Stack, number: int) -> str:
    """One report through the front door, surviving the grid's own restart.

    If the grid dies while answering, the client cannot know whether its
    report was stored; it looks (as a client with an idempotency key would)
    before it sends again, so the test never doubles a report itself.
    """
    category, cell = MIX[number % len(MIX)]
    description = f"故障测试 {number}"
    token = mint_token(stack.jwt_secret(), roles=("grid_worker",), sub="gw-fault",
                       communities=("hx-qingyuan",))  # fmt: skip
    for _ in range(5):
        try:
            response = requests.post(
                f"{stack.url}/api/v1/grid/incidents",
                json={"category": category, "grid_cell": cell, "description": description},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            if response.status_code == 201:
                return str(response.json()["id"])
            assert response.status_code in (502, 503), response.text
        except requests.ConnectionError:
            pass
        wait_for(lambda: stack.supervise_once() or _ready(stack, "grid"), timeout=60,
                 what="the grid back after its restart")  # fmt: skip
        stored = _grid(stack)["incidents"].find_one({"description": description}, {"_id": 1})
        if stored:
            return str(stored["_id"])
    pytest.fail(f"report {number} could not be made")


def _ready(stack: Stack, service: str) -> bool:
    try:
        return requests.get(f"{stack.processes[service].url}/readyz", timeout=5).ok
    except requests.RequestException:
        return False


def _grid(stack: Stack) -> Any:
    return pymongo.MongoClient(stack.mongo_uri, tz_aware=True)["grid"]


def test_deaths_at_every_point_of_delivery_lose_and_double_nothing(
    stack_factory: Callable[..., Stack], faults_dir: Path
) -> None:
    armed = ",".join(f"{service}:{point}={n}" for (service, point), n in ARMED.items())
    stack = stack_factory(SHEQU_FAULTS=armed, SHEQU_FAULTS_DIR=str(faults_dir))
    count = 16
    for number in range(count):
        report(stack, number)
        stack.supervise_once()
    found = reconciled(stack, count, timeout=180)
    assert found.reports == count
    for service, point in ARMED:
        assert faults.fired(faults_dir, service, point), f"{service}:{point} never fired"
        assert stack.processes[service].restarts >= 1, f"{service} was not restarted"


def test_a_sigterm_while_reports_flow_loses_nothing_on_production_settings(
    stack_factory: Callable[..., Stack],
) -> None:
    """Quorum queues with a delivery limit and majority writes, as in production."""
    stack = stack_factory(SHEQU_QUEUE_TYPE="quorum", SHEQU_MONGO_WRITE_CONCERN="majority")
    assert stack.rabbit is not None
    queue = requests.get(
        f"{stack.rabbit.management_url}/api/queues/%2F/"
        "evt-grid-incident.reported--notify.on_incident_reported",
        auth=("guest", "guest"),
        timeout=10,
    ).json()
    assert queue["type"] == "quorum"
    assert queue["arguments"]["x-delivery-limit"] == 5
    assert queue["arguments"]["x-dead-letter-exchange"] == "notify.dead-letters"
    for number in range(6):
        report(stack, number)
    # Stop the busiest consumer mid-stream, as a rolling update does.
    stack.processes["notify"].process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    for number in range(6, 12):
        report(stack, number)
    # Reconciliation may come out clean before notify has finished stopping
    # (it may have handled everything before the signal took effect), so the
    # restart is waited for first: the check is on the new process's work too.
    wait_for(
        lambda: stack.supervise_once() or stack.processes["notify"].restarts,
        timeout=60,
        interval=0.2,
        what="notify to stop on SIGTERM and be restarted",
    )
    found = reconciled(stack, 12, timeout=120)
    assert found.reports == 12 and stack.processes["notify"].restarts == 1
