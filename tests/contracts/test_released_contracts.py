"""No event version released to bureaus changed in a breaking way."""

from __future__ import annotations

from shequ.catalogue import snapshot
from shequ.compat import breaking_changes, load_released


def test_no_released_event_version_has_a_breaking_change() -> None:
    problems = breaking_changes(load_released(), snapshot())
    assert problems == [], (
        "publish a breaking change as a new version beside the old one "
        "(docs/bureaus.md, compatibility rules)"
    )
