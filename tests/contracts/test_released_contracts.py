"""No event version released to bureaus changed in a breaking way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shequ.catalogue import snapshot
from shequ.cli import main as shequ
from shequ.compat import breaking_changes, load_released


def test_no_released_event_version_has_a_breaking_change() -> None:
    problems = breaking_changes(load_released(), snapshot())
    assert problems == [], (
        "publish a breaking change as a new version beside the old one "
        "(docs/bureaus.md, compatibility rules)"
    )


def released_with(tmp_path: Path, edit: Any) -> Path:
    """A copy of the released snapshot, edited as if the last release had said otherwise."""
    released = load_released()
    edit(released["events"])
    path = tmp_path / "released.json"
    path.write_text(json.dumps(released), encoding="utf-8")
    return path


def test_contracts_check_fails_on_a_field_the_release_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "shequ.grid.incident.reported@1"
    path = released_with(
        tmp_path, lambda events: events[key]["properties"].update(reporter={"type": "string"})
    )
    assert shequ(["contracts", "check", "--released", str(path)]) == 1
    assert f"breaking: {key}: field reporter was removed" in capsys.readouterr().err


def test_contracts_release_refuses_a_removed_version_unless_retired(tmp_path: Path) -> None:
    path = released_with(
        tmp_path, lambda events: events.update({"shequ.grid.incident.vanished@1": {}})
    )
    assert shequ(["contracts", "release", "--released", str(path)]) == 1
    assert "shequ.grid.incident.vanished@1" in path.read_text(encoding="utf-8")
    assert shequ(["contracts", "release", "--released", str(path), "--retire"]) == 0
    assert json.loads(path.read_text(encoding="utf-8")) == snapshot()
