"""The broker restarting and the store going away while events flow.

Reports keep being accepted while the broker is down (they wait in the
grid's outbox); while the store is down, services say they are not ready,
handlers wait for it without spending their retries, and everything comes
back without restarting a single service.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from shequ.stack import Stack
from tests.conftest import wait_for
from tests.fault.conftest import reconciled, report_many

pytestmark = pytest.mark.fault

CONSUMERS = ("notify", "disclosure", "mediation", "volunteer")


#: The last answer of each service's ``/readyz``, for the message of a failed wait.
LAST_READINESS: dict[str, str] = {}


def readiness(stack: Stack, service: str) -> int:
    try:
        answer = requests.get(f"{stack.processes[service].url}/readyz", timeout=15)
    except requests.RequestException as exc:
        LAST_READINESS[service] = f"no answer ({type(exc).__name__})"
        return 0
    LAST_READINESS[service] = f"{answer.status_code} {answer.text.strip()}"
    return answer.status_code


def not_ready(stack: Stack) -> str:
    """Which services were not ready at the last probe, what they said, and their last words.

    CI saw this case fail where no local run did; the message is all it
    leaves, so it says whether each such process still runs and how its
    log ends.
    """
    described = []
    for name, proc in stack.processes.items():
        said = LAST_READINESS.get(name, "not probed")
        if said.startswith("200"):
            continue
        code = proc.process.poll() if proc.process is not None else None
        state = "running" if code is None else f"exited with {code}"
        lines = [
            line[:200]
            for line in proc.log_path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line
        ]
        described.append(f"{name} ({state}): {said}; last log lines: {lines[-4:]}")
    return "\n".join(described)


def test_a_broker_restart_while_reports_flow_loses_and_doubles_nothing(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    report_many(stack, 8)
    assert stack.rabbit is not None
    stack.rabbit.restart()
    report_many(stack, 8, first=8)  # accepted while consumers reconnect
    found = reconciled(stack, 16, timeout=180)
    assert found.reports == 16
    assert all(stack.processes[name].restarts == 0 for name in stack.processes)


def test_a_store_outage_makes_services_unready_and_then_recovers_without_restarts(
    stack_factory: Callable[..., Stack],
) -> None:
    # Production back-offs: an outage must not use up a good event's retries.
    stack = stack_factory(SHEQU_RETRY_DELAYS_MS="[1000, 5000]")
    report_many(stack, 8)
    assert stack.store is not None
    stack.store.keep_port()
    stack.store.stop()
    outage_started = time.monotonic()
    # Not ready is a 503, or no answer within the probe's timeout while every
    # worker waits on the store: either way a Kubernetes probe fails.
    wait_for(
        lambda: all(readiness(stack, name) != 200 for name in CONSUMERS),
        timeout=60,
        interval=0.5,
        what=lambda: (
            "every consumer to report not ready while the store is down; "
            f"last answers: {LAST_READINESS}"
        ),
    )
    # Keep the store away about ten seconds in all, as the drill asks.
    wait_for(lambda: time.monotonic() - outage_started >= 10, timeout=20, interval=0.5,
             what="the outage to last ten seconds")  # fmt: skip
    stack.store.start()
    wait_for(
        lambda: all(readiness(stack, name) == 200 for name in stack.processes),
        timeout=90,
        interval=0.5,
        what=lambda: f"every service ready again; not ready:\n{not_ready(stack)}",
    )
    report_many(stack, 8, first=8)
    found = reconciled(stack, 16, timeout=180)
    assert found.reports == 16
    assert all(stack.processes[name].restarts == 0 for name in stack.processes)
