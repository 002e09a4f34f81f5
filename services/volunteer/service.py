"""The volunteer service: the registry, tasks and their dispatch, monthly rounds, hours."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from werkzeug.wrappers import Request, Response

from shequ import policy
from shequ.auth import Identity
from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.events import event_handler, idempotent
from shequ.http import json_response, load_body, load_query, route
from shequ.masking import mask_name, mask_phone
from shequ.metrics import VOLUNTEER_DISPATCH_SECONDS
from shequ.reconcile import Effect
from shequ.service import PlatformService
from shequ.timers import timer
from shequ_services.volunteer import domain, ledger, matching, rounds
from shequ_services.volunteer.roster import Roster, volunteer_from
from shequ_services.volunteer.schemas import (
    SELF_SERVICE_FIELDS,
    AnswerSchema,
    AssignSchema,
    CertificateQuerySchema,
    CheckOutResultSchema,
    CorrectionSchema,
    EntryListSchema,
    EntrySchema,
    HoursPageQuerySchema,
    HoursQuerySchema,
    HouseholdChangeSchema,
    HouseholdListSchema,
    HouseholdSchema,
    PageQuerySchema,
    RoundResultSchema,
    TaskCreateSchema,
    TaskListSchema,
    TaskQuerySchema,
    TaskSchema,
    TeamListSchema,
    TeamSchema,
    TotalsQuerySchema,
    TotalsSchema,
    VolunteerChangeSchema,
    VolunteerCreateSchema,
    VolunteerListQuerySchema,
    VolunteerPageSchema,
    VolunteerSchema,
)
from shequ_services.volunteer.store import (
    Duplicate,
    EntryChanged,
    TaskChanged,
    VolunteerRepository,
    VolunteerStore,
)

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
#: How long one replica may hold the monthly round before another may take over.
ROUND_LEASE = timedelta(minutes=10)
#: How many times a step is retried when a concurrent change beat it.
RETRIES = 3


#: The dispatch-time label of every task kind staff made up (``_kind_label``).
OTHER_KIND = "other"


class VolunteerService(PlatformService):
    name = "volunteer"

    tasks = VolunteerStore(VolunteerRepository)
    roster = Roster()
    report_effects = (Effect("tasks", "incident_id", expected="volunteer_task"),)

    # -- tasks from incidents, staff and rounds ----------------------------------------------

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("tasks")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        now = datetime.now(UTC)
        task = domain.task_for_incident(
            incident_id=data["incident_id"],
            category=data["category"]["code"],
            volunteer_task=data["category"]["volunteer_task"],
            community=data["community"],
            grid_cell=data["grid_cell"],
            now=now,
        )
        if task is None or self.tasks.for_incident(task.incident_id or ""):
            return  # not a volunteer category, or the same report under another event id
        self.tasks.create(*self._first_offers(task, now))

    def _first_offers(self, task: domain.Task, now: datetime) -> tuple[domain.Task, list[Any]]:
        """Rank the task's cell and neighbours and offer to the top k (or escalate)."""
        index = self.roster.current(self.tasks)
        nearby = [
            volunteer_id
            for cell in self.roster.adjacency.scope(task.grid_cell)
            for volunteer_id in index.by_cell.get(cell, {})
        ]
        loads = self.tasks.recent_loads(now - self.roster.load_window, among=nearby)
        need = matching.Need(
            grid_cell=task.grid_cell,
            skills=frozenset(task.skills),
            language=task.language,
            household_id=task.household_id,
        )
        ranked = matching.rank(
            need,
            index,
            self.roster.adjacency,
            now_local=now.astimezone(self.roster.tz),
            loads=loads,
            exclude=task.offered_to(),
            limit=self.roster.rules.shortlist,
        )
        return domain.start_offers(task, [c.volunteer_id for c in ranked], now, self.roster.rules)

    @route(
        "POST",
        "/api/v1/volunteer/tasks",
        action="volunteer.task.create",
        summary="Create a task (staff) and offer it to the best-ranked volunteers",
        body=TaskCreateSchema,
        response=TaskSchema,
        status=201,
        errors=(403,),
    )
    def create_task(self, request: Request) -> Response:
        body = load_body(request, TaskCreateSchema())
        self._require_staff(request, "volunteer.task.create", body["community"])
        self._require_cell(body["grid_cell"], "grid_cell")
        now = datetime.now(UTC)
        with _invalid("the task failed validation"):
            task = domain.staff_task(now=now, **body)
        created = self.tasks.create(*self._first_offers(task, now))
        return json_response(
            TaskSchema().dump(created),
            status=201,
            headers={"Location": f"/api/v1/volunteer/tasks/{created.id}"},
        )

    @route(
        "GET",
        "/api/v1/volunteer/tasks",
        action="volunteer.task.read",
        summary="Tasks: by incident, status, source, cell or month (staff: their communities)",
        query=TaskQuerySchema,
        response=TaskListSchema,
        errors=(403,),
    )
    def list_tasks(self, request: Request) -> dict[str, Any]:
        """A volunteer without a staff role sees only tasks offered or assigned to them."""
        reach = policy.reach(request.identity, "volunteer.task.read")
        query = load_query(request, TaskQuerySchema())
        limit = query.pop("limit")
        communities: list[str] | None = None
        if reach.owner and not reach.everything and not reach.communities:
            query["offers.volunteer_id"] = reach.owner
        elif not reach.everything:
            communities = list(reach.communities)
        found = self.tasks.tasks(communities=communities, filters=query, limit=limit)
        return {"items": TaskSchema(many=True).dump(found)}

    @route(
        "GET",
        "/api/v1/volunteer/tasks/<string:task_id>",
        action="volunteer.task.read",
        summary="One task with its offers",
        response=TaskSchema,
    )
    def get_task(self, request: Request, task_id: str) -> dict[str, Any]:
        return TaskSchema().dump(self._visible_task(request, task_id))

    @route(
        "GET",
        "/api/v1/volunteer/offers",
        action="volunteer.offer.read",
        summary="The caller's own open offers (role volunteer; the token's sub is the volunteer)",
        response=TaskListSchema,
        errors=(403,),
    )
    def my_offers(self, request: Request) -> dict[str, Any]:
        return {"items": TaskSchema(many=True).dump(self.tasks.offered_to(request.identity.sub))}

    @route(
        "POST",
        "/api/v1/volunteer/tasks/<string:task_id>/answer",
        action="volunteer.offer.answer",
        summary="Accept or decline the caller's open offer before its deadline",
        body=AnswerSchema,
        response=TaskSchema,
        errors=(403, 409),
    )
    def answer_offer(self, request: Request, task_id: str) -> dict[str, Any]:
        body = load_body(request, AnswerSchema())
        accept = body["answer"] == "accept"
        rules = self.roster.rules
        return TaskSchema().dump(
            self._step(
                task_id,
                lambda t, now: domain.answer(
                    t, request.identity.sub, accept=accept, now=now, rules=rules
                ),
            )
        )

    @route(
        "POST",
        "/api/v1/volunteer/tasks/<string:task_id>/assign",
        action="volunteer.task.assign",
        summary="Staff assign an open or escalated task to a volunteer",
        body=AssignSchema,
        response=TaskSchema,
        errors=(403, 409),
    )
    def assign_task(self, request: Request, task_id: str) -> dict[str, Any]:
        body = load_body(request, AssignSchema())
        task = self.tasks.task(task_id)
        self._require_staff(request, "volunteer.task.assign", task.community)
        try:
            volunteer = self.tasks.volunteer(body["volunteer_id"])
        except NotFound as exc:
            raise InvalidInput(
                "the assignment failed validation", {"volunteer_id": [str(exc)]}
            ) from exc
        if task.household_id is not None and volunteer.household_id == task.household_id:
            raise InvalidInput(
                "the assignment failed validation",
                {"volunteer_id": ["a volunteer never visits their own household"]},
            )
        return TaskSchema().dump(
            self._step(task_id, lambda t, now: domain.assign(t, volunteer.id, now))
        )

    @route(
        "POST",
        "/api/v1/volunteer/tasks/<string:task_id>/check-in",
        action="volunteer.task.work",
        summary="The assigned volunteer starts work (the time is the server's)",
        response=TaskSchema,
        errors=(403, 409),
    )
    def check_in(self, request: Request, task_id: str) -> dict[str, Any]:
        sub = request.identity.sub
        return TaskSchema().dump(
            self._step(task_id, lambda t, now: (domain.check_in(t, sub, now), []))
        )

    @route(
        "POST",
        "/api/v1/volunteer/tasks/<string:task_id>/check-out",
        action="volunteer.task.work",
        summary="The assigned volunteer finishes; a pending ledger entry records the time",
        response=CheckOutResultSchema,
        errors=(403, 409),
    )
    def check_out(self, request: Request, task_id: str) -> dict[str, Any]:
        sub = request.identity.sub
        volunteer = self.tasks.volunteer(sub) if request.identity.has_role("volunteer") else None
        if volunteer is None:
            raise Forbidden("only the assigned volunteer checks out")
        written: dict[str, ledger.Entry] = {}

        def step(task: domain.Task, now: datetime) -> tuple[domain.Task, list[domain.Change]]:
            done, changes, minutes = domain.check_out(task, sub, now)
            entry = ledger.service_entry(
                volunteer_id=sub,
                community=task.community,
                teams=volunteer.teams,
                minutes=minutes,
                served_at=task.checked_in_at or now,
                task_id=task.id,
                recorded_by=sub,
                now=now,
            )
            self.tasks.append(entry)
            written["entry"] = entry
            return done, changes

        task = self._step(task_id, step)
        return {"task": TaskSchema().dump(task), "entry": EntrySchema().dump(written["entry"])}

    def _step(
        self,
        task_id: str,
        decide: Callable[[domain.Task, datetime], tuple[domain.Task, list[domain.Change]]],
    ) -> domain.Task:
        """Read, decide, write conditionally: a concurrent change means read again."""
        for _ in range(RETRIES):
            task = self.tasks.task(task_id)
            try:

                def work(task: domain.Task = task) -> domain.Task:
                    after, changes = decide(task, datetime.now(UTC))
                    return self.tasks.save(task, after, changes)

                saved = self.tasks.run_in_transaction(work)
                if task.assigned_at is None and saved.assigned_at is not None:
                    waited = (saved.assigned_at - saved.created_at).total_seconds()
                    VOLUNTEER_DISPATCH_SECONDS.labels(_kind_label(saved.kind)).observe(
                        max(waited, 0.0)
                    )
                return saved
            except TaskChanged:
                continue
            except domain.NotYourTask as exc:
                raise Forbidden(str(exc)) from exc
            except domain.DispatchError as exc:
                raise Conflict(str(exc), state=task.status) from exc
        raise Conflict(f"task {task_id} kept changing; try again")

    def _visible_task(self, request: Request, task_id: str) -> domain.Task:
        identity = request.identity
        task = self.tasks.task(task_id)
        target = policy.Target(
            "task", task_id, owners=tuple(task.offered_to()), community=task.community
        )
        if policy.allows(identity, "volunteer.task.read", target):
            return task
        raise NotFound(f"no task {task_id!r}")

    def refresh_metrics(self) -> None:
        """Every dispatch-time series exists at 0 before its first task, so rate() sees it."""
        for kind in (*domain.KIND_SKILLS, OTHER_KIND):
            VOLUNTEER_DISPATCH_SECONDS.labels(kind)

    # -- timers: offer deadlines, overdue tasks, monthly rounds --------------------------

    @timer("VOLUNTEER_OFFER_SCAN_SECONDS", 15)
    def scan_offers(self) -> None:
        """Expire lapsed offers, offer the next, raise overdue; safe across replicas.

        State is in the database (``next_due``) and every write is conditional
        on the version read, so a restart loses nothing and two replicas never
        expire the same offer twice.
        """
        now = datetime.now(UTC)
        for task in self.tasks.due(now, limit=200):
            after, changes = domain.lapse(task, now, self.roster.rules)
            if not changes:
                continue
            try:
                self.tasks.save(task, after, changes)
            except TaskChanged:
                continue  # answered or scanned meanwhile; the next scan sees the new state

    @timer("VOLUNTEER_KEY_ROTATION_SECONDS", 60)
    def rotate_keys(self) -> None:
        """Re-seal, in batches, volunteers sealed under an old key or stored before sealing."""
        self.tasks.reseal_batch(limit=100)

    @timer("VOLUNTEER_ROUNDS_SCAN_SECONDS", 300)
    def generate_rounds(self) -> None:
        """This month's visit task for every listed household that has none yet."""
        self.generate_round(rounds.month_of(datetime.now(UTC), self.roster.tz))

    def generate_round(self, month: str) -> int:
        """Create the month's missing visit tasks; the count created (idempotent).

        One replica at a time holds the round's lease; another finding it held
        creates nothing this time and its next tick finds the work done.
        """
        now = datetime.now(UTC)
        lease = f"round:{month}"
        if not self.tasks.acquire_lease(lease, self.roster.holder, now, ROUND_LEASE):
            return 0
        try:
            have = self.tasks.round_households(month)
            households = self.tasks.households()
            created = 0
            for task in rounds.round_tasks(households, month, now=now, tz=self.roster.tz):
                if task.household_id in have:
                    continue
                try:
                    self.tasks.create(*self._first_offers(task, now))
                    created += 1
                except Duplicate:
                    continue  # made meanwhile by a replica whose lease had lapsed
            return created
        finally:
            self.tasks.release_lease(lease, self.roster.holder, datetime.now(UTC))

    @route(
        "POST",
        "/api/v1/volunteer/rounds/<string:month>",
        action="volunteer.round.run",
        summary="Generate a month's missing visit tasks now (admin; the timer does it anyway)",
        response=RoundResultSchema,
        errors=(403, 422),
    )
    def run_round(self, request: Request, month: str) -> dict[str, Any]:
        """For catching up by hand, and for tests; creating twice creates nothing more."""
        loaded = load_query_value(month)
        return {"month": loaded, "created": self.generate_round(loaded)}

    # -- registry: volunteers, teams, households ------------------------------------------

    @route(
        "POST",
        "/api/v1/volunteer/volunteers",
        action="volunteer.volunteer.register",
        summary="Register a volunteer (admin, or the community's staff)",
        body=VolunteerCreateSchema,
        response=VolunteerSchema,
        status=201,
        errors=(403, 409),
    )
    def register_volunteer(self, request: Request) -> Response:
        values = load_body(request, VolunteerCreateSchema())
        self._require_staff(request, "volunteer.volunteer.register", values["community"])
        volunteer = self._checked(volunteer_from(values))
        try:
            self.tasks.add_volunteer(volunteer, datetime.now(UTC))
        except Duplicate as exc:
            raise Conflict(str(exc)) from exc
        self.roster.put(volunteer)
        return json_response(
            self._volunteer_view(request, volunteer),
            status=201,
            headers={"Location": f"/api/v1/volunteer/volunteers/{volunteer.id}"},
        )

    @route(
        "GET",
        "/api/v1/volunteer/volunteers",
        action="volunteer.volunteer.read",
        summary="Volunteers in id order, personal data masked unless the caller needs it",
        query=VolunteerListQuerySchema,
        response=VolunteerPageSchema,
        errors=(403,),
    )
    def list_volunteers(self, request: Request) -> dict[str, Any]:
        identity = request.identity
        query = load_query(request, VolunteerListQuerySchema())
        led = self.tasks.led_teams(identity.sub) if identity.has_role("volunteer") else []
        reach = policy.reach(identity, "volunteer.volunteer.read")
        if reach.everything:
            communities = [query["community"]] if "community" in query else None
        elif reach.communities:
            communities = [c for c in reach.communities if query.get("community", c) == c]
        elif led:
            communities = [query["community"]] if "community" in query else None
            if query.get("team") not in led:
                raise Forbidden("team leaders list their own team: pass team=")
        else:
            # Reach "own" only: a volunteer who leads no team lists their own record.
            mine = [v for v in self._own_volunteer(identity.sub) if _matches(v, query)]
            return {"items": [self._volunteer_view(request, v, led) for v in mine], "next": None}
        found = self.tasks.volunteers(
            communities=communities,
            team=query.get("team"),
            after=query.get("after"),
            limit=query["limit"],
        )
        last = found[-1].id if len(found) == query["limit"] else None
        return {"items": [self._volunteer_view(request, v, led) for v in found], "next": last}

    @route(
        "GET",
        "/api/v1/volunteer/volunteers/<string:volunteer_id>",
        action="volunteer.volunteer.read",
        summary="One volunteer (staff, auditors, their team leaders, themself)",
        response=VolunteerSchema,
    )
    def get_volunteer(self, request: Request, volunteer_id: str) -> dict[str, Any]:
        volunteer = self._readable_volunteer(request, volunteer_id)
        return self._volunteer_view(request, volunteer)

    @route(
        "PATCH",
        "/api/v1/volunteer/volunteers/<string:volunteer_id>",
        action="volunteer.volunteer.change",
        summary="Change a volunteer (staff); a volunteer their own languages, windows, consent",
        body=VolunteerChangeSchema,
        response=VolunteerSchema,
        errors=(403,),
    )
    def change_volunteer(self, request: Request, volunteer_id: str) -> dict[str, Any]:
        identity = request.identity
        current = self._readable_volunteer(request, volunteer_id)
        changes = load_body(request, VolunteerChangeSchema())
        staff = policy.Target("volunteer", volunteer_id, community=current.community)
        if not policy.allows(identity, "volunteer.volunteer.change", staff):
            if identity.sub != volunteer_id or not set(changes) <= SELF_SERVICE_FIELDS:
                raise Forbidden(
                    "volunteers change only their own "
                    + ", ".join(sorted(SELF_SERVICE_FIELDS))
                    + "; staff change the rest"
                )
        values = {**_volunteer_values(current), **changes}
        volunteer = self._checked(volunteer_from(values))
        self.tasks.replace_volunteer(volunteer, datetime.now(UTC))
        self.roster.put(volunteer)
        return self._volunteer_view(request, volunteer)

    def _own_volunteer(self, sub: str) -> list[domain.Volunteer]:
        try:
            return [self.tasks.volunteer(sub)]
        except NotFound:
            return []

    def _checked(self, volunteer: domain.Volunteer) -> domain.Volunteer:
        with _invalid("the volunteer failed validation"):
            domain.check_volunteer(
                volunteer, self.roster.adjacency.cells(), self.tasks.teams([volunteer.community])
            )
        return volunteer

    def _readable_volunteer(self, request: Request, volunteer_id: str) -> domain.Volunteer:
        identity = request.identity
        volunteer = self.tasks.volunteer(volunteer_id)
        led = self.tasks.led_teams(identity.sub) if identity.has_role("volunteer") else []
        target = _volunteer_target(identity, volunteer, led)
        if policy.allows(identity, "volunteer.volunteer.read", target):
            return volunteer
        raise NotFound(f"no volunteer {volunteer_id!r}")

    def _volunteer_view(
        self, request: Request, volunteer: domain.Volunteer, led: list[str] | None = None
    ) -> dict[str, Any]:
        """The volunteer with name and phone masked unless the table lets the caller see them.

        Seeing them is a sensitive read (logged with the caller's purpose,
        recorded in the audit trail), except a volunteer's own.
        """
        identity = request.identity
        if led is None:
            led = self.tasks.led_teams(identity.sub) if identity.has_role("volunteer") else []
        full = identity.sub == volunteer.id or policy.allows(
            identity,
            "volunteer.volunteer.read_personal",
            _volunteer_target(identity, volunteer, led),
        )
        view = _volunteer_values(volunteer)
        if not full:
            view["name"] = mask_name(volunteer.name)
            view["phone"] = mask_phone(volunteer.phone)
        return VolunteerSchema().dump({**view, "masked": not full})

    @route(
        "POST",
        "/api/v1/volunteer/teams",
        action="volunteer.team.create",
        summary="Add a team and its leaders (社工带义工; admin or the community's staff)",
        body=TeamSchema,
        response=TeamSchema,
        status=201,
        errors=(403, 409),
    )
    def add_team(self, request: Request) -> Response:
        values = load_body(request, TeamSchema())
        self._require_staff(request, "volunteer.team.create", values["community"])
        team = domain.Team(
            values["id"], values["community"], values["name"], tuple(values["leaders"])
        )
        try:
            self.tasks.add_team(team)
        except Duplicate as exc:
            raise Conflict(str(exc)) from exc
        return json_response(TeamSchema().dump(values), status=201)

    @route(
        "GET",
        "/api/v1/volunteer/teams",
        action="volunteer.team.read",
        summary="The teams of the caller's communities, in id order",
        query=PageQuerySchema,
        response=TeamListSchema,
        errors=(403,),
    )
    def list_teams(self, request: Request) -> dict[str, Any]:
        query = load_query(request, PageQuerySchema())
        communities = self._staff_communities(request, "volunteer.team.read")
        teams = list(
            self.tasks.teams(communities, after=query.get("after"), limit=query["limit"]).values()
        )
        return {"items": TeamSchema(many=True).dump(teams), "next": _next(teams, query["limit"])}

    @route(
        "POST",
        "/api/v1/volunteer/households",
        action="volunteer.household.change",
        summary="Put a household on the care lists (六必访; staff)",
        body=HouseholdSchema,
        response=HouseholdSchema,
        status=201,
        errors=(403, 409),
    )
    def add_household(self, request: Request) -> Response:
        values = load_body(request, HouseholdSchema())
        self._require_staff(request, "volunteer.household.change", values["community"])
        self._require_cell(values["grid_cell"], "grid_cell")
        household = rounds.Household(
            values["id"], values["community"], values["grid_cell"],
            tuple(values["care_lists"]), values["active"],
        )  # fmt: skip
        try:
            self.tasks.add_household(household, datetime.now(UTC))
        except Duplicate as exc:
            raise Conflict(str(exc)) from exc
        return json_response(HouseholdSchema().dump(household), status=201)

    @route(
        "GET",
        "/api/v1/volunteer/households",
        action="volunteer.household.read",
        summary="The care-list households of the caller's communities, in id order",
        query=PageQuerySchema,
        response=HouseholdListSchema,
        errors=(403,),
    )
    def list_households(self, request: Request) -> dict[str, Any]:
        query = load_query(request, PageQuerySchema())
        communities = self._staff_communities(request, "volunteer.household.read")
        found = self.tasks.households(communities, after=query.get("after"), limit=query["limit"])
        page = {"items": HouseholdSchema(many=True).dump(found)}
        return {**page, "next": _next(found, query["limit"])}

    @route(
        "PATCH",
        "/api/v1/volunteer/households/<string:household_id>",
        action="volunteer.household.change",
        summary="Change a household's cell or lists; this month's untaken visit follows a move",
        body=HouseholdChangeSchema,
        response=HouseholdSchema,
        errors=(403,),
    )
    def change_household(self, request: Request, household_id: str) -> dict[str, Any]:
        current = self.tasks.household(household_id)
        self._require_staff(request, "volunteer.household.change", current.community)
        changes = load_body(request, HouseholdChangeSchema())
        if "grid_cell" in changes:
            self._require_cell(changes["grid_cell"], "grid_cell")
        household = replace(
            current, **{k: tuple(v) if k == "care_lists" else v for k, v in changes.items()}
        )
        self.tasks.replace_household(household, datetime.now(UTC))
        if household.grid_cell != current.grid_cell:
            self._follow_move(household)
        return HouseholdSchema().dump(household)

    def _follow_move(self, household: rounds.Household) -> None:
        month = rounds.month_of(datetime.now(UTC), self.roster.tz)
        visit = self.tasks.round_task(household.id, month)
        if visit is None:
            return

        def step(task: domain.Task, now: datetime) -> tuple[domain.Task, list[domain.Change]]:
            moved = domain.retarget(task, household.grid_cell, now)
            if moved is None:
                return task, []
            return self._first_offers(moved, now)

        try:
            self._step(visit.id, step)
        except Conflict:
            return  # taken meanwhile: it stays with whoever took it

    # -- the hours ledger --------------------------------------------------------------

    @route(
        "GET",
        "/api/v1/volunteer/hours",
        action="volunteer.hours.read",
        summary="Ledger entries (staff: their communities; a volunteer: their own)",
        query=HoursPageQuerySchema,
        response=EntryListSchema,
        errors=(403,),
    )
    def list_hours(self, request: Request) -> dict[str, Any]:
        query = load_query(request, HoursPageQuerySchema())
        communities, volunteer_id = self._ledger_scope(request, query)
        start, end = self._month_bounds(query.get("month"))
        after = None
        if "after" in query:
            try:
                after = self.tasks.entry(query["after"])
            except NotFound as exc:
                raise InvalidInput(
                    "the request failed validation", {"after": ["no such ledger entry"]}
                ) from exc
        found = self.tasks.entries(
            communities=communities, volunteer_id=volunteer_id, start=start, end=end,
            after=after, limit=query["limit"],
        )  # fmt: skip
        return {"items": EntrySchema(many=True).dump(found), "next": _next(found, query["limit"])}

    @route(
        "POST",
        "/api/v1/volunteer/hours/<string:entry_id>/approval",
        action="volunteer.hours.approve",
        summary="Approve a ledger entry (a leader of the volunteer's team, or staff); once",
        response=EntrySchema,
        errors=(403, 409),
    )
    def approve_hours(self, request: Request, entry_id: str) -> dict[str, Any]:
        entry = self.tasks.entry(entry_id)
        self._may_approve(request, entry)
        try:
            approved, changes = ledger.approve(
                entry, approver=request.identity.sub, now=datetime.now(UTC)
            )
            self.tasks.approve(entry, approved, changes)
        except (ledger.AlreadyApproved, EntryChanged) as exc:
            raise Conflict(str(exc)) from exc
        return EntrySchema().dump(approved)

    @route(
        "POST",
        "/api/v1/volunteer/hours/<string:entry_id>/corrections",
        action="volunteer.hours.approve",
        summary="Correct a ledger entry by a new entry referencing it (leader or staff)",
        body=CorrectionSchema,
        response=EntrySchema,
        status=201,
        errors=(403,),
    )
    def correct_hours(self, request: Request, entry_id: str) -> Response:
        body = load_body(request, CorrectionSchema())
        original = self.tasks.entry(entry_id)
        self._may_approve(request, original)
        with _invalid("the correction failed validation"):
            entry = ledger.correction(
                original,
                self.tasks.corrections_of(entry_id),
                delta=body["minutes_delta"],
                reason=body["reason"],
                recorded_by=request.identity.sub,
                now=datetime.now(UTC),
            )
        self.tasks.append(entry)
        return json_response(EntrySchema().dump(entry), status=201)

    @route(
        "GET",
        "/api/v1/volunteer/hours/totals",
        action="volunteer.hours.read",
        summary="Approved minutes per volunteer, team or community and month",
        query=TotalsQuerySchema,
        response=TotalsSchema,
        errors=(403,),
    )
    def hours_totals(self, request: Request) -> dict[str, Any]:
        query = load_query(request, TotalsQuerySchema())
        communities, volunteer_id = self._ledger_scope(request, query)
        start, end = self._month_bounds(query.get("month"))
        found = self.tasks.entries(
            communities=communities, volunteer_id=volunteer_id, start=start, end=end
        )
        sums = ledger.totals(found, by=query["by"], tz=self.roster.tz, month=query.get("month"))
        items = [
            {
                "group": group,
                "month": month,
                "minutes": minutes,
                "hours": ledger.hours_text(minutes),
            }
            for (group, month), minutes in sums.items()
        ]
        return {"by": query["by"], "items": items}

    @route(
        "GET",
        "/api/v1/volunteer/hours.csv",
        action="volunteer.hours.export",
        summary="The ledger as CSV (staff)",
        query=HoursQuerySchema,
        response={"type": "string"},
        media_type="text/csv",
        errors=(403,),
    )
    def export_hours(self, request: Request) -> Response:
        query = load_query(request, HoursQuerySchema())
        communities = self._staff_communities(
            request, "volunteer.hours.export", query.get("community")
        )
        start, end = self._month_bounds(query.get("month"))
        found = self.tasks.entries(
            communities=communities, volunteer_id=query.get("volunteer_id"), start=start, end=end
        )
        name = f"volunteer-hours-{query.get('month', 'all')}.csv"
        return Response(
            ledger.to_csv(found),
            status=200,
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @route(
        "GET",
        "/api/v1/volunteer/volunteers/<string:volunteer_id>/certificate",
        action="volunteer.volunteer.read",
        summary="A printable zh-CN certificate of approved service hours (HTML)",
        query=CertificateQuerySchema,
        response={"type": "string"},
        media_type="text/html",
    )
    def certificate(self, request: Request, volunteer_id: str) -> Response:
        volunteer = self._readable_volunteer(request, volunteer_id)
        query = load_query(request, CertificateQuerySchema())
        start = end = None
        period = ""
        if "year" in query:
            start, _ = self._month_bounds(f"{query['year']}-01")
            _, end = self._month_bounds(f"{query['year']}-12")
            period = f"{query['year']}年"
        found = self.tasks.entries(
            communities=None, volunteer_id=volunteer_id, start=start, end=end
        )
        lines, total = ledger.certificate_lines(found, volunteer_id=volunteer_id, tz=self.roster.tz)
        now = datetime.now(UTC).astimezone(self.roster.tz)
        html = TEMPLATES.get_template("certificate.html").render(
            volunteer=volunteer,
            community=self.roster.community_names.get(volunteer.community, volunteer.community),
            period=period,
            lines=lines,
            total_minutes=total,
            total_hours=ledger.hours_text(total),
            issued_on=f"{now.year}年{now.month}月{now.day}日",
            generated_at=now.strftime("%Y-%m-%d %H:%M"),
        )
        return Response(html, status=200, content_type="text/html; charset=utf-8")

    def _may_approve(self, request: Request, entry: ledger.Entry) -> None:
        identity = request.identity
        led = self.tasks.led_teams(identity.sub) if identity.has_role("volunteer") else []
        if not ledger.may_approve(
            entry,
            sub=identity.sub,
            roles=identity.roles,
            communities=identity.communities,
            led_teams=led,
        ):
            raise Forbidden(
                "a leader of the volunteer's team or the community's staff approves and "
                "corrects hours, never the volunteer themself"
            )

    def _ledger_scope(
        self, request: Request, query: dict[str, Any]
    ) -> tuple[list[str] | None, str | None]:
        identity = request.identity
        volunteer_id = query.get("volunteer_id")
        reach = policy.reach(identity, "volunteer.hours.read")
        if reach.everything or reach.communities or not reach.owner:
            communities = self._staff_communities(
                request, "volunteer.hours.read", query.get("community")
            )
            return communities, volunteer_id
        if volunteer_id not in (None, identity.sub):
            raise Forbidden("volunteers read their own hours")
        return None, identity.sub

    def _month_bounds(self, month: str | None) -> tuple[datetime | None, datetime | None]:
        if month is None:
            return None, None
        return rounds.month_start(month, self.roster.tz), rounds.month_end(month, self.roster.tz)

    # -- access helpers ----------------------------------------------------------------

    def _require_staff(self, request: Request, action: str, community: str) -> None:
        """``action`` on something of ``community``: its staff or a district-wide role."""
        policy.require(request.identity, action, policy.Target(action, community=community))

    def _staff_communities(
        self, request: Request, action: str, community: str | None = None
    ) -> list[str] | None:
        """The communities a listing covers for ``action``: None for all of them."""
        reach = policy.reach(request.identity, action)
        if reach.everything:
            return [community] if community else None
        return [c for c in reach.communities if community in (None, c)]

    def _require_cell(self, cell: str, field_name: str) -> None:
        if cell not in self.roster.adjacency:
            raise InvalidInput(
                "the request failed validation", {field_name: [f"unknown grid cell {cell!r}"]}
            )


def _next(page: Sequence[Any], limit: int) -> str | None:
    """The ``after`` that continues a full page in id order (None: it was the last)."""
    return str(page[-1].id) if len(page) == limit else None


def load_query_value(month: str) -> str:
    """A month path segment, checked as a query field would be (422 with the field)."""
    errors = RoundResultSchema().validate({"month": month}, partial=("created",))
    if errors:
        raise InvalidInput("the month failed validation", errors)
    return month


def _matches(volunteer: domain.Volunteer, query: dict[str, Any]) -> bool:
    """Whether a volunteer passes a listing's filters (community, team, after)."""
    team = query.get("team")
    return (
        query.get("community", volunteer.community) == volunteer.community
        and (team is None or team in volunteer.teams)
        and volunteer.id > query.get("after", "")
    )


def _volunteer_target(
    identity: Identity, volunteer: domain.Volunteer, led: list[str]
) -> policy.Target:
    """A volunteer's record as the table sees it: "own" to themself and their teams' leaders."""
    leads = bool(set(led) & set(volunteer.teams))
    return policy.Target(
        "volunteer",
        volunteer.id,
        owners=(volunteer.id, identity.sub) if leads else (volunteer.id,),
        community=volunteer.community,
    )


def _volunteer_values(volunteer: domain.Volunteer) -> dict[str, Any]:
    """A volunteer as the API's (and ``volunteer_from``'s) plain values."""
    return {
        "id": volunteer.id,
        "community": volunteer.community,
        "name": volunteer.name,
        "phone": volunteer.phone,
        "home_cell": volunteer.home_cell,
        "household_id": volunteer.household_id,
        "skills": [{"code": s.code, "confirmed_by": s.confirmed_by} for s in volunteer.skills],
        "languages": list(volunteer.languages),
        "windows": [
            {
                "weekday": w.weekday,
                "start": w.start.strftime("%H:%M"),
                "end": w.end.strftime("%H:%M"),
            }
            for w in volunteer.windows
        ],
        "teams": list(volunteer.teams),
        "consent_to_contact": volunteer.consent_to_contact,
        "active": volunteer.active,
    }


@contextmanager
def _invalid(detail: str) -> Iterator[None]:
    try:
        yield
    except domain.InvalidRecord as exc:
        raise InvalidInput(detail, {exc.field: [str(exc)]}) from exc


def _kind_label(kind: str) -> str:
    """The kinds the platform knows keep their name; staff's own kinds share one series,
    so the label stays bounded whatever kinds staff invent."""
    return kind if kind in domain.KIND_SKILLS else OTHER_KIND
