"""The grid service: incidents reported by grid workers and residents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.http import json_response, load_body, load_query, route
from shequ.metrics import INCIDENT_STAGE_SECONDS, INCIDENTS_OPEN, SLA_BREACHES
from shequ.service import PlatformService
from shequ.store import Store
from shequ.timers import timer
from shequ_services.grid import deadlines, domain, workflow
from shequ_services.grid import registry as registry_rules
from shequ_services.grid.reference import Reference, RegistryAdmin
from shequ_services.grid.schemas import (
    REGISTRY_SCHEMAS,
    CategorySchema,
    HistoryEntrySchema,
    IncidentListQuerySchema,
    IncidentReportSchema,
    RegistryListQuerySchema,
    SubdistrictSchema,
    TransitionRequestSchema,
    incident_schema,
)
from shequ_services.grid.store import IncidentChanged, IncidentRepository

REPORTER_ROLES = ("resident", "grid_worker", "community_staff", "admin")
REGISTRY_READERS = ("admin", "auditor", "community_staff")
REGISTRY_KIND = f"<any({', '.join(repr(k) for k in registry_rules.KINDS)}):kind>"


class GridService(PlatformService):
    name = "grid"

    incidents = Store(IncidentRepository)
    reference = Reference()
    registry = RegistryAdmin()

    @route("GET", "/api/v1/grid/categories", public=True)
    def list_categories(self, request: Request) -> list[dict[str, Any]]:
        active = [c for c in self.reference.categories.values() if c.active]
        return CategorySchema(many=True).dump(active)

    @route("POST", "/api/v1/grid/incidents")
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
        scope = domain.duplicate_scope(
            incident, self.reference.cells, self.reference.duplicate_window
        )
        incident = domain.link_duplicates(incident, scope, self.incidents.open_in(scope))
        self.incidents.add_reported(incident, self.reference.categories[incident.category])
        return json_response(
            incident_schema(identity.roles).dump(incident),
            status=201,
            headers={"Location": f"/api/v1/grid/incidents/{incident.id}"},
        )

    @route("GET", "/api/v1/grid/incidents/<string:incident_id>")
    def get_incident(self, request: Request, incident_id: str) -> dict[str, Any]:
        incident = self._readable(request, incident_id)
        return incident_schema(request.identity.roles).dump(incident)

    @route("GET", "/api/v1/grid/incidents/<string:incident_id>/history")
    def get_history(self, request: Request, incident_id: str) -> dict[str, Any]:
        incident = self._readable(request, incident_id)
        return {"items": HistoryEntrySchema(many=True).dump(incident.history)}

    @route("POST", "/api/v1/grid/incidents/<string:incident_id>/transitions")
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
            if decided.action == "dispatch":
                registry_rules.require_department(
                    self.reference.departments, decided.fields["department"]
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
        except registry_rules.UnknownDepartment as exc:
            raise InvalidInput("the step failed validation", {"department": [str(exc)]}) from exc
        for stage in stopped:
            INCIDENT_STAGE_SECONDS.labels(stage.clock, incident.category).observe(stage.seconds)
        return incident_schema(identity.roles).dump(updated)

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
        identity = request.identity
        if not domain.can_read(
            incident,
            sub=identity.sub,
            roles=identity.roles,
            communities=identity.communities,
            department=identity.department,
        ):
            # Not 403: whether an incident exists is itself not for everyone to know.
            raise NotFound(f"no incident {incident_id}")
        return incident

    @route("GET", "/api/v1/grid/incidents")
    def list_incidents(self, request: Request) -> dict[str, Any]:
        query = load_query(request, IncidentListQuerySchema())
        found = self.incidents.visible_to(
            request.identity, community=query.get("community"), limit=query["limit"]
        )
        return {"items": incident_schema(request.identity.roles, many=True).dump(found)}

    # -- registry admin API: communities, cells, buildings, departments, grid workers,
    # categories. Admins write; auditors read all; community staff read their own.

    @route("GET", "/api/v1/grid/registry")
    def get_registry(self, request: Request) -> dict[str, Any]:
        self._registry_reader(request)
        loaded = self.registry.load()
        return {
            "subdistrict": SubdistrictSchema().dump(loaded.subdistrict),
            "kinds": list(registry_rules.KINDS),
        }

    @route("GET", f"/api/v1/grid/registry/{REGISTRY_KIND}")
    def list_registry_entries(self, request: Request, kind: str) -> dict[str, Any]:
        within = self._registry_reader(request)
        query = load_query(request, RegistryListQuerySchema())
        with _registry_errors():
            entries, last = self.registry.page(kind, within=within, **query)
        return {"items": REGISTRY_SCHEMAS[kind].out(many=True).dump(entries), "next": last}

    @route("GET", f"/api/v1/grid/registry/{REGISTRY_KIND}/<string:key>")
    def get_registry_entry(self, request: Request, kind: str, key: str) -> dict[str, Any]:
        within = self._registry_reader(request)
        with _registry_errors():
            entry = self.registry.get(kind, key)
        if within is not None and not registry_rules.in_communities(kind, entry, within):
            raise NotFound(f"no {registry_rules.NOUNS[kind]} {key!r}")
        return REGISTRY_SCHEMAS[kind].out().dump(entry)

    @route("POST", f"/api/v1/grid/registry/{REGISTRY_KIND}")
    def create_registry_entry(self, request: Request, kind: str) -> Response:
        _registry_admin(request)
        values = load_body(request, REGISTRY_SCHEMAS[kind].create())
        with _registry_errors():
            decided = registry_rules.create(self.registry.load(), kind, values)
            entry = self.registry.save(kind, decided, new=True)
        body = REGISTRY_SCHEMAS[kind].out().dump(entry)
        key = body.get("id") or body["code"]
        return json_response(
            body, status=201, headers={"Location": f"/api/v1/grid/registry/{kind}/{key}"}
        )

    @route("PATCH", f"/api/v1/grid/registry/{REGISTRY_KIND}/<string:key>")
    def change_registry_entry(self, request: Request, kind: str, key: str) -> dict[str, Any]:
        _registry_admin(request)
        values = load_body(request, REGISTRY_SCHEMAS[kind].change())
        with _registry_errors():
            current = self.registry.get(kind, key)
            decided = registry_rules.change(self.registry.load(), kind, current, values)
            entry = self.registry.save(kind, decided, new=False)
        return REGISTRY_SCHEMAS[kind].out().dump(entry)

    def _registry_reader(self, request: Request) -> tuple[str, ...] | None:
        """None for callers who read the whole registry, else the communities they may read."""
        identity = request.identity
        if identity.has_role("admin", "auditor"):
            return None
        if identity.has_role(*REGISTRY_READERS):
            return identity.communities
        raise Forbidden("the registry is for admins, auditors and community staff")


def _registry_admin(request: Request) -> None:
    if not request.identity.has_role("admin"):
        raise Forbidden("only admins change the registry")


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Registry refusals as HTTP problems: 422 per field, 409 duplicate id, 404 unknown id."""
    try:
        yield
    except registry_rules.RegistryInvalid as exc:
        raise InvalidInput("the registry entry failed validation", exc.errors) from exc
    except registry_rules.DuplicateId as exc:
        raise Conflict(str(exc)) from exc
    except registry_rules.NotInRegistry as exc:
        raise NotFound(str(exc)) from exc
