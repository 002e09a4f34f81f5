"""The grid's repository: the only code that touches the grid's collections."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from shequ.auth import Identity
from shequ.contracts import grid as contract
from shequ.errors import NotFound
from shequ.store import Repository, as_record
from shequ_services.grid import deadlines
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.domain import (
    CLOSED_STATES,
    NOT_OPEN_STATES,
    Category,
    DuplicateScope,
    Incident,
)
from shequ_services.grid.workflow import StaleVersion, Transition

INCIDENTS = "incidents"


class IncidentNotFound(NotFound):
    pass


class IncidentChanged(Exception):
    """A timer scan lost a race with a step or another replica; the next scan retries."""


class IncidentRepository(Repository):
    INDEXES = {
        INCIDENTS: [
            IndexModel([("reporter", 1), ("reported_at", DESCENDING)]),
            IndexModel([("community", 1), ("reported_at", DESCENDING)]),
            IndexModel([("department", 1), ("reported_at", DESCENDING)]),
            IndexModel([("next_due", ASCENDING)], sparse=True),
            IndexModel([("category", 1), ("grid_cell", 1), ("reported_at", DESCENDING)]),
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
                sequence=incident.event_seq,
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

    def record_transition(
        self, incident: Incident, step: Transition, clocks: dict[str, Clock]
    ) -> Incident:
        """Store one lifecycle step, its clocks and its event, if nobody changed the incident.

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
            changes: dict[str, Any] = {
                "status": step.to_state,
                "clocks": _clock_documents(clocks),
                "next_due": deadlines.next_due(clocks),
            }
            if step.action == "dispatch":
                changes["department"] = step.fields["department"]
            document = self.db[INCIDENTS].find_one_and_update(
                {"_id": incident.id, "version": incident.version},
                {
                    "$set": changes,
                    "$inc": {"version": 1, "event_seq": 1},
                    "$push": {"history": entry},
                },
                return_document=ReturnDocument.AFTER,
                session=self.session,
            )
            if document is None:
                raise StaleVersion(expected=incident.version, actual=self.get(incident.id).version)
            updated = _to_incident(document)
            name = contract.transition_event(step.action, step.to_state)
            self.emit(
                contract.TRANSITION_SPECS[name],
                subject=incident.id,
                sequence=updated.event_seq,
                data={
                    **_place(incident),
                    "action": step.action,
                    "from_state": step.from_state,
                    "to_state": step.to_state,
                    "department": updated.department,
                    "at": step.at,
                },
            )
            return updated

        return self.run_in_transaction(work)

    def due(self, now: datetime, limit: int) -> list[Incident]:
        """Incidents with a clock alert due at ``now``, earliest first."""
        cursor = (
            self.db[INCIDENTS]
            .find({"next_due": {"$lte": now}})
            .sort("next_due", ASCENDING)
            .limit(limit)
        )
        return [_to_incident(document) for document in cursor]

    def record_alerts(
        self,
        incident: Incident,
        alerts: list[tuple[str, str]],
        clocks: dict[str, Clock],
    ) -> None:
        """Store raised alerts and emit one event each, exactly once across replicas.

        The update is conditional on the incident's version and event count as
        read: a replica that scanned the same incident concurrently, or a step
        taken meanwhile, makes this one match nothing, and its transaction
        (events included) is rolled back by ``StaleVersion``.
        """

        def work() -> None:
            document = self.db[INCIDENTS].find_one_and_update(
                {"_id": incident.id, "version": incident.version, "event_seq": incident.event_seq},
                {
                    "$set": {
                        "clocks": _clock_documents(clocks),
                        "next_due": deadlines.next_due(clocks),
                    },
                    "$inc": {"event_seq": len(alerts)},
                },
                session=self.session,
            )
            if document is None:
                raise IncidentChanged(f"incident {incident.id} changed since it was scanned")
            for offset, (clock, alert) in enumerate(alerts, start=1):
                self.emit(
                    contract.ALERT_SPECS[alert],
                    subject=incident.id,
                    sequence=incident.event_seq + offset,
                    data={
                        **_place(incident),
                        "clock": clock,
                        "deadline": clocks[clock].deadline,
                        "department": incident.department,
                    },
                )

        self.run_in_transaction(work)

    def open_by_category(self) -> dict[str, int]:
        """How many incidents are open (not closed, not rejected) per category."""
        counts: dict[str, int] = {}
        open_query = {"status": {"$nin": [*CLOSED_STATES, "rejected"]}}
        for document in self.db[INCIDENTS].find(open_query, {"category": 1}):
            counts[document["category"]] = counts.get(document["category"], 0) + 1
        return counts

    def open_in(self, scope: DuplicateScope, limit: int = 20) -> list[Incident]:
        """Open incidents a new report may duplicate (``domain.duplicate_scope``), newest first."""
        cursor = (
            self.db[INCIDENTS]
            .find(
                {
                    "category": scope.category,
                    "grid_cell": {"$in": list(scope.cells)},
                    "reported_at": {"$gte": scope.since, "$lte": scope.until},
                    "status": {"$nin": list(NOT_OPEN_STATES)},
                    "_id": {"$ne": scope.exclude},
                }
            )
            .sort("reported_at", DESCENDING)
            .limit(limit)
        )
        return [_to_incident(document) for document in cursor]

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


def _place(incident: Incident) -> dict[str, str]:
    """The fields of ``IncidentPlaceV1``, shared by every event after the report."""
    return {
        "incident_id": incident.id,
        "category": incident.category,
        "community": incident.community,
        "grid_cell": incident.grid_cell,
    }


def _clock_documents(clocks: dict[str, Clock]) -> dict[str, dict[str, Any]]:
    return {name: clock.to_document() for name, clock in clocks.items()}


def _to_incident(document: dict[str, Any]) -> Incident:
    record = as_record(document)
    record["clocks"] = {
        name: Clock.from_document(clock) for name, clock in record.get("clocks", {}).items()
    }
    return Incident(**record)
