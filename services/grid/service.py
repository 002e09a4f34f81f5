"""The grid service: incidents reported by grid workers and residents."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from shequ import policy
from shequ.contracts import CloudEvent
from shequ.contracts import mediation as mediation_events
from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.events import event_handler, idempotent
from shequ.http import json_response, load_body, load_query, route
from shequ.metrics import (
    INCIDENT_STAGE_SECONDS,
    INCIDENTS_IN_STATE,
    INCIDENTS_OPEN,
    INCIDENTS_OVERDUE,
    RATE_DENOMINATOR,
    RATE_NUMERATOR,
    SLA_BREACHES,
    SLA_MET,
)
from shequ.pagination import Cursors, query_scope
from shequ.rpc import rpc
from shequ.service import PlatformService
from shequ.store import Store
from shequ.timers import timer
from shequ_services.grid import deadlines, domain, gauges, open311, rates, rating, workflow
from shequ_services.grid import registry as registry_rules
from shequ_services.grid.open311 import Open311Error
from shequ_services.grid.reference import Reference, RegistryAdmin
from shequ_services.grid.schemas import (
    OPEN311_ERRORS,
    REDACTED_HISTORY_FIELDS,
    REGISTRY_CHANGE_DOC,
    REGISTRY_CREATE_DOC,
    REGISTRY_ENTRY_DOC,
    REGISTRY_PAGE_DOC,
    REGISTRY_SCHEMAS,
    CategorySchema,
    HistoryEntrySchema,
    HistorySchema,
    IncidentListQuerySchema,
    IncidentPageSchema,
    IncidentReportSchema,
    IncidentSchema,
    Open311DefinitionSchema,
    Open311PostedSchema,
    Open311PostFormSchema,
    Open311RequestSchema,
    Open311ServiceSchema,
    Open311TokenSchema,
    RatesQuerySchema,
    RatesSchema,
    RatingRequestSchema,
    RegistryListQuerySchema,
    RegistryOverviewSchema,
    SubdistrictSchema,
    TransitionRequestSchema,
    incident_schema,
)
from shequ_services.grid.sla_pages import SlaPages
from shequ_services.grid.store import (
    IncidentChanged,
    IncidentNotFound,
    IncidentRepository,
    parse_position,
    position_of,
)

log = logging.getLogger(__name__)

REGISTRY_KIND = f"<any({', '.join(repr(k) for k in registry_rules.KINDS)}):kind>"


OPEN311_CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "xml": "text/xml; charset=utf-8",
}


def open311_response(
    fmt: str, payload: Any, root: str, item_tag: str | None = None, status: int = 200
) -> Response:
    """A GeoReport body in the format the path asked for, UTF-8 as the spec requires."""
    if fmt != "xml":
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    elif item_tag is None:
        body = open311.object_to_xml(root, payload)
    else:
        body = open311.to_xml(root, item_tag, payload)
    return Response(body, status=status, content_type=OPEN311_CONTENT_TYPES[fmt])


def open311_answer(method: Callable[..., Response]) -> Callable[..., Response]:
    """Answer an ``Open311Error`` with the spec's error list instead of problem+json.

    GeoReport clients parse ``errors/error`` (XML) or ``[{code, description}]``
    (JSON) in the format of the path they called.
    """

    @functools.wraps(method)
    def answer(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return method(self, request, *args, **kwargs)
        except Open311Error as exc:
            errors = open311.errors_body(exc.errors)
            return open311_response(kwargs["fmt"], errors, "errors", "error", status=exc.status)

    return answer


class GridService(SlaPages, PlatformService):
    name = "grid"
    #: Whether a deadline scan found no incident left without ``next_deadline``
    #: (for this process: the workers are instances of this class).
    deadlines_backfilled: ClassVar[bool] = False

    incidents = Store(IncidentRepository)
    reference = Reference()
    cursors = Cursors()
    registry = RegistryAdmin()

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
        action="grid.incident.report",
        summary="Report an incident",
        body=IncidentReportSchema,
        response=IncidentSchema,
        status=201,
        errors=(403,),
    )
    def report_incident(self, request: Request) -> Response:
        identity = request.identity
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

    @route(
        "GET",
        "/api/v1/grid/incidents/<string:incident_id>",
        action="grid.incident.read",
        summary="One incident, as the caller may see it",
        response=IncidentSchema,
    )
    def get_incident(self, request: Request, incident_id: str) -> dict[str, Any]:
        """A sensitive incident may come redacted: without description and location."""
        return self._dump(request, self._readable(request, incident_id))

    @route(
        "GET",
        "/api/v1/grid/incidents/<string:incident_id>/history",
        action="grid.incident.read",
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
        action="grid.incident.transition",
        summary="Take one lifecycle step (the table is workflow.RULES)",
        body=TransitionRequestSchema,
        response=IncidentSchema,
        errors=(403, 409),
    )
    def transition(self, request: Request, incident_id: str) -> dict[str, Any]:
        incident = self._readable(request, incident_id)
        step = load_body(request, TransitionRequestSchema())
        action, expected = step.pop("action"), step.pop("expected_version")
        identity, policy = request.identity, self.reference.policy
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
                reopen_window=self.reference.reopen_window,
                reporter=incident.reporter,
                actor_department=identity.department,
                case=workflow.case_of(
                    incident, deadlines.deadline_date(incident.clocks, policy, "resolve")
                ),
            )
            if decided.action == "dispatch":
                _require_departments(self.reference.departments, decided.fields)
            if decided.action == "merge":
                self._check_merge(request, incident, decided.fields["duplicate_of"])
            effects = workflow.consequences(incident, decided, identity.department)
            clocks, stopped = deadlines.on_state(
                incident.clocks,
                policy,
                urgency=incident.urgency,
                to_state=decided.to_state,
                at=decided.at,
                target_date=effects.resolve_target,
                co_handlers=effects.open_subtasks,
            )
            updated = self.incidents.record_transition(incident, decided, clocks, effects.changes)
        except workflow.StaleVersion as exc:
            raise Conflict(str(exc), current_version=exc.actual) from exc
        except workflow.IllegalTransition as exc:
            raise Conflict(str(exc), state=exc.state, allowed=exc.allowed) from exc
        except workflow.CaseBlocked as exc:
            raise Conflict(str(exc), open_subtasks=list(exc.open_subtasks)) from exc
        except workflow.TransitionNotPermitted as exc:
            raise Forbidden(str(exc)) from exc
        except (workflow.MissingField, workflow.InvalidField) as exc:
            raise InvalidInput("the step failed validation", {exc.field: [str(exc)]}) from exc
        _observe_stopped(stopped, incident.category)
        return self._dump(request, updated)

    @rpc
    def reporter_of(self, incident_id: str) -> str | None:
        """Who reported an incident, as a subject id: for notify, which holds the contact
        points. The subject never travels in an event; it is asked for when needed."""
        try:
            return self.incidents.get(incident_id).reporter
        except IncidentNotFound:
            return None

    @event_handler(mediation_events.SERVICE, mediation_events.CASE_CLOSED)
    @idempotent("incidents")
    def on_mediation_case_closed(self, event: CloudEvent) -> None:
        """A closed mediation case is the lead's feedback: ``report_handled`` when it fits.

        See ``domain.mediation_closes_step``; otherwise the outcome is only
        recorded. An unknown incident (a walk-in case's made-up id, another
        district's) is logged and dropped: retrying cannot make it exist.
        """
        data = event.data
        if not data.get("incident_id"):
            return
        try:
            incident = self.incidents.get(data["incident_id"])
        except NotFound:
            log.warning("mediation case %s names no known incident", data["case_id"])
            return
        now = datetime.now(UTC)
        outcome = {"case_id": data["case_id"], "outcome": data["outcome"], "at": data["at"]}
        if not domain.mediation_closes_step(incident):
            self.incidents.record_mediation(incident.id, {**outcome, "step_taken": False})
            return
        decided = workflow.apply(
            incident.status,
            incident.version,
            "report_handled",
            expected_version=incident.version,
            actor=f"service:{mediation_events.SERVICE}",
            roles=frozenset({"department"}),
            fields={"feedback": domain.mediation_feedback(data["case_id"], data["outcome"])},
            at=now,
            actor_department=incident.department,
            case=workflow.case_of(incident),
        )
        effects = workflow.consequences(incident, decided, incident.department)
        clocks, stopped = deadlines.on_state(
            incident.clocks,
            self.reference.policy,
            urgency=incident.urgency,
            to_state=decided.to_state,
            at=now,
            co_handlers=effects.open_subtasks,
        )
        changes = {**effects.changes, "mediation": {**outcome, "step_taken": True}}
        self.incidents.record_transition(incident, decided, clocks, changes)
        _observe_stopped(stopped, incident.category)

    @timer("GRID_DEADLINE_SCAN_SECONDS", 15)
    def scan_deadlines(self) -> None:
        """Raise the clock alerts that fell due; safe with several replicas and restarts.

        Also gives incidents stored before ``next_deadline`` existed their value,
        a batch a scan, so the SLA board orders them by deadline too, until a
        scan finds none: new incidents are stored with it, and looking for
        the field's absence reads the whole collection.
        """
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
            for alert in alerts:
                if alert.kind == "overdue":
                    clock = incident.clocks[alert.clock].name
                    SLA_BREACHES.labels(clock, incident.category).inc()
        if not GridService.deadlines_backfilled:
            GridService.deadlines_backfilled = self.incidents.fill_next_deadlines(limit=200) == 0

    def refresh_metrics(self) -> None:
        """Open work and the rates' counts, from the store, for the scrape under way.

        ``gauges`` says why these are counted from the store; a label set that
        has no incidents any more is dropped rather than left at its last value.
        """
        now = datetime.now(UTC)
        work = gauges.open_work(self.incidents.open_facts(), now)
        tz = self.reference.policy.calendar.tz
        start, end = rates.period(None, None, today=now.astimezone(tz).date(), tz=tz).bounds()
        counts = gauges.rate_counts(
            self.incidents.rate_facts(
                start=start, end=end, communities=None, category=None, department=None
            ),
            now,
        )
        # Every (clock, category) series exists from the first scrape, at 0: rate() and
        # increase() cannot see the first observation of a series that appears with it.
        for rule in self.reference.policy.clocks:
            for category in self.reference.categories:
                SLA_BREACHES.labels(rule.name, category)
                SLA_MET.labels(rule.name, category)
                INCIDENT_STAGE_SECONDS.labels(rule.name, category)
        _set_all(INCIDENTS_OPEN, {(k,): v for k, v in work.by_category.items()})
        _set_all(INCIDENTS_IN_STATE, work.by_community_state)
        _set_all(INCIDENTS_OVERDUE, work.overdue)
        _set_all(RATE_NUMERATOR, {key: ratio.numerator for key, ratio in counts.items()})
        _set_all(RATE_DENOMINATOR, {key: ratio.denominator for key, ratio in counts.items()})

    def _check_merge(self, request: Request, duplicate: domain.Incident, original: str) -> None:
        """The original must be an incident the caller can see, and one that can take it."""
        try:
            domain.check_merge(duplicate, self._readable(request, original))
        except NotFound as exc:
            raise InvalidInput(
                "the step failed validation", {"duplicate_of": [f"no incident {original}"]}
            ) from exc
        except domain.InvalidMergeTarget as exc:
            raise InvalidInput("the step failed validation", {"duplicate_of": [str(exc)]}) from exc

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
        view = self._view(request, incident)
        category = self.reference.categories.get(incident.category)
        theirs = incident.reporter == request.identity.sub
        if view == domain.FULL and not theirs and (category is None or category.sensitive):
            policy.log_sensitive_use(
                request.identity,
                "grid.incident.read_sensitive",
                policy.Target("incident", incident.id, community=incident.community),
            )
        redacted = view == domain.REDACTED
        exclude = domain.REDACTED_FIELDS if redacted else ()
        return incident_schema(request.identity.roles, exclude=exclude).dump(incident)

    def _ordinary_categories(self) -> frozenset[str]:
        return frozenset(c.code for c in self.reference.categories.values() if not c.sensitive)

    @route(
        "GET",
        "/api/v1/grid/incidents",
        action="grid.incident.read",
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

    @route(
        "POST",
        "/api/v1/grid/incidents/<string:incident_id>/rating",
        action="grid.incident.rate",
        summary="The reporter rates a closed incident 1 to 5 (评)",
        body=RatingRequestSchema,
        response=IncidentSchema,
        status=201,
        errors=(403, 409),
    )
    def rate_incident(self, request: Request, incident_id: str) -> Response:
        incident = self._readable(request, incident_id)
        body = load_body(request, RatingRequestSchema())
        identity = request.identity
        try:
            decided = rating.rate(
                incident,
                expected_version=body["expected_version"],
                actor=identity.sub,
                roles=identity.roles,
                score=body["score"],
                comment=body["comment"],
                at=datetime.now(UTC),
            )
            updated = self.incidents.record_rating(incident, decided, identity.sub)
        except workflow.StaleVersion as exc:
            raise Conflict(str(exc), current_version=exc.actual) from exc
        except rating.RatingNotOpen as exc:
            raise Conflict(str(exc), state=exc.state) from exc
        except rating.AlreadyRated as exc:
            raise Conflict(str(exc), closure=exc.closure) from exc
        except rating.NotTheReporter as exc:
            raise Forbidden(str(exc)) from exc
        except rating.InvalidRating as exc:
            raise InvalidInput("the rating failed validation", {exc.field: [str(exc)]}) from exc
        return json_response(self._dump(request, updated), status=201)

    @route(
        "GET",
        "/api/v1/grid/rates",
        action="grid.rates.read",
        summary="Response, resolution and satisfaction rates, and time per clock",
        query=RatesQuerySchema,
        response=RatesSchema,
        errors=(403,),
    )
    def get_rates(self, request: Request) -> dict[str, Any]:
        identity = request.identity
        query = load_query(request, RatesQuerySchema())
        calendar = self.reference.policy.calendar
        now = datetime.now(UTC)
        try:
            communities = rates.readable_communities(
                identity.roles, identity.communities, query.get("community")
            )
            period = rates.period(
                query.get("from_"),
                query.get("to"),
                today=now.astimezone(calendar.tz).date(),
                tz=calendar.tz,
            )
        except rates.NotAllowed as exc:
            raise Forbidden(str(exc)) from exc
        except rates.InvalidPeriod as exc:
            raise InvalidInput("the period failed validation", {exc.field: [str(exc)]}) from exc
        start, end = period.bounds()
        facts = self.incidents.rate_facts(
            start=start,
            end=end,
            communities=communities,
            category=query.get("category"),
            department=query.get("department"),
        )
        groups = rates.summarise(
            facts,
            now=now,
            clocks=[rule.name for rule in self.reference.policy.clocks],
            tz=calendar.tz,
            group_by=query.get("group_by"),
        )
        return RatesSchema().dump(
            {
                "period": period,
                "filters": {k: query.get(k) for k in ("community", "category", "department")},
                "group_by": query.get("group_by"),
                "definitions": rates.DEFINITIONS,
                "groups": groups,
            }
        )

    # -- Open311 GeoReport v2 (public: clients identify with an api_key on POST) ------------

    @route(
        "GET",
        "/open311/v2/services.<any(json,xml):fmt>",
        public=True,
        summary="Open311: the services (categories) a client may report",
        response=Open311ServiceSchema(many=True),
        tags=("open311",),
    )
    @open311_answer
    def open311_services(self, request: Request, fmt: str) -> Response:
        offered = open311.service_list(
            self.reference.categories.values(), registry=self.reference.questions
        )
        return open311_response(fmt, offered, "services", "service")

    @route(
        "GET",
        "/open311/v2/services/<string:code>.<any(json,xml):fmt>",
        public=True,
        summary="Open311: a service definition (the category's extra questions)",
        response=Open311DefinitionSchema,
        responses=OPEN311_ERRORS,
        tags=("open311",),
    )
    @open311_answer
    def open311_service_definition(self, request: Request, code: str, fmt: str) -> Response:
        category = self.reference.categories.get(code)
        if category is None or not open311.is_offered(category):
            raise Open311Error(404, [("unknown_service_code", f"no service {code!r}")])
        definition = open311.service_definition(category, registry=self.reference.questions)
        return open311_response(fmt, definition, "service_definition")

    @route(
        "POST",
        "/open311/v2/requests.<any(json,xml):fmt>",
        public=True,
        summary="Open311: post a service request (form-encoded, with api_key)",
        body=Open311PostFormSchema,
        body_media_type="application/x-www-form-urlencoded",
        response=Open311PostedSchema(many=True),
        status=201,
        responses=OPEN311_ERRORS,
        tags=("open311",),
    )
    @open311_answer
    def open311_post_request(self, request: Request, fmt: str) -> Response:
        form = {name: request.form.getlist(name) for name in request.form}
        client = self.incidents.open311_client(open311.hash_api_key(open311.api_key_of(form)))
        if client is None:
            raise Open311Error(403, [("invalid_api_key", "api_key is not valid")])
        ref = self.reference
        checked = open311.parse_request(form, ref.categories, registry=ref.questions)
        incident = open311.open_incident(
            checked,
            client=client.name,
            categories=ref.categories,
            cells=ref.cells,
            centroids=ref.centroids,
            now=datetime.now(UTC),
            policy=ref.policy,
        )
        category = ref.categories[incident.category]
        # The caller is the Open311 client its api_key names (no person's token).
        self.incidents.actor = {"open311_client": client.name}
        self.incidents.add_reported(incident, category)
        notice = open311.service_notice(category, ref.policy)
        posted = open311.posted_view(incident, notice)
        return open311_response(fmt, [posted], "service_requests", "request", status=201)

    @route(
        "GET",
        "/open311/v2/tokens/<string:token>.<any(json,xml):fmt>",
        public=True,
        summary="Open311: the request id behind a token",
        response=Open311TokenSchema(many=True),
        responses=OPEN311_ERRORS,
        tags=("open311",),
    )
    @open311_answer
    def open311_token(self, request: Request, token: str, fmt: str) -> Response:
        incident = self._open311_visible(lambda: self.incidents.by_open311_token(token))
        found = {"service_request_id": incident.id, "token": token}
        return open311_response(fmt, [found], "service_requests", "request")

    @route(
        "GET",
        "/open311/v2/requests.<any(json,xml):fmt>",
        public=True,
        summary="Open311: service requests (the spec's filters; 90 days, 1000 at most)",
        response=Open311RequestSchema(many=True),
        responses=OPEN311_ERRORS,
        tags=("open311",),
    )
    @open311_answer
    def open311_requests(self, request: Request, fmt: str) -> Response:
        query = open311.parse_list_query(request.args.to_dict(), datetime.now(UTC))
        offered = [c.code for c in self.reference.categories.values() if open311.is_offered(c)]
        codes = [c for c in offered if not query.service_codes or c in query.service_codes]
        statuses = set(query.statuses)
        found = self.incidents.open311_requests(
            ids=query.service_request_ids,
            categories=tuple(codes),
            start=query.start,
            end=query.end,
            closed=None if len(statuses) != 1 else statuses == {"closed"},
            limit=query.limit,
        )
        views = [self._open311_view(incident) for incident in found]
        return open311_response(fmt, views, "service_requests", "request")

    @route(
        "GET",
        "/open311/v2/requests/<string:request_id>.<any(json,xml):fmt>",
        public=True,
        summary="Open311: one service request",
        response=Open311RequestSchema(many=True),
        responses=OPEN311_ERRORS,
        tags=("open311",),
    )
    @open311_answer
    def open311_request(self, request: Request, request_id: str, fmt: str) -> Response:
        incident = self._open311_visible(lambda: self.incidents.get(request_id))
        return open311_response(fmt, [self._open311_view(incident)], "service_requests", "request")

    def _open311_visible(self, find: Callable[[], domain.Incident]) -> domain.Incident:
        """The incident, if it exists and its category is offered; otherwise the spec's 404."""
        try:
            incident = find()
        except NotFound:
            incident = None
        category = self.reference.categories.get(incident.category) if incident else None
        if incident is None or category is None or category.sensitive:
            raise Open311Error(404, [("not_found", "no such service request")])
        return incident

    def _open311_view(self, incident: domain.Incident) -> dict[str, Any]:
        return open311.incident_view(
            incident,
            category=self.reference.categories[incident.category],
            cells=self.reference.cells,
            policy=self.reference.policy,
        )

    # -- registry admin API: communities, cells, buildings, departments, grid workers,
    # categories. Admins write; auditors read all; community staff read their own.

    @route(
        "GET",
        "/api/v1/grid/registry",
        action="grid.registry.read",
        summary="The sub-district and the kinds of registry entry",
        response=RegistryOverviewSchema,
        errors=(403,),
    )
    def get_registry(self, request: Request) -> dict[str, Any]:
        self._registry_reader(request)
        loaded = self.registry.load()
        return {
            "subdistrict": SubdistrictSchema().dump(loaded.subdistrict),
            "kinds": list(registry_rules.KINDS),
        }

    @route(
        "GET",
        f"/api/v1/grid/registry/{REGISTRY_KIND}",
        action="grid.registry.read",
        summary="Registry entries of one kind, in id order, one page at a time",
        query=RegistryListQuerySchema,
        response=REGISTRY_PAGE_DOC,
        errors=(403,),
    )
    def list_registry_entries(self, request: Request, kind: str) -> dict[str, Any]:
        within = self._registry_reader(request)
        query = load_query(request, RegistryListQuerySchema())
        with _registry_errors():
            entries, last = self.registry.page(kind, within=within, **query)
        return {"items": REGISTRY_SCHEMAS[kind].out(many=True).dump(entries), "next": last}

    @route(
        "GET",
        f"/api/v1/grid/registry/{REGISTRY_KIND}/<string:key>",
        action="grid.registry.read",
        summary="One registry entry",
        response=REGISTRY_ENTRY_DOC,
        errors=(403,),
    )
    def get_registry_entry(self, request: Request, kind: str, key: str) -> dict[str, Any]:
        within = self._registry_reader(request)
        with _registry_errors():
            entry = self.registry.get(kind, key)
        if within is not None and not registry_rules.in_communities(kind, entry, within):
            raise NotFound(f"no {registry_rules.NOUNS[kind]} {key!r}")
        return REGISTRY_SCHEMAS[kind].out().dump(entry)

    @route(
        "POST",
        f"/api/v1/grid/registry/{REGISTRY_KIND}",
        action="grid.registry.change",
        summary="Add a registry entry (admin)",
        body=REGISTRY_CREATE_DOC,
        response=REGISTRY_ENTRY_DOC,
        status=201,
        errors=(403, 409),
    )
    def create_registry_entry(self, request: Request, kind: str) -> Response:
        values = load_body(request, REGISTRY_SCHEMAS[kind].create())
        with _registry_errors():
            decided = registry_rules.create(self.registry.load(), kind, values)
            entry = self.registry.save(kind, decided, new=True)
        body = REGISTRY_SCHEMAS[kind].out().dump(entry)
        key = body.get("id") or body["code"]
        return json_response(
            body, status=201, headers={"Location": f"/api/v1/grid/registry/{kind}/{key}"}
        )

    @route(
        "PATCH",
        f"/api/v1/grid/registry/{REGISTRY_KIND}/<string:key>",
        action="grid.registry.change",
        summary="Change a registry entry, or retire a category (admin)",
        body=REGISTRY_CHANGE_DOC,
        response=REGISTRY_ENTRY_DOC,
        errors=(403,),
    )
    def change_registry_entry(self, request: Request, kind: str, key: str) -> dict[str, Any]:
        values = load_body(request, REGISTRY_SCHEMAS[kind].change())
        with _registry_errors():
            current = self.registry.get(kind, key)
            decided = registry_rules.change(self.registry.load(), kind, current, values)
            entry = self.registry.save(kind, decided, new=False)
        return REGISTRY_SCHEMAS[kind].out().dump(entry)

    def _registry_reader(self, request: Request) -> tuple[str, ...] | None:
        """None for callers who read the whole registry, else the communities they may read."""
        reach = policy.reach(request.identity, "grid.registry.read")
        return None if reach.everything else reach.communities


def _require_departments(known: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    """A dispatch names its lead and co-handling departments from the registry (422 if not)."""
    errors: dict[str, list[str]] = {}
    for name in ("department", "co_departments"):
        value = fields.get(name)
        for department in [value] if isinstance(value, str) else value or ():
            try:
                registry_rules.require_department(known, department)
            except registry_rules.UnknownDepartment as exc:
                errors.setdefault(name, []).append(str(exc))
    if errors:
        raise InvalidInput("the step failed validation", errors)


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


def _observe_stopped(stopped: Iterable[deadlines.Stopped], category: str) -> None:
    """A stopped clock's duration, and whether it met its limit (the burn rate's base)."""
    for stage in stopped:
        INCIDENT_STAGE_SECONDS.labels(stage.clock, category).observe(stage.seconds)
        if not stage.breached:
            SLA_MET.labels(stage.clock, category).inc()
        elif not stage.overdue_raised:
            # Stopped late before a scan saw it: the timer will never count this breach.
            SLA_BREACHES.labels(stage.clock, category).inc()


def _set_all(gauge: Any, values: Mapping[tuple[str, ...], int]) -> None:
    """Replace every series of ``gauge`` with ``values`` (label values → value)."""
    gauge.clear()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
