"""The grid's repository: the only code that touches the grid's collections."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from pymongo import DESCENDING, IndexModel

from shequ.auth import Identity
from shequ.contracts import grid as contract
from shequ.errors import NotFound
from shequ.store import Repository, as_record
from shequ_services.grid.domain import Category, Incident
from shequ_services.grid.workflow import StaleVersion, Transition

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

    def record_transition(self, incident: Incident, step: Transition) -> Incident:
        """Store one lifecycle step and its event, if nobody changed the incident meanwhile.

        The update is conditional on the version the step was decided on, so
        two concurrent steps cannot both apply: the loser gets ``StaleVersion``.
        """

        def work() -> Incident:
            entry = {
                "at": step.at,
                "actor": step.actor,
                "action": step.action,
                "from": step.from_state,
                "to": step.to_state,
                "fields": _storable(step.fields),
            }
            changes: dict[str, Any] = {"status": step.to_state}
            if step.action == "dispatch":
                changes["department"] = step.fields["department"]
            result = self.db[INCIDENTS].update_one(
                {"_id": incident.id, "version": incident.version},
                {"$set": changes, "$inc": {"version": 1}, "$push": {"history": entry}},
                session=self.session,
            )
            if result.matched_count == 0:
                current = self.get(incident.id)
                raise StaleVersion(expected=incident.version, actual=current.version)
            name = contract.transition_event(step.action, step.to_state)
            self.emit(
                contract.TRANSITION_SPECS[name],
                subject=incident.id,
                sequence=incident.version + 1,
                data={
                    "incident_id": incident.id,
                    "category": incident.category,
                    "community": incident.community,
                    "grid_cell": incident.grid_cell,
                    "action": step.action,
                    "from_state": step.from_state,
                    "to_state": step.to_state,
                    "department": changes.get("department", incident.department),
                    "at": step.at,
                },
            )
            return self.get(incident.id)

        return self.run_in_transaction(work)

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
        elif identity.has_role("department") and identity.department:
            query = {"$or": [{"department": identity.department}, {"reporter": identity.sub}]}
        else:
            query = {"reporter": identity.sub}
        if community is not None:
            query = {"$and": [query, {"community": community}]}
        cursor = self.db[INCIDENTS].find(query).sort("reported_at", DESCENDING).limit(limit)
        return [_to_incident(document) for document in cursor]


def _storable(fields: dict[str, Any]) -> dict[str, Any]:
    """BSON has no date type: a target date is stored as its ISO text."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in fields.items()}


def _to_incident(document: dict[str, Any]) -> Incident:
    return Incident(**as_record(document))
