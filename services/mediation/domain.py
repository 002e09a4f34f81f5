"""Mediation rules of the first slice: a dispute incident opens one case.

Parties, sessions, agreements, judicial confirmation and referral to court
come with issue #5.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Case:
    id: str
    incident_id: str | None
    community: str
    dispute_type: str
    status: str
    opened_at: datetime


def case_for_incident(
    *, incident_id: str, category: str, opens_mediation: bool, community: str, now: datetime
) -> Case | None:
    """A new case for a dispute incident, or None when the category is not a dispute."""
    if not opens_mediation:
        return None
    return Case(
        id=f"MED-{community}-{now:%Y}-{uuid.uuid4().hex[:8]}",
        incident_id=incident_id,
        community=community,
        dispute_type=category,
        status="intake",
        opened_at=now,
    )
