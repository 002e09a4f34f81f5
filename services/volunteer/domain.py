"""Volunteer rules of the first slice: an incident whose category has a
volunteer task creates one open task in its grid cell.

Registry, matching, dispatch, monthly visit rounds and service hours come
with issue #6.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

TASK_KINDS = {
    "alley_unclean": "clean_up",
    "resident_hospitalised": "home_visit",
}


@dataclass(frozen=True)
class Task:
    id: str
    incident_id: str | None
    kind: str
    community: str
    grid_cell: str
    status: str
    created_at: datetime


def task_for_incident(
    *,
    incident_id: str,
    category: str,
    volunteer_task: bool,
    community: str,
    grid_cell: str,
    now: datetime,
) -> Task | None:
    """An open task for an incident whose category asks for volunteers, else None."""
    if not volunteer_task:
        return None
    return Task(
        id=f"VT-{now:%Y%m%d}-{uuid.uuid4().hex[:8]}",
        incident_id=incident_id,
        kind=TASK_KINDS.get(category, "assist"),
        community=community,
        grid_cell=grid_cell,
        status="open",
        created_at=now,
    )
