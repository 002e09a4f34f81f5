"""Fault level: the whole platform on servers of its own, broken on purpose, then reconciled.

Each module starts its own broker, store and services (a fault must not
reach the session's platform), drives reports through the front door,
injects its faults and then waits, with a bound, until ``reconcile`` finds
every report's effects exactly once in every consumer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests

from shequ.auth import mint_token
from shequ.discovery import discover_services, load_service
from shequ.embedded import free_port
from shequ.reconcile import Report, reconcile
from shequ.stack import Stack
from tests.conftest import wait_for

pytestmark = pytest.mark.fault

#: ``make fault-figures`` names a JSON-lines file here; each run of the suite
#: appends one line with what every case drove, broke and reconciled, from
#: which ``bench/fault_figures.py`` writes the table in docs/reliability.md.
FIGURES_ENV = "SHEQU_FAULT_FIGURES"
_figures: dict[str, dict[str, Any]] = {}
_suite_started = time.monotonic()

#: (category, cell): a dispute (mediation), an alley (volunteer), a sensitive
#: one with a volunteer visit, and one that only notify and disclosure see.
MIX = [
    ("neighbour_dispute", "qy-02"),
    ("alley_unclean", "qy-03"),
    ("resident_hospitalised", "qy-01"),
    ("facility_damaged", "qy-01"),
]


def fault_stack(data_dir: Path, **env: str) -> Stack:
    return Stack(
        data_dir,
        port=free_port(),
        extra_env={
            "SHEQU_RETRY_DELAYS_MS": "[200, 500]",
            "SHEQU_OUTBOX_POLL_SECONDS": "0.2",
            "SHEQU_OUTBOX_LEASE_SECONDS": "2",
            **env,
        },
    )


def report_many(stack: Stack, count: int, *, first: int = 0) -> list[str]:
    """Reports through the front door; a refused one fails the test (nothing may be lost)."""
    token = mint_token(stack.jwt_secret(), roles=("grid_worker",), sub="gw-fault",
                       communities=("hx-qingyuan",))  # fmt: skip
    ids = []
    for number in range(first, first + count):
        category, cell = MIX[number % len(MIX)]
        response = requests.post(
            f"{stack.url}/api/v1/grid/incidents",
            json={"category": category, "grid_cell": cell, "description": f"故障测试 {number}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def reconciled(
    stack: Stack,
    expected_reports: int,
    *,
    timeout: float = 120,
    tick: Callable[[], Any] = lambda: None,
) -> Report:
    """Wait until every report reached every consumer exactly once; supervise meanwhile."""
    consumers = [load_service(name) for name in sorted(discover_services())]
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    last: list[Report] = []

    def clean() -> Report | None:
        tick()
        stack.supervise_once()
        found = reconcile(client, None, consumers)
        last[:] = [found]
        return found if found.clean and found.reports >= expected_reports else None

    try:
        found = wait_for(
            clean, timeout=timeout, interval=0.5, what="reconciliation to come out clean"
        )
        _record(stack, found)
        return found
    except BaseException:
        if last:
            print("last reconciliation:", last[0].as_dict())
            _explain(client, last[0])
            _record(stack, last[0])
        raise
    finally:
        client.close()


def _record(stack: Stack, found: Report) -> None:
    """Keep what this case's reconciliation found, for the suite's figures."""
    case = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].rsplit("::", 1)[-1]
    _figures[case] = {
        "reports": found.reports,
        "effects_checked": sum(found.effects.values()),
        "restarts": sum(process.restarts for process in stack.processes.values()),
        "missing": len(found.missing) + found.unpublished,
        "duplicated": len(found.duplicated),
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every fault case's outcome, also of one that failed before it could reconcile."""
    if report.when != "call" or not report.nodeid.startswith("tests/fault/"):
        return
    figures = _figures.setdefault(report.nodeid.rsplit("::", 1)[-1], {})
    figures.update(outcome=report.outcome, seconds=round(report.duration))
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        figures["failure"] = message.strip().splitlines()[0][:500]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Append this run's figures when ``make fault-figures`` asked for them."""
    target = os.environ.get(FIGURES_ENV)
    if not target or not _figures:
        return
    line = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs",
        "passed": exitstatus == 0,
        "seconds": round(time.monotonic() - _suite_started),
        "cases": _figures,
    }
    with Path(target).open("a", encoding="utf-8") as runs:
        runs.write(json.dumps(line, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def faults_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = fault_stack(tmp_path_factory.mktemp("fault-stack"), **env)
        stack.start()
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop()


def _explain(client: pymongo.MongoClient[Any], found: Report) -> None:
    """What each consumer holds about the reports reconciliation found wanting."""
    for problem in found.missing + found.duplicated:
        service = problem.split(".", 1)[0]
        incident = next((w for w in problem.split() if w.startswith("INC-")), None)
        if incident is None:
            continue
        db = client[service]
        marks = list(db["processed_events"].find({"subject": incident}, {"_id": 1}))
        print(f"{problem}\n  marks: {marks}")
        for name in db.list_collection_names():
            if name in ("outbox", "processed_events"):
                continue
            hits = list(
                db[name]
                .find(
                    {
                        "$or": [
                            {"subject_ref": incident},
                            {"incident_id": incident},
                            {"references": incident},
                        ]
                    }
                )
                .limit(5)
            )
            if hits:
                print(f"  {name}: {hits}")
