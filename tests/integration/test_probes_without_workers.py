"""The probes answer while every worker is busy.

nameko runs each entrypoint in a worker from a pool of ``max_workers``; a
probe that needed one waited behind busy handlers (31 s for notify's
``/readyz`` in one fault run, more than 3 s for its ``/healthz`` under the
soak run's load), and Kubernetes, whose probes give up after 3 s, would
count a busy service as dead and restart it. Here the service's one worker
is held by a timer until the test releases it; the probes must answer
meanwhile, and a route that needs a worker must not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def held(servers: Servers, tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    control = tmp_path / "control"
    control.mkdir()
    stack = stack_on(
        servers,
        tmp_path / "data",
        services=["tests.support.held_worker:HeldWorkerService"],
        env={"SHEQU_MAX_WORKERS": "1", "HELD_WORKER_DIR": str(control)},
    )
    try:
        stack.start()
        yield stack, control
    finally:
        (control / "release").touch()
        stack.stop()


def test_health_and_readiness_answer_while_every_worker_is_busy(
    held: tuple[Stack, Path],
) -> None:
    stack, control = held
    url = stack.processes["heldworker"].url
    wait_for((control / "held").exists, timeout=30, what="the timer to hold the one worker")
    # The worker stays held until the test releases it, so an answer cannot
    # have waited for it: a probe that needed a worker would time out here.
    health = requests.get(f"{url}/healthz", timeout=10)
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["started"] is True
    assert health.headers["X-Content-Type-Options"] == "nosniff"  # still a platform route
    with pytest.raises(requests.Timeout):
        requests.get(f"{url}/api/v1/heldworker/openapi.json", timeout=2)
    (control / "release").touch()
    assert requests.get(f"{url}/api/v1/heldworker/openapi.json", timeout=30).status_code == 200
