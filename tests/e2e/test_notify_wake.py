"""Notify sends what an event calls for when the handler commits, not at its timer's tick.

On a broker and store of its own, with only grid and notify: a second stack
on the session's servers would share the session platform's queues (the
grid's ``incident.reported`` consumers would take each other's events).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
import requests

from shequ.auth import mint_token
from shequ.embedded import free_port
from shequ.stack import Stack
from shequ.store import database_name
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hourly_notify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Grid and notify, with notify's delivery timers ticking once an hour."""
    stack = Stack(
        tmp_path_factory.mktemp("notify-wake"),
        port=free_port(),
        services=["grid", "notify"],
        extra_env={"SHEQU_NOTIFY_DELIVER_SECONDS": "3600"},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_a_reported_incident_is_notified_long_before_the_delivery_timer_ticks(
    hourly_notify: Stack,
) -> None:
    token = mint_token(
        hourly_notify.jwt_secret(), roles=("grid_worker",), sub="gw-wake",
        communities=("hx-qingyuan",),
    )  # fmt: skip
    answer = requests.post(
        f"{hourly_notify.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "qy-01", "description": "wake"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    incident = answer.json()["id"]
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(hourly_notify.mongo_uri)
    deliveries = client[database_name("notify")]["deliveries"]

    def states() -> list[str]:
        return [d["status"] for d in deliveries.find({"subject_ref": incident}, {"status": 1})]

    try:
        wait_for(
            lambda: states() and all(state == "sent" for state in states()),
            timeout=60,
            what=lambda: f"{incident}'s deliveries to be sent; their states: {states()}",
        )
    finally:
        client.close()
