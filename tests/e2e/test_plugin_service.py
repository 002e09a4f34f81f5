"""A separately installed plugin service: discovered by `shequ up`, routed, fed by the grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from shequ.embedded import free_port
from tests.conftest import wait_for
from tests.e2e.test_shequ_up import leftovers, start, stop

pytestmark = pytest.mark.e2e

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin_service"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed with pip into a directory of its own, not into the shared .venv."""
    target = tmp_path_factory.mktemp("plugin") / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            # Built with the dev environment's setuptools: no package index needed.
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        timeout=300,
    )
    assert (target / "shequ_hotspots" / "service.py").exists()
    return target


@pytest.fixture
def running(plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
    )
    data_dir = tmp_path / "data"
    port = free_port()
    process, _ = start(data_dir, port)
    try:
        yield data_dir, f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        wait_for(lambda: not leftovers(data_dir), timeout=30, what="no process left behind")


def test_the_plugin_is_not_installed_in_the_shared_environment() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import shequ_hotspots"],
        capture_output=True,
        env={"PATH": "/usr/bin"},
    )
    assert found.returncode != 0


def test_shequ_up_runs_the_installed_plugin_which_counts_the_grids_reports(
    running: tuple[Path, str],
) -> None:
    data_dir, url = running
    endpoints = json.loads((data_dir / "endpoints.json").read_text())
    assert "hotspots" in endpoints["services"]

    secret = (data_dir / "jwt-secret").read_text().strip()
    reporter = mint_token(secret, roles=["grid_worker"], sub="gw-7", communities=["hx-liushu"])
    for _ in range(2):
        created = requests.post(
            f"{url}/api/v1/grid/incidents",
            json={"category": "facility_damaged", "grid_cell": "ls-01", "description": "路灯不亮"},
            headers={"Authorization": f"Bearer {reporter}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text

    reader = {"Authorization": f"Bearer {mint_token(secret, roles=['auditor'], sub='a-1')}"}

    def counted() -> list[dict[str, Any]] | None:
        response = requests.get(
            f"{url}/api/v1/hotspots/cells",
            params={"community": "hx-liushu"},
            headers=reader,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        return items if items and items[0]["reports"] == 2 else None

    items = wait_for(counted, timeout=60, what="the plugin to count both reports")
    assert [(i["grid_cell"], i["category"], i["reports"]) for i in items] == [
        ("ls-01", "facility_damaged", 2)
    ]
    spec = requests.get(f"{url}/api/v1/hotspots/openapi.json", timeout=10).json()
    assert "/api/v1/hotspots/cells" in spec["paths"]
    bad = requests.get(
        f"{url}/api/v1/hotspots/cells", params={"limit": 0}, headers=reader, timeout=10
    )
    assert bad.status_code == 422
