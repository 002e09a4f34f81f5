"""The subscriber kit's message handling, on a real SQLite file: once per id, versions checked."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shequ.catalogue import example_event
from shequ.contracts import REGISTRY

KIT = Path(__file__).resolve().parents[3] / "examples" / "bureau_subscriber" / "subscriber.py"


@pytest.fixture(scope="module")
def kit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bureau_subscriber", KIT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def db(kit: ModuleType, tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    conn.executescript(kit.SCHEMA)
    conn.isolation_level = "DEFERRED"
    return conn


def body(version: int = 1, **changes: Any) -> bytes:
    event = example_event(REGISTRY.get("grid", "incident.reported"))
    event["dataschema"] = event["dataschema"].replace(":v1", f":v{version}")
    event.update(changes)
    return json.dumps(event).encode()


def count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def test_an_event_is_processed_once_and_its_second_copy_is_a_duplicate(
    kit: ModuleType, db: sqlite3.Connection
) -> None:
    assert kit.handle(db, body())["outcome"] == "processed"
    assert kit.handle(db, body())["outcome"] == "duplicate"
    assert count(db, "events") == 1


def test_a_version_the_consumer_was_not_written_for_is_skipped(
    kit: ModuleType, db: sqlite3.Connection
) -> None:
    result = kit.handle(db, body(version=2))
    assert (result["outcome"], result["version"]) == ("skipped_version", 2)
    assert count(db, "events") == 0


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (body(specversion="0.3"), "unsupported specversion"),
        (body(dataschema="urn:other:thing"), "unrecognised dataschema"),
        (body(type="shequ.grid.incident.closed"), "does not match dataschema"),
        (json.dumps({"id": "x"}).encode(), "missing CloudEvents attributes"),
    ],
)
def test_a_message_that_is_not_a_shequ_event_is_rejected_and_stores_nothing(
    kit: ModuleType, db: sqlite3.Connection, raw: bytes, error: str
) -> None:
    result = kit.handle(db, raw)
    assert result["outcome"] == "rejected" and error in result["error"]
    assert count(db, "processed") == 0


def test_a_failing_process_leaves_no_mark_so_the_retry_processes_it(
    kit: ModuleType, db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("the bureau's own database is down")

    monkeypatch.setattr(kit, "process", broken)
    with pytest.raises(RuntimeError):
        kit.handle(db, body())
    assert count(db, "processed") == 0
    monkeypatch.undo()
    assert kit.handle(db, body())["outcome"] == "processed"
