"""The subscriber kit against the running platform: a real report reaches a bureau once."""

from __future__ import annotations

import ast
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from shequ.bureau import Management, add_bureau, management_from, remove_bureau
from tests.conftest import Platform, wait_for

pytestmark = pytest.mark.e2e

KIT = Path(__file__).resolve().parents[2] / "examples" / "bureau_subscriber" / "subscriber.py"
COMMUNITY = "hx-qingyuan"


class Running:
    """The subscriber as a subprocess, its JSON lines collected by a reader thread."""

    def __init__(self, access: dict[str, Any], db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(KIT), "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={
                "SHEQU_BUREAU_AMQP_URI": access["amqp_uri"],
                "SHEQU_BUREAU_QUEUE": access["queue"],
                "PATH": "/usr/bin:/bin",
            },
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def line(self, **match: Any) -> dict[str, Any]:
        """Wait for the next line with these values (earlier non-matching ones are kept)."""

        def found() -> dict[str, Any] | None:
            while not self.lines.empty():
                self.seen.append(self.lines.get())
            for item in self.seen:
                if all(item.get(k) == v for k, v in match.items()):
                    self.seen.remove(item)
                    return item
            return None

        return wait_for(found, timeout=30, what=f"a subscriber line with {match}")


@pytest.fixture
def access(platform: Platform) -> Iterator[tuple[dict[str, Any], Management, str]]:
    management, vhost = management_from(platform.servers.management_url, platform.servers.amqp_uri)
    name = f"kit{uuid.uuid4().hex[:6]}"
    granted = add_bureau(
        management, vhost, platform.servers.amqp_uri, name, ["grid.incident.reported"]
    )
    yield granted, management, vhost
    remove_bureau(management, vhost, name)


@pytest.fixture
def tap(
    platform: Platform,
) -> Iterator[tuple[pika.adapters.blocking_connection.BlockingChannel, str]]:
    """An admin's own queue on the same events, to get hold of an original message body."""
    connection = pika.BlockingConnection(pika.URLParameters(platform.servers.amqp_uri))
    channel = connection.channel()
    name = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(name, "grid.events", "incident.reported")
    yield channel, name
    connection.close()


def report(platform: Platform) -> str:
    session = platform.session("grid_worker", sub="gw-1", communities=(COMMUNITY,))
    response = session.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "qy-02", "description": "路面塌陷一处"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def rows(db: Path, subject: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM events WHERE subject = ?", (subject,)).fetchone()[0]
        )


def test_the_kit_imports_nothing_of_the_project() -> None:
    tree = ast.parse(KIT.read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"pika"}


def test_a_report_is_processed_once_despite_a_redelivery_and_a_lost_connection(
    platform: Platform, access: tuple[dict[str, Any], Management, str], tap: Any, tmp_path: Path
) -> None:
    granted, management, vhost = access
    db = tmp_path / "events.sqlite"
    kit = Running(granted, db)
    try:
        kit.line(outcome="consuming")
        incident = report(platform)
        first = kit.line(outcome="processed", subject=incident)
        assert rows(db, incident) == 1

        # The same message again, exactly as a redelivery after a lost ack would bring it.
        channel, tapped = tap

        def original() -> bytes | None:
            _, _, tapped_body = channel.basic_get(tapped, auto_ack=True)
            if tapped_body and json.loads(tapped_body)["id"] == first["id"]:
                return bytes(tapped_body)
            return None

        body = wait_for(original, what="the original message on the tap")
        channel.basic_publish("", granted["queue"], body)
        kit.line(outcome="duplicate", id=first["id"])
        assert rows(db, incident) == 1

        # The broker drops the subscriber's connection: it reconnects and carries on.
        def connection_name() -> str | None:
            found = management.call("GET", "connections?columns=name,user") or []
            return next((c["name"] for c in found if c["user"] == granted["user"]), None)

        name = wait_for(connection_name, what="the subscriber's connection in the management API")
        management.call("DELETE", f"connections/{urllib.parse.quote(name, safe='')}")
        kit.line(outcome="reconnecting")
        kit.line(outcome="consuming")
        second = report(platform)
        kit.line(outcome="processed", subject=second)
        assert (rows(db, incident), rows(db, second)) == (1, 1)
    finally:
        kit.process.send_signal(signal.SIGTERM)
        assert kit.process.wait(timeout=30) == 0
