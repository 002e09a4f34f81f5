"""Notify's rules: who hears what when something happens.

The first rules are fixed here: an acknowledgement to whoever reported an
incident ("every item gets a response") and an alert to the grid worker of
its cell. Rules as data, templates and real channels come with issue #7.
Recipients are addressed by role and reference, never by name or number.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Notification:
    id: str
    template: str
    audience: str
    subject_ref: str
    channel: str
    text: str
    created_at: datetime
    source_event: str


def for_incident_reported(
    *, incident_id: str, grid_cell: str, urgency: str, event_id: str, now: datetime
) -> list[Notification]:
    """The acknowledgement to the reporter and the alert to the cell's grid worker."""
    urgent = "【紧急】" if urgency == "urgent" else ""
    return [
        Notification(
            id=str(uuid.uuid4()),
            template="incident.acknowledged",
            audience="reporter",
            subject_ref=incident_id,
            channel="log",
            text=f"您反映的事项 {incident_id} 已收到，我们会尽快处理并反馈结果。",
            created_at=now,
            source_event=event_id,
        ),
        Notification(
            id=str(uuid.uuid4()),
            template="incident.new_in_cell",
            audience=f"grid_worker:{grid_cell}",
            subject_ref=incident_id,
            channel="log",
            text=f"{urgent}网格 {grid_cell} 有新上报事项 {incident_id}，请及时核实。",
            created_at=now,
            source_event=event_id,
        ),
    ]
