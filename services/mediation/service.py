"""The mediation service: people's mediation cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request

from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.errors import Forbidden
from shequ.events import event_handler, idempotent
from shequ.http import load_query, route
from shequ.reconcile import Effect
from shequ.service import PlatformService
from shequ.store import Store
from shequ_services.mediation import domain
from shequ_services.mediation.schemas import CaseListSchema, CaseQuerySchema, CaseSchema
from shequ_services.mediation.store import CaseRepository

READER_ROLES = ("mediator", "community_staff", "admin", "auditor")


class MediationService(PlatformService):
    name = "mediation"

    cases = Store(CaseRepository)
    report_effects = (Effect("cases", "incident_id", expected="opens_mediation"),)

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("cases")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        case = domain.case_for_incident(
            incident_id=data["incident_id"],
            category=data["category"]["code"],
            opens_mediation=data["category"]["opens_mediation"],
            community=data["community"],
            now=datetime.now(UTC),
        )
        if case is not None:
            self.cases.open(case)

    @route(
        "GET",
        "/api/v1/mediation/cases",
        summary="The mediation cases opened for an incident",
        query=CaseQuerySchema,
        response=CaseListSchema,
        errors=(403,),
    )
    def list_cases(self, request: Request) -> dict[str, Any]:
        if not request.identity.has_role(*READER_ROLES):
            raise Forbidden("mediation cases are visible to mediators and community staff")
        query = load_query(request, CaseQuerySchema())
        return {"items": CaseSchema(many=True).dump(self.cases.for_incident(query["incident_id"]))}
