"""A service process starting while its store or broker is away, and stopping while its broker is.

Both were found by the fault suite and its aftermath: CI's store-outage case
caught services that had answered ``/readyz`` before their start had finished
and then exited when the store went away under them; and services whose broker
was gone stayed alive for good after a SIGTERM. Each test runs one grid
process (grid consumes nothing the session's platform produces while these
run) on one server of the session and one of its own, which it breaks.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shequ.embedded import free_port
from shequ.stack import ServiceProcess, Stack
from tests.conftest import Servers, wait_for


def _grid_stack(data_dir: Path, **servers: str) -> Stack:
    return Stack(
        data_dir,
        port=free_port(),
        services=["grid"],
        extra_env={"SHEQU_MONGO_DATABASE_PREFIX": f"t{uuid.uuid4().hex[:8]}_"},
        **servers,
    )


@pytest.fixture
def own_broker(servers: Servers, tmp_path: Path) -> Iterator[Stack]:
    """Grid on the session's store and a broker of its own, which the test may stop."""
    stack = _grid_stack(tmp_path, mongo_uri=servers.mongo_uri)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _readiness(proc: ServiceProcess) -> tuple[int, dict[str, Any]]:
    """The status and checks of ``/readyz``; (0, {}) when nothing answers."""
    try:
        answer = requests.get(f"{proc.url}/readyz", timeout=10)
    except requests.RequestException:
        return 0, {}
    return answer.status_code, answer.json().get("checks", {})


def _crash_and_restart(stack: Stack, proc: ServiceProcess) -> None:
    """Kill the service; its supervisor (the stack, as ``shequ up`` does) starts it again."""
    assert proc.process is not None
    proc.process.kill()
    proc.process.wait(timeout=30)
    assert stack.supervise_once() == [proc.name]


def _ready_again_without_another_restart(proc: ServiceProcess, server: str) -> None:
    wait_for(
        lambda: _readiness(proc)[0] == 200,
        timeout=120,
        interval=0.2,
        what=lambda: f"{proc.name} ready once the {server} is back; it says {_readiness(proc)}",
    )
    assert proc.process is not None and proc.process.poll() is None
    assert proc.restarts == 1  # the crash, nothing more


def test_a_service_started_while_its_store_is_away_waits_for_it_not_ready(
    servers: Servers, tmp_path: Path
) -> None:
    stack = _grid_stack(tmp_path, amqp_uri=servers.amqp_uri, management_url=servers.management_url)
    stack.start()
    try:
        grid = stack.processes["grid"]
        assert stack.store is not None and grid.process is not None
        stack.store.keep_port()
        stack.store.stop()
        _crash_and_restart(stack, grid)

        status, checks = wait_for(
            lambda: (answer := _readiness(grid))[0] and answer,
            timeout=60,
            interval=0.2,
            what="the restarted grid to answer /readyz",
        )
        assert status == 503
        assert checks["started"] is False
        # Still waiting, and still alive, well past the store's 5 s selection timeout.
        wait_for(
            lambda: "not reachable while" in grid.log_path.read_text(errors="replace"),
            timeout=60,
            what="grid to log that it waits for its database",
        )
        assert grid.process.poll() is None

        stack.store.start()
        _ready_again_without_another_restart(grid, "store")
    finally:
        stack.stop()


def _restart_grid_with_its_broker_away(stack: Stack) -> ServiceProcess:
    """Stop the stack's broker, crash grid, let the supervisor start it again, and
    wait until it says it waits for the broker."""
    grid = stack.processes["grid"]
    assert stack.rabbit is not None and grid.process is not None
    stack.rabbit.keep_ports()
    stack.rabbit.stop()
    _crash_and_restart(stack, grid)
    # It finds its exchanges before its web server starts: it waits, saying so.
    wait_for(
        lambda: "the broker is not reachable while" in grid.log_path.read_text(errors="replace"),
        timeout=60,
        what="grid to log that it waits for its broker",
    )
    return grid


def test_a_service_started_while_its_broker_is_away_waits_for_it(own_broker: Stack) -> None:
    stack = own_broker
    grid = _restart_grid_with_its_broker_away(stack)
    assert stack.rabbit is not None and grid.process is not None
    wait_for(
        lambda: grid.log_path.read_text(errors="replace").count("the broker is not reachable") >= 3,
        timeout=60,
        what="grid to go on waiting",
    )
    assert grid.process.poll() is None
    # One handler waits and logs at a time; the others follow once it is back.
    log = grid.log_path.read_text(errors="replace")
    waiting = [line for line in log.splitlines() if "the broker is not reachable" in line]
    assert len({line.split(" while ", 1)[1].split(",")[0] for line in waiting}) == 1

    stack.rabbit.start()
    _ready_again_without_another_restart(grid, "broker")


def test_a_service_waiting_for_its_broker_at_start_exits_at_once_when_told_to_stop(
    own_broker: Stack,
) -> None:
    stack = own_broker
    grid = _restart_grid_with_its_broker_away(stack)
    assert grid.process is not None
    grid.process.send_signal(signal.SIGTERM)
    code = wait_for(
        lambda: grid.process.poll() is not None and (grid.process.returncode,),
        timeout=60,
        interval=0.2,
        what="grid to exit after the signal",
    )
    assert code == (0,)
    assert "stopped while starting" in grid.log_path.read_text(errors="replace")


def test_a_service_whose_broker_is_gone_still_exits_when_told_to_stop(own_broker: Stack) -> None:
    stack = own_broker
    grid = stack.processes["grid"]
    assert stack.rabbit is not None and grid.process is not None
    stack.rabbit.stop()
    # The queue consumer has noticed and now retries a broker that is gone.
    wait_for(
        lambda: _readiness(grid)[1].get("consumers") is False,
        timeout=120,
        interval=0.5,
        what=lambda: f"grid's consumers to report detached; it says {_readiness(grid)}",
    )
    grid.process.send_signal(signal.SIGTERM)
    # The runner gives a graceful stop 20 s and a kill 3 s before it leaves.
    wait_for(
        lambda: grid.process.poll() is not None,
        timeout=90,
        interval=0.2,
        what="grid to exit after the signal",
    )
    log = grid.log_path.read_text(errors="replace")
    assert "stopping services" in log
