"""`shequ up` as a user runs it: embedded servers, ready line, endpoints file, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from shequ.auth import mint_token
from shequ.embedded import free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e


def start(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHEQU_AMQP_URI", "SHEQU_MONGO_URI")}
    process = subprocess.Popen(
        [sys.executable, "-m", "shequ.cli", "up", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("shequ ready: "):
            return process, lines
    process.kill()
    pytest.fail("shequ up did not print its ready line:\n" + "".join(lines))


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return output


def leftovers(data_dir: Path) -> list[str]:
    """Processes whose command line or environment mentions the data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in cmdline + environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_shequ_up_serves_keeps_data_across_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    process, lines = start(data_dir, port)
    url = f"http://127.0.0.1:{port}"
    assert lines[-1].startswith(f"shequ ready: {url}")

    endpoints = json.loads((data_dir / "endpoints.json").read_text())
    assert endpoints["front_door"] == url
    assert set(endpoints["services"]) == {"grid", "notify", "disclosure", "mediation", "volunteer"}
    assert endpoints["amqp_uri"].startswith("amqp://") and "127.0.0.1" in endpoints["amqp_uri"]
    # The store's administrator; each service has a user of its own.
    assert endpoints["mongo_uri"].startswith("mongodb://shequ-admin:")
    assert "@127.0.0.1:" in endpoints["mongo_uri"]
    for urls in endpoints["services"].values():
        assert requests.get(urls["metrics"], timeout=10).status_code == 200
        assert requests.get(urls["http"] + "/healthz", timeout=10).json() == {"status": "ok"}
    # Each service connects as its own broker user, none as the administrator.
    users = {name: urls["broker_user"] for name, urls in endpoints["services"].items()}
    assert users == {name: f"shequ-{name}" for name in users}
    assert {urls["database_user"] for urls in endpoints["services"].values()} == set(users.values())
    connections = f"{endpoints['rabbitmq_management']}/api/connections?columns=user"

    def connected() -> set[str]:
        listed = requests.get(connections, auth=("guest", "guest"), timeout=10).json()
        return {connection["user"] for connection in listed}

    wait_for(lambda: connected() == set(users.values()), timeout=30, what="one user per service")

    secret = (data_dir / "jwt-secret").read_text().strip()
    token = mint_token(secret, roles=["grid_worker"], sub="gw-9", communities=["hx-liushu"])
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(
        f"{url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "ls-01", "description": "井盖缺失"},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    incident_url = f"{url}/api/v1/grid/incidents/{created.json()['id']}"
    output = stop(process)
    assert "stopped" in output
    wait_for(lambda: not leftovers(data_dir), timeout=30, what="no process left behind")

    process, _ = start(data_dir, port)
    try:
        again = requests.get(incident_url, headers=headers, timeout=10)
        assert again.status_code == 200
        assert again.json()["description"] == "井盖缺失"
    finally:
        stop(process)
    wait_for(lambda: not leftovers(data_dir), timeout=30, what="no process left behind")
