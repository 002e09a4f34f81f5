"""A private Prometheus server for tests: Debian's ``prometheus``, on loopback, torn down.

It lives with the tests rather than in ``shared/embedded.py``: the platform
never runs Prometheus itself (in production the Prometheus Operator does),
only the monitoring tests do. Like the embedded servers it listens on a free
loopback port, keeps its data in a temporary directory, and is stopped (its
process group killed if it overstays) at the end.

Rules are loaded from ``deploy/monitoring`` with every group's evaluation
interval shortened to the scrape interval, so recorded series appear within
seconds; the expressions are the deployed ones, unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from shequ.embedded import free_port

LOOPBACK = "127.0.0.1"


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """``prometheus`` scraping ``jobs`` (job name → ``host:port`` targets) every ``interval``."""

    def __init__(
        self,
        data_dir: Path,
        jobs: dict[str, list[str]],
        rule_files: list[Path],
        *,
        interval: str = "1s",
    ) -> None:
        self.data_dir = data_dir
        self.jobs = jobs
        self.rule_files = rule_files
        self.interval = interval
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError(
                "prometheus is not installed: run scripts/ensure-system-packages "
                "(Debian's prometheus package)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, loopback only
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus was not ready within {timeout} s")

    def stop(self, timeout: float = 20.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
        self._proc = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{expr}: {body.get('error')}")
        return list(body["data"]["result"])

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """An instant query as {label values: value}."""
        return {
            tuple(item["metric"].get(label, "") for label in labels): float(item["value"][1])
            for item in self.query(expr)
        }

    def get(self, path: str) -> Any:
        body = requests.get(f"{self.url}{path}", timeout=10).json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error')}")
        return body["data"]

    def _write_config(self) -> Path:
        rules_dir = self.data_dir / "rules"
        rules_dir.mkdir(exist_ok=True)
        loaded = []
        for path in self.rule_files:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            for group in document["groups"]:
                group["interval"] = self.interval
            target = rules_dir / path.name
            target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            loaded.append(str(target))
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": loaded,
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.jobs.items()
            ],
        }
        path = self.data_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path
