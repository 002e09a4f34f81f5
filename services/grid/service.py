"""The grid service: incidents reported by grid workers and residents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.http import json_response, load_body, load_query, route
from shequ.metrics import INCIDENT_STAGE_SECONDS, INCIDENTS_OPEN, SLA_BREACHES
from shequ.pagination import Cursors, query_scope
from shequ.service import PlatformService
from shequ.store import Store
from shequ.timers import timer
from shequ_services.grid import deadlines, domain, workflow
from shequ_services.grid.reference import Reference
from shequ_services.grid.schemas import (
    REDACTED_HISTORY_FIELDS,
    CategorySchema,
    HistoryEntrySchema,
    HistorySchema,
    IncidentListQuerySchema,
    IncidentPageSchema,
    IncidentReportSchema,
    IncidentSchema,
    TransitionRequestSchema,
)
from shequ_services.grid.store import (
    IncidentChanged,
    IncidentRepository,
    parse_position,
    position_of,
)

REPORTER_ROLES = ("resident", "grid_worker", "community_staff", "admin")


class GridService(PlatformService):
    name = "grid"

    incidents = Store(IncidentRepository)
    reference = Reference()
    cursors = Cursors()

    @route(
        "GET",
        "/api/v1/grid/categories",
        public=True,
        summary="The active incident categories",
        response=CategorySchema(many=True),
    )
    def list_categories(self, request: Request) -> list[dict[str, Any]]:
        active = [c for c in self.reference.categories.values() if c.active]
        return CategorySchema(many=True).dump(active)

    @route(
        "POST",
        "/api/v1/grid/incidents",
        summary="Report an incident",
        body=IncidentReportSchema,
        response=IncidentSchema,
        status=201,
        errors=(403,),
    )
    def report_incident(self, request: Request) -> Response:
        identity = request.identity
        if not identity.has_role(*REPORTER_ROLES):
            raise Forbidden("only residents, grid workers and community staff report incidents")
        report = load_body(request, IncidentReportSchema())
        channel = report["channel"] or (
            "patrol" if identity.has_role("grid_worker") else "resident_app"
        )
        try:
            incident = domain.report_incident(
                categories=self.reference.categories,
                cells=self.reference.cells,
                category=report["category"],
                grid_cell=report["grid_cell"],
                description=report["description"],
                location=report["location"],
                reporter=identity.sub,
                channel=channel,
                now=datetime.now(UTC),
                policy=self.reference.policy,
            )
        except domain.UnknownCategory as exc:
            raise InvalidInput("the report failed validation", {"category": [str(exc)]}) from exc
        except domain.CategoryRetired as exc:
            raise InvalidInput("the report failed validation", {"category": [str(exc)]}) from exc
        except domain.UnknownGridCell as exc:
            raise InvalidInput("the report failed validation", {"grid_cell": [str(exc)]}) from exc
        self.incidents.add_reported(incident, self.reference.categories[incident.category])
        return json_response(
            IncidentSchema().dump(incident),
            status=201,
            headers={"Location": f"/api/v1/grid/incidents/{incident.id}"},
        )

    @route(
        "GET",
        "/api/v1/grid/incidents/<string:incident_id>",
        summary="One incident, as the caller may see it",
        response=IncidentSchema,
    )
    def get_incident(self, request: Request, incident_id: str) -> dict[str, Any]:
        """A sensitive incident may come redacted: without description and location."""
        return self._dump(request, self._readable(request, incident_id))

    @route(
        "GET",
        "/api/v1/grid/incidents/<string:incident_id>/history",
        summary="Every lifecycle step of an incident",
        response=HistorySchema,
    )
    def get_history(self, request: Request, incident_id: str) -> dict[str, Any]:
        """A redacted view leaves out who acted and the steps' free-text fields."""
        incident = self._readable(request, incident_id)
        redacted = self._view(request, incident) == domain.REDACTED
        exclude = REDACTED_HISTORY_FIELDS if redacted else ()
        return {"items": HistoryEntrySchema(many=True, exclude=exclude).dump(incident.history)}

    @route(
        "POST",
        "/api/v1/grid/incidents/<string:incident_id>/transitions",
        summary="Take one lifecycle step (the table is workflow.RULES)",
        body=TransitionRequestSchema,
        response=IncidentSchema,
        errors=(403, 409),
    )
    def transition(self, request: Request, incident_id: str) -> dict[str, Any]:
        incident = self._readable(request, incident_id)
        step = load_body(request, TransitionRequestSchema())
        action, expected = step.pop("action"), step.pop("expected_version")
        identity = request.identity
        try:
            decided = workflow.apply(
                incident.status,
                incident.version,
                action,
                expected_version=expected,
                actor=identity.sub,
                roles=identity.roles,
                fields=step,
                at=datetime.now(UTC),
                closed_at=domain.closed_at(incident),
                reporter=incident.reporter,
            )
            clocks, stopped = deadlines.on_state(
                incident.clocks,
                self.reference.policy,
                urgency=incident.urgency,
                to_state=decided.to_state,
                at=decided.at,
                target_date=decided.fields.get("target_date"),
            )
            updated = self.incidents.record_transition(incident, decided, clocks)
        except workflow.StaleVersion as exc:
            raise Conflict(str(exc), current_version=exc.actual) from exc
        except workflow.IllegalTransition as exc:
            raise Conflict(str(exc), state=exc.state, allowed=exc.allowed) from exc
        except workflow.TransitionNotPermitted as exc:
            raise Forbidden(str(exc)) from exc
        except (workflow.MissingField, workflow.InvalidField) as exc:
            raise InvalidInput("the step failed validation", {exc.field: [str(exc)]}) from exc
        for stage in stopped:
            INCIDENT_STAGE_SECONDS.labels(stage.clock, incident.category).observe(stage.seconds)
        return self._dump(request, updated)

    @timer("GRID_DEADLINE_SCAN_SECONDS", 15)
    def scan_deadlines(self) -> None:
        """Raise the clock alerts that fell due; safe with several replicas and restarts."""
        now = datetime.now(UTC)
        for incident in self.incidents.due(now, limit=200):
            alerts = deadlines.due_alerts(incident.clocks, now)
            if not alerts:
                continue
            try:
                self.incidents.record_alerts(
                    incident, alerts, deadlines.mark_raised(incident.clocks, alerts, now)
                )
            except IncidentChanged:
                continue  # the next scan sees the new state
            for clock, alert in alerts:
                if alert == "overdue":
                    SLA_BREACHES.labels(clock, incident.category).inc()
        INCIDENTS_OPEN.clear()
        for category, count in self.incidents.open_by_category().items():
            INCIDENTS_OPEN.labels(category).set(count)

    def _readable(self, request: Request, incident_id: str) -> domain.Incident:
        incident = self.incidents.get(incident_id)
        if self._view(request, incident) == domain.HIDDEN:
            # Not 403: whether an incident exists is itself not for everyone to know.
            raise NotFound(f"no incident {incident_id}")
        return incident

    # Object-level read access (domain.READ_RULES): every read and listing goes
    # through _view / _dump, and the listing's query through the same table.

    def _view(self, request: Request, incident: domain.Incident) -> str:
        category = self.reference.categories.get(incident.category)
        sensitive = category is None or category.sensitive
        return domain.read_view(incident, request.identity, sensitive=sensitive)

    def _dump(self, request: Request, incident: domain.Incident) -> dict[str, Any]:
        redacted = self._view(request, incident) == domain.REDACTED
        exclude = domain.REDACTED_FIELDS if redacted else ()
        return IncidentSchema(exclude=exclude).dump(incident)

    def _ordinary_categories(self) -> frozenset[str]:
        return frozenset(c.code for c in self.reference.categories.values() if not c.sensitive)

    @route(
        "GET",
        "/api/v1/grid/incidents",
        summary="The incidents the caller may see, newest first, filtered, one page at a time",
        query=IncidentListQuerySchema,
        response=IncidentPageSchema,
    )
    def list_incidents(self, request: Request) -> dict[str, Any]:
        """Pages follow ``next_cursor``; a cursor only works with the filters it came from."""
        query = load_query(request, IncidentListQuerySchema())
        limit, token = query.pop("limit"), query.pop("cursor", None)
        scope = query_scope(query)
        after = parse_position(self.cursors.decode(token, scope=scope)) if token else None
        found, more = self.incidents.visible_to(
            request.identity,
            filters=query,
            ordinary_categories=self._ordinary_categories(),
            after=after,
            limit=limit,
        )
        next_cursor = self.cursors.encode(position_of(found[-1]), scope=scope) if more else None
        return {"items": [self._dump(request, i) for i in found], "next_cursor": next_cursor}
