"""The grid's repository: the only code that touches the grid's collections."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pymongo import DESCENDING, IndexModel

from shequ.auth import Identity
from shequ.contracts import grid as contract
from shequ.errors import NotFound
from shequ.store import Repository, as_record
from shequ_services.grid.domain import Category, Incident

INCIDENTS = "incidents"


class IncidentNotFound(NotFound):
    pass


class IncidentRepository(Repository):
    INDEXES = {
        INCIDENTS: [
            IndexModel([("reporter", 1), ("reported_at", DESCENDING)]),
            IndexModel([("community", 1), ("reported_at", DESCENDING)]),
        ]
    }

    def add_reported(self, incident: Incident, category: Category) -> None:
        """Store a new incident and its ``incident.reported`` event in one transaction."""

        def work() -> None:
            document = asdict(incident)
            document["_id"] = document.pop("id")
            self.db[INCIDENTS].insert_one(document, session=self.session)
            self.emit(
                contract.INCIDENT_REPORTED_V1,
                subject=incident.id,
                sequence=incident.version,
                data={
                    "incident_id": incident.id,
                    "category": {
                        "code": category.code,
                        "name_zh": category.name_zh,
                        "opens_mediation": category.opens_mediation,
                        "volunteer_task": category.volunteer_task,
                        "sensitive": category.sensitive,
                    },
                    "community": incident.community,
                    "grid_cell": incident.grid_cell,
                    "channel": incident.channel,
                    "urgency": incident.urgency,
                    "reported_at": incident.reported_at,
                },
            )

        self.run_in_transaction(work)

    def get(self, incident_id: str) -> Incident:
        document = self.db[INCIDENTS].find_one({"_id": incident_id}, session=self.session)
        if document is None:
            raise IncidentNotFound(f"no incident {incident_id}")
        return _to_incident(document)

    def visible_to(
        self, identity: Identity, *, community: str | None, limit: int
    ) -> list[Incident]:
        """The newest incidents the caller may read (same rule as ``domain.can_read``)."""
        if identity.has_role("admin", "auditor"):
            query: dict[str, Any] = {}
        elif identity.has_role("community_staff", "grid_worker"):
            query = {
                "$or": [
                    {"community": {"$in": list(identity.communities)}},
                    {"reporter": identity.sub},
                ]
            }
        else:
            query = {"reporter": identity.sub}
        if community is not None:
            query = {"$and": [query, {"community": community}]}
        cursor = self.db[INCIDENTS].find(query).sort("reported_at", DESCENDING).limit(limit)
        return [_to_incident(document) for document in cursor]


def _to_incident(document: dict[str, Any]) -> Incident:
    return Incident(**as_record(document))
