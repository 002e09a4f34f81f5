"""The mediation service: people's mediation cases from dispute to agreement or court."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from shequ import policy
from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.events import event_handler, idempotent
from shequ.http import json_response, load_body, load_query, route
from shequ.metrics import MEDIATION_CASE_SECONDS, MEDIATION_CASES_CLOSED, MEDIATION_CASES_OVERDUE
from shequ.reconcile import Effect
from shequ.service import PlatformService
from shequ.timers import timer
from shequ_services.mediation import document, domain, roster, workflow
from shequ_services.mediation.domain import Case
from shequ_services.mediation.reference import PolicyProvider
from shequ_services.mediation.schemas import (
    AssignmentRequestSchema,
    CaseListSchema,
    CaseOpenSchema,
    CaseQuerySchema,
    CaseSchema,
    MediatorInputSchema,
    MediatorListSchema,
    MediatorQuerySchema,
    MediatorSchema,
    PartiesAddSchema,
    RatesQuerySchema,
    RatesSchema,
    ReferralPacketSchema,
    TransitionRequestSchema,
)
from shequ_services.mediation.store import CaseChanged, CaseRepository, CaseStore

WORKFLOW_DOC = {"type": "array", "items": {"type": "object"}}
HTML_DOC = {"type": "string", "description": "zh-CN HTML with print CSS"}
#: The window of the closed-cases gauge (shequ_mediation_cases_closed).
CLOSED_GAUGE_PERIOD = timedelta(days=30)


class MediationService(PlatformService):
    name = "mediation"

    cases = CaseStore(CaseRepository)
    policy = PolicyProvider()
    report_effects = (Effect("cases", "incident_id", expected="opens_mediation"),)

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("cases")
    def on_incident_reported(self, event: CloudEvent) -> None:
        """One case per dispute incident: the processed mark and a unique index both hold it."""
        data = event.data
        case = domain.case_for_incident(
            incident_id=data["incident_id"],
            category=data["category"]["code"],
            opens_mediation=data["category"]["opens_mediation"],
            community=data["community"],
            now=datetime.now(UTC),
            policy=self.policy,
        )
        if case is not None:
            self.cases.open(case)

    # -- cases ---------------------------------------------------------------------------

    @route(
        "GET",
        "/api/v1/mediation/cases",
        action="mediation.case.read",
        summary="Cases by incident, community or status (summaries: no parties, no text)",
        query=CaseQuerySchema,
        response=CaseListSchema,
        errors=(403,),
    )
    def list_cases(self, request: Request) -> dict[str, Any]:
        query = load_query(request, CaseQuerySchema())
        if query.get("incident_id"):
            found = self.cases.for_incident(query["incident_id"])
        else:
            found = self.cases.listing(
                community=query.get("community"), status=query.get("status"), limit=query["limit"]
            )
        return CaseListSchema().dump({"items": [self._view(request, c) for c in found]})

    @route(
        "POST",
        "/api/v1/mediation/cases",
        action="mediation.case.open",
        summary="Open a case directly (walk-in, 来访) with its parties",
        body=CaseOpenSchema,
        response=CaseSchema,
        status=201,
        errors=(403, 409),
    )
    def open_case(self, request: Request) -> Response:
        body = load_body(request, CaseOpenSchema())
        policy.require(
            request.identity,
            "mediation.case.open",
            policy.Target("case", community=body["community"]),
        )
        with _domain_errors():
            case = domain.walk_in_case(**body, now=datetime.now(UTC), policy=self.policy)
        if not self.cases.open(case):
            raise Conflict(f"incident {body['incident_id']} already has a case")
        return json_response(
            self._dump(request, case),
            status=201,
            headers={"Location": f"/api/v1/mediation/cases/{case.id}"},
        )

    @route(
        "GET",
        "/api/v1/mediation/cases/<string:case_id>",
        action="mediation.case.read",
        summary="One case; parties masked unless the caller is its mediator or an admin",
        response=CaseSchema,
        errors=(403,),
    )
    def get_case(self, request: Request, case_id: str) -> dict[str, Any]:
        return self._dump(request, self.cases.get(case_id))

    @route(
        "POST",
        "/api/v1/mediation/cases/<string:case_id>/parties",
        action="mediation.case.work",
        summary="Add parties (and the facts) to a running case",
        body=PartiesAddSchema,
        response=CaseSchema,
        errors=(403, 409),
    )
    def add_parties(self, request: Request, case_id: str) -> dict[str, Any]:
        case = self.cases.get(case_id)
        policy.require(request.identity, "mediation.case.work", _target(case))
        body = load_body(request, PartiesAddSchema())
        with _domain_errors():
            updated = domain.add_parties(
                case,
                body["parties"],
                facts=body["facts"],
                expected_version=body["expected_version"],
                actor=request.identity.sub,
                at=datetime.now(UTC),
            )
        self._check_still_impartial(case, updated.parties)
        with _domain_errors():
            stored = self.cases.save(case, updated)
        return self._dump(request, stored)

    @route(
        "POST",
        "/api/v1/mediation/cases/<string:case_id>/assignment",
        action="mediation.case.work",
        summary="Assign a mediator: by the roster rule, or named (override needs a reason)",
        body=AssignmentRequestSchema,
        response=CaseSchema,
        errors=(403, 409),
    )
    def assign(self, request: Request, case_id: str) -> dict[str, Any]:
        case = self.cases.get(case_id)
        policy.require(request.identity, "mediation.case.work", _target(case))
        body = load_body(request, AssignmentRequestSchema())
        now = datetime.now(UTC)
        try:
            decision = roster.assign(
                self.cases.mediators(case.community),
                self.cases.loads(case.community),
                community=case.community,
                dispute_type=case.dispute_type,
                parties=self.cases.party_indexes(case.id),
                at=now,
                chosen=body["mediator_id"],
                override_reason=body["override_reason"],
            )
        except roster.UnknownMediator as exc:
            raise InvalidInput(
                "the assignment failed validation", {"mediator_id": [str(exc)]}
            ) from exc
        except roster.AssignmentRefused as exc:
            raise Conflict(str(exc), reasons=exc.reasons) from exc
        return self._step(
            request, case, "assign", body["expected_version"], {"assignment": decision}
        )

    @route(
        "POST",
        "/api/v1/mediation/cases/<string:case_id>/transitions",
        action="mediation.case.work",
        summary="Take one lifecycle step (the table is workflow.RULES)",
        body=TransitionRequestSchema,
        response=CaseSchema,
        errors=(403, 409),
    )
    def transition(self, request: Request, case_id: str) -> dict[str, Any]:
        case = self.cases.get(case_id)
        policy.require(request.identity, "mediation.case.work", _target(case))
        body = load_body(request, TransitionRequestSchema())
        action, expected = body.pop("action"), body.pop("expected_version")
        return self._step(request, case, action, expected, body)

    @route(
        "GET",
        "/api/v1/mediation/workflow",
        action="mediation.workflow.read",
        summary="The case lifecycle table: actions, states, roles, required fields",
        response=WORKFLOW_DOC,
    )
    def get_workflow(self, request: Request) -> list[dict[str, Any]]:
        return workflow.describe()

    @route(
        "GET",
        "/api/v1/mediation/cases/<string:case_id>/agreement",
        action="mediation.case.read_parties",
        summary="The agreement as a printable zh-CN document (人民调解协议书)",
        response=HTML_DOC,
        media_type="text/html",
        errors=(403, 409),
    )
    def get_agreement(self, request: Request, case_id: str) -> Response:
        case = self._clear_reader(request, case_id, "the agreement")
        if case.agreement is None:
            raise Conflict(f"case {case_id} has no agreement", state=case.status)
        committee = f"{case.community} 人民调解委员会"
        html = document.render_agreement(case, committee=committee)
        return Response(html, status=200, content_type="text/html; charset=utf-8")

    @route(
        "GET",
        "/api/v1/mediation/cases/<string:case_id>/referral",
        action="mediation.case.read_parties",
        summary="The referral packet for the court (诉非对接): only what the court needs",
        response=ReferralPacketSchema,
        errors=(403, 409),
    )
    def get_referral(self, request: Request, case_id: str) -> dict[str, Any]:
        case = self._clear_reader(request, case_id, "the referral packet")
        if case.referral is None:
            raise Conflict(f"case {case_id} was not referred to a court", state=case.status)
        return ReferralPacketSchema().dump(domain.referral_packet(case))

    @route(
        "GET",
        "/api/v1/mediation/rates",
        action="mediation.rates.read",
        summary="Cases closed in a period by outcome, and the agreement rate",
        query=RatesQuerySchema,
        response=RatesSchema,
        errors=(403,),
    )
    def get_rates(self, request: Request) -> dict[str, Any]:
        query = load_query(request, RatesQuerySchema())
        if query["to"] <= query["from_"]:
            raise InvalidInput("the period failed validation", {"to": ["must be after from"]})
        counts = self.cases.outcome_counts(query["community"], query["from_"], query["to"])
        return RatesSchema().dump(
            {
                "community": query["community"],
                "from": query["from_"],
                "to": query["to"],
                "closed": sum(counts.values()),
                "by_outcome": counts,
                "agreement_rate": domain.agreement_rate(counts),
            }
        )

    def refresh_metrics(self) -> None:
        """Cases closed in the last 30 days by community and outcome, counted in the store.

        The same counts ``GET /api/v1/mediation/rates`` gives for that period, so
        the agreement rate in Prometheus is the API's, and right after a restart.
        """
        now = datetime.now(UTC)
        counts = self.cases.outcomes_by_community(now - CLOSED_GAUGE_PERIOD, now)
        MEDIATION_CASES_CLOSED.clear()
        for (community, outcome), count in counts.items():
            MEDIATION_CASES_CLOSED.labels(community, outcome).set(count)

    # -- roster ----------------------------------------------------------------------------

    @route(
        "GET",
        "/api/v1/mediation/mediators",
        action="mediation.mediator.read",
        summary="A community committee's roster with each mediator's current load",
        query=MediatorQuerySchema,
        response=MediatorListSchema,
        errors=(403,),
    )
    def list_mediators(self, request: Request) -> dict[str, Any]:
        community = load_query(request, MediatorQuerySchema())["community"]
        loads = self.cases.loads(community)
        items = [
            {**m.__dict__, "load": loads.get(m.id, 0)} for m in self.cases.mediators(community)
        ]
        return MediatorListSchema().dump({"items": items})

    @route(
        "PUT",
        "/api/v1/mediation/mediators/<string:mediator_id>",
        action="mediation.mediator.change",
        summary="Add or replace a roster entry (admin); relatives kept as blind indexes only",
        body=MediatorInputSchema,
        response=MediatorSchema,
        errors=(403,),
    )
    def put_mediator(self, request: Request, mediator_id: str) -> dict[str, Any]:
        body = load_body(request, MediatorInputSchema())
        mediator = self.cases.put_mediator({**body, "id": mediator_id})
        load = self.cases.loads(mediator.community).get(mediator.id, 0)
        return MediatorSchema().dump({**mediator.__dict__, "load": load})

    # -- timers ----------------------------------------------------------------------------

    @timer("MEDIATION_DEADLINE_SCAN_SECONDS", 15)
    def scan_deadlines(self) -> None:
        """Raise the time-limit alerts that fell due; each once, safe with several replicas."""
        now = datetime.now(UTC)
        for case in self.cases.due(now, limit=200):
            alerts = domain.due_alerts(case.clock, now)
            if not alerts:
                continue
            try:
                self.cases.record_alerts(case, alerts, domain.mark_raised(case.clock, alerts, now))
            except CaseChanged:
                continue
            if "overdue" in alerts:
                MEDIATION_CASES_OVERDUE.inc()

    @timer("MEDIATION_KEY_ROTATION_SECONDS", 60)
    def rotate_keys(self) -> None:
        """Re-seal, in batches, the documents still sealed under a key that is not active."""
        self.cases.reseal_batch(limit=100)

    # -- helpers ---------------------------------------------------------------------------

    def _step(
        self, request: Request, case: Case, action: str, expected: int, fields: dict[str, Any]
    ) -> dict[str, Any]:
        identity = request.identity
        with _domain_errors():
            step, updated = workflow.decide(
                case,
                action,
                expected_version=expected,
                actor=identity.sub,
                roles=identity.roles,
                fields=fields,
                at=datetime.now(UTC),
                policy=self.policy,
            )
            stored = self.cases.save(case, updated, step)
        if action == "close" and stored.outcome is not None:
            seconds = (step.at - stored.opened_at).total_seconds()
            MEDIATION_CASE_SECONDS.labels(stored.outcome).observe(seconds)
        return self._dump(request, stored)

    def _check_still_impartial(self, case: Case, parties: list[domain.Party]) -> None:
        """A party added after assignment must not make the assigned mediator recused.

        Unless the assignment was an override: then the recusal was knowingly
        set aside, and the new reasons are for the same people to weigh.
        """
        if case.mediator_id is None or (case.recusal or {}).get("method") == "override":
            return
        try:
            assigned = self.cases.mediator(case.mediator_id)
        except NotFound:
            return
        reasons = roster.recusal_reasons(assigned, self.cases.indexes_of(parties))
        if reasons:
            raise Conflict(
                f"with these parties {case.mediator_id} would be recused; reassign the case first",
                reasons=reasons,
            )

    def _clear_reader(self, request: Request, case_id: str, what: str) -> Case:
        case = self.cases.get(case_id)
        policy.require(request.identity, "mediation.case.read_parties", _target(case))
        return case

    def _view(self, request: Request, case: Case) -> dict[str, Any]:
        clear = policy.allows(request.identity, "mediation.case.read_parties", _target(case))
        view = dict(case.__dict__)
        view["parties"] = [
            domain.clear_party(p) if clear else domain.masked_party(p) for p in case.parties
        ]
        if not clear:
            # Free text may name people too: only the case's mediator and admins read it.
            view["facts"] = None
            view["agreement"] = None
            view["sessions"] = [{**s, "notes": None} for s in case.sessions]
            view["follow_ups"] = [{**v, "notes": None} for v in case.follow_ups]
            view["extensions"] = [{**e, "reason": None} for e in case.extensions]
            view["history"] = [
                {**h, "fields": {k: v for k, v in h["fields"].items() if k != "reason"}}
                for h in case.history
            ]
        view["allowed_actions"] = workflow.allowed_actions(case.status)
        return view

    def _dump(self, request: Request, case: Case) -> dict[str, Any]:
        return CaseSchema().dump(self._view(request, case))


def _target(case: Case) -> policy.Target:
    """A case as the authorisation table sees it: its mediator owns it."""
    owners = (case.mediator_id,) if case.mediator_id else ()
    return policy.Target("case", case.id, owners=owners, community=case.community)


@contextmanager
def _domain_errors() -> Iterator[None]:
    """Domain refusals as HTTP problems: 422 per field, 409 state and version, 403 role."""
    try:
        yield
    except (workflow.StaleVersion, domain.StaleCase) as exc:
        raise Conflict(str(exc), current_version=exc.actual) from exc
    except workflow.IllegalTransition as exc:
        raise Conflict(str(exc), state=exc.state, allowed=exc.allowed) from exc
    except (workflow.CaseBlocked, domain.CaseNotRunning) as exc:
        raise Conflict(str(exc)) from exc
    except domain.ConfirmationWindowClosed as exc:
        raise Conflict(str(exc), deadline=exc.deadline.isoformat()) from exc
    except workflow.NotPermitted as exc:
        raise Forbidden(str(exc)) from exc
    except domain.InvalidCase as exc:
        raise InvalidInput("the request failed validation", exc.errors) from exc
