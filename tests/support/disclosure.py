"""Putting entries on the disclosure log the way staff do: through the API, on a real stack.

Each test gets a community of its own (``fresh_community``): the session's
platform is shared, and the board's filters then keep other tests' entries
out of what a test counts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import requests

from shequ.contracts import grid
from tests.conftest import Platform, wait_for
from tests.support.events import publish_event

API = "/api/v1/disclosure"


def fresh_community() -> str:
    return f"board-{uuid.uuid4().hex[:8]}"


def staff(platform: Platform, community: str) -> requests.Session:
    return platform.session("community_staff", sub="staff-board", communities=(community,))


def publish(platform: Platform, community: str, **fields: Any) -> dict[str, Any]:
    """Publish one staff entry (a notice for 2026-03 unless told otherwise); its JSON."""
    body = {
        "kind": "notice",
        "cadence": "ad_hoc",
        "community": community,
        "period": "2026-03",
        "title": "通知",
        "body": {},
        **fields,
    }
    response = staff(platform, community).post(
        f"{platform.url}{API}/entries", json=body, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


def sign(platform: Platform, community: str) -> dict[str, Any]:
    """Sign a checkpoint now (covering every entry so far); its JSON."""
    response = staff(platform, community).post(f"{platform.url}{API}/checkpoints", timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()


def rate_by_event(platform: Platform, community: str, score: int, month: str = "2026-03") -> str:
    """A resident's rating as grid announces it, straight onto the broker.

    The monthly figures count only what the platform wrote from events, so a
    test that wants predictable figures feeds events, not staff entries. The
    category is one the session's grid has reported (not sensitive), so each
    rating carries its incident as reference. Returns the made-up incident id.
    """
    incident_id = f"INC-{uuid.uuid4().hex[:10]}"
    publish_event(
        platform.servers.amqp_uri,
        grid.INCIDENT_RATED_V1,
        {
            "incident_id": incident_id, "category": "facility_damaged", "community": community,
            "grid_cell": "qy-01", "score": score, "outcome": "closed_resolved",
            "at": datetime.fromisoformat(f"{month}-15T10:00:00+08:00"),
        },
        subject=incident_id,
    )  # fmt: skip
    return incident_id


def rated(platform: Platform, community: str, count: int, month: str = "2026-03") -> None:
    """Wait until ``count`` rating entries of the community's month are on the log."""
    wait_for(
        lambda: (
            len(
                requests.get(
                    f"{platform.url}{API}/entries",
                    params={"community": community, "period": month, "kind": "staff_evaluation"},
                    timeout=10,
                ).json()["items"]
            )
            >= count
        ),
        what=f"{count} ratings on the log for {community}",
    )
