"""Putting entries on the disclosure log the way staff do: through the API, on a real stack.

Each test gets a community of its own (``fresh_community``): the session's
platform is shared, and the board's filters then keep other tests' entries
out of what a test counts.
"""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests.conftest import Platform

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
