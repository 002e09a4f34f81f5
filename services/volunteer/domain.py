"""Volunteer rules: the registry's records, tasks and their dispatch state machine.

Pure functions over frozen dataclasses: every change returns the new task and
the events it causes (as ``Change`` values); the store writes both in one
transaction, conditional on the version it read. Ranking lives in
``matching``, the monthly rounds in ``rounds``, the hours ledger in ``ledger``.

A task's life::

    open ──(offers to the top k; decline/lapse → next)──> accepted ──check-in──> in_progress
      │                                                                          │
      └─(nobody left)─> escalated ──staff assigns──> accepted                check-out
                                                                                 v
                                                                             completed

``overdue`` is not a state: a task past its ``due_at`` raises one event and
stays where it is, so the visit can still be done late.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

TASK_KINDS = {
    "alley_unclean": "clean_up",
    "resident_hospitalised": "home_visit",
}
#: Skills a task of a kind asks for, unless whoever creates it says otherwise.
KIND_SKILLS: dict[str, tuple[str, ...]] = {
    "clean_up": (),
    "home_visit": ("visiting",),
    "round_visit": ("visiting",),
    "assist": (),
}
SOURCES = ("incident", "round", "staff")
OPEN, ACCEPTED, IN_PROGRESS, COMPLETED, ESCALATED = (
    "open",
    "accepted",
    "in_progress",
    "completed",
    "escalated",
)
STATUSES = (OPEN, ACCEPTED, IN_PROGRESS, COMPLETED, ESCALATED)
PENDING, DECLINED, EXPIRED, WITHDRAWN = "pending", "declined", "expired", "withdrawn"


class DispatchError(Exception):
    """A step that the task's state does not allow (HTTP 409)."""


class NotYourTask(Exception):
    """The caller has no offer for, or is not assigned to, the task (HTTP 403)."""


class InvalidRecord(Exception):
    """A registry record that breaks a rule; ``field`` names where (HTTP 422)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Skill:
    code: str
    confirmed_by: str


@dataclass(frozen=True)
class Window:
    """A weekly availability window in local time: weekday 0 is Monday; end is exclusive."""

    weekday: int
    start: time
    end: time


@dataclass(frozen=True)
class Volunteer:
    id: str
    community: str
    home_cell: str
    name: str
    phone: str
    household_id: str | None = None
    skills: tuple[Skill, ...] = ()
    languages: tuple[str, ...] = ("zh",)
    windows: tuple[Window, ...] = ()
    teams: tuple[str, ...] = ()
    consent_to_contact: bool = False
    active: bool = True

    @property
    def skill_codes(self) -> frozenset[str]:
        return frozenset(skill.code for skill in self.skills)


@dataclass(frozen=True)
class Team:
    id: str
    community: str
    name: str
    leaders: tuple[str, ...]


def check_volunteer(volunteer: Volunteer, cells: Iterable[str], teams: dict[str, Team]) -> None:
    """Cross-record rules the schema cannot see: the cell exists, the teams exist."""
    if volunteer.home_cell not in set(cells):
        raise InvalidRecord("home_cell", f"unknown grid cell {volunteer.home_cell!r}")
    for team_id in volunteer.teams:
        team = teams.get(team_id)
        if team is None:
            raise InvalidRecord("teams", f"unknown team {team_id!r}")
        if team.community != volunteer.community:
            raise InvalidRecord("teams", f"team {team_id!r} belongs to another community")
    for window in volunteer.windows:
        if window.end <= window.start:
            raise InvalidRecord("windows", "a window must end after it starts (split at midnight)")


# -- tasks and dispatch ---------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    volunteer_id: str
    rank: int
    offered_at: datetime
    deadline: datetime
    status: str = PENDING
    answered_at: datetime | None = None


@dataclass(frozen=True)
class Task:
    id: str
    incident_id: str | None
    kind: str
    community: str
    grid_cell: str
    status: str
    created_at: datetime
    source: str = "incident"
    skills: tuple[str, ...] = ()
    language: str | None = None
    household_id: str | None = None
    round_month: str | None = None
    due_at: datetime | None = None
    overdue_raised: bool = False
    candidates: tuple[str, ...] = ()
    offers: tuple[Offer, ...] = ()
    assignee: str | None = None
    assigned_at: datetime | None = None
    checked_in_at: datetime | None = None
    checked_out_at: datetime | None = None
    version: int = 1
    event_seq: int = 0

    def pending(self) -> list[Offer]:
        return [offer for offer in self.offers if offer.status == PENDING]

    def offered_to(self) -> set[str]:
        return {offer.volunteer_id for offer in self.offers}


@dataclass(frozen=True)
class Change:
    """An event a step causes: its name in ``shequ.contracts.volunteer`` and its payload."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DispatchRules:
    """How many volunteers hold an offer at once, and how long each has to answer."""

    parallel: int = 3
    response_window: timedelta = timedelta(minutes=30)
    shortlist: int = 20


def new_task_id(now: datetime) -> str:
    return f"VT-{now:%Y%m%d}-{uuid.uuid4().hex[:8]}"


def task_for_incident(
    *,
    incident_id: str,
    category: str,
    volunteer_task: bool,
    community: str,
    grid_cell: str,
    now: datetime,
) -> Task | None:
    """An open task for an incident whose category asks for volunteers, else None."""
    if not volunteer_task:
        return None
    kind = TASK_KINDS.get(category, "assist")
    return Task(
        id=new_task_id(now),
        incident_id=incident_id,
        kind=kind,
        community=community,
        grid_cell=grid_cell,
        status=OPEN,
        created_at=now,
        source="incident",
        skills=KIND_SKILLS.get(kind, ()),
    )


def staff_task(
    *,
    kind: str,
    community: str,
    grid_cell: str,
    skills: Sequence[str] | None,
    language: str | None,
    due_at: datetime | None,
    now: datetime,
) -> Task:
    if due_at is not None and due_at <= now:
        raise InvalidRecord("due_at", "the due time has already passed")
    return Task(
        id=new_task_id(now),
        incident_id=None,
        kind=kind,
        community=community,
        grid_cell=grid_cell,
        status=OPEN,
        created_at=now,
        source="staff",
        skills=tuple(skills) if skills is not None else KIND_SKILLS.get(kind, ()),
        language=language,
        due_at=due_at,
    )


def _base(task: Task, at: datetime) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "community": task.community,
        "grid_cell": task.grid_cell,
        "kind": task.kind,
        "at": at,
    }


def _state(task: Task, at: datetime) -> dict[str, Any]:
    return {**_base(task, at), "source": task.source}


def _offer_data(task: Task, offer: Offer, at: datetime) -> dict[str, Any]:
    return {**_base(task, at), "volunteer_id": offer.volunteer_id}


def _fill(task: Task, now: datetime, rules: DispatchRules, changes: list[Change]) -> Task:
    """Offer to the next candidates until ``parallel`` offers are pending; escalate if none."""
    offers = list(task.offers)
    candidates = list(task.candidates)
    pending = sum(1 for offer in offers if offer.status == PENDING)
    rank = len(offers)
    while pending < rules.parallel and candidates:
        rank += 1
        offer = Offer(candidates.pop(0), rank, now, now + rules.response_window)
        offers.append(offer)
        pending += 1
        changes.append(
            Change(
                "task.offered",
                {**_offer_data(task, offer, now), "deadline": offer.deadline, "rank": rank},
            )
        )
    task = replace(task, offers=tuple(offers), candidates=tuple(candidates))
    if pending == 0 and task.status == OPEN:
        reason = "candidates_exhausted" if offers else "no_candidates"
        task = replace(task, status=ESCALATED)
        changes.append(Change("task.escalated", {**_state(task, now), "reason": reason}))
    return task


def start_offers(
    task: Task, ranked: Sequence[str], now: datetime, rules: DispatchRules
) -> tuple[Task, list[Change]]:
    """Keep the shortlist (best first, never one already offered) and offer to the top k."""
    if task.status != OPEN:
        raise DispatchError(f"task {task.id} is {task.status}; only open tasks are offered")
    seen = task.offered_to()
    shortlist = tuple(v for v in ranked if v not in seen)[: rules.shortlist]
    changes: list[Change] = []
    updated = _fill(replace(task, candidates=shortlist), now, rules, changes)
    return updated, changes


def answer(
    task: Task, volunteer_id: str, *, accept: bool, now: datetime, rules: DispatchRules
) -> tuple[Task, list[Change]]:
    """A volunteer accepts or declines their pending offer before its deadline."""
    offer = next((o for o in task.pending() if o.volunteer_id == volunteer_id), None)
    if offer is None:
        if volunteer_id in task.offered_to():
            raise DispatchError(f"your offer of task {task.id} is no longer open")
        raise NotYourTask(f"task {task.id} was not offered to you")
    if now >= offer.deadline:
        raise DispatchError(f"your offer of task {task.id} lapsed at {offer.deadline.isoformat()}")
    changes: list[Change] = []
    if accept:
        offers = tuple(
            replace(o, status="accepted", answered_at=now)
            if o is offer
            else (replace(o, status=WITHDRAWN, answered_at=now) if o.status == PENDING else o)
            for o in task.offers
        )
        task = replace(task, offers=offers, status=ACCEPTED, assignee=volunteer_id, assigned_at=now)
        changes.append(Change("task.accepted", _offer_data(task, offer, now)))
        return task, changes
    offers = tuple(
        replace(o, status=DECLINED, answered_at=now) if o is offer else o for o in task.offers
    )
    task = replace(task, offers=offers)
    changes.append(Change("task.declined", _offer_data(task, offer, now)))
    return _fill(task, now, rules, changes), changes


def lapse(task: Task, now: datetime, rules: DispatchRules) -> tuple[Task, list[Change]]:
    """Expire the offers whose deadline passed, offer the next, raise overdue once."""
    changes: list[Change] = []
    expired = [o for o in task.pending() if o.deadline <= now]
    if expired:
        task = replace(
            task,
            offers=tuple(
                replace(o, status=EXPIRED, answered_at=o.deadline) if o in expired else o
                for o in task.offers
            ),
        )
        changes.extend(Change("task.expired", _offer_data(task, o, now)) for o in expired)
        if task.status == OPEN:
            task = _fill(task, now, rules, changes)
    if (
        task.due_at is not None
        and task.due_at <= now
        and not task.overdue_raised
        and task.status != COMPLETED
    ):
        task = replace(task, overdue_raised=True)
        changes.append(Change("task.overdue", {**_state(task, now), "due_at": task.due_at}))
    return task, changes


def next_due(task: Task) -> datetime | None:
    """When the timer must look at this task again: the first offer deadline or the due time."""
    times = [o.deadline for o in task.pending()]
    if task.due_at is not None and not task.overdue_raised and task.status != COMPLETED:
        times.append(task.due_at)
    return min(times) if times else None


def assign(task: Task, volunteer_id: str, now: datetime) -> tuple[Task, list[Change]]:
    """Staff assign an open or escalated task directly (the escalation's answer)."""
    if task.status not in (OPEN, ESCALATED):
        raise DispatchError(f"task {task.id} is {task.status}; it has a volunteer already")
    offers = tuple(
        replace(o, status=WITHDRAWN, answered_at=now) if o.status == PENDING else o
        for o in task.offers
    )
    offer = Offer(volunteer_id, len(offers) + 1, now, now, status="accepted", answered_at=now)
    task = replace(
        task,
        offers=(*offers, offer),
        candidates=(),
        status=ACCEPTED,
        assignee=volunteer_id,
        assigned_at=now,
    )
    return task, [Change("task.accepted", _offer_data(task, offer, now))]


def check_in(task: Task, volunteer_id: str, now: datetime) -> Task:
    if task.assignee != volunteer_id:
        raise NotYourTask(f"task {task.id} is not assigned to you")
    if task.status != ACCEPTED:
        raise DispatchError(f"task {task.id} is {task.status}; check in after accepting")
    return replace(task, status=IN_PROGRESS, checked_in_at=now)


def check_out(task: Task, volunteer_id: str, now: datetime) -> tuple[Task, list[Change], int]:
    """Finish the task; the minutes between check-in and check-out (at least one) are returned."""
    if task.assignee != volunteer_id:
        raise NotYourTask(f"task {task.id} is not assigned to you")
    if task.status != IN_PROGRESS or task.checked_in_at is None:
        raise DispatchError(f"task {task.id} is {task.status}; check in before checking out")
    minutes = max(1, int((now - task.checked_in_at).total_seconds() // 60))
    task = replace(task, status=COMPLETED, checked_out_at=now)
    return task, [Change("task.completed", {**_state(task, now), "minutes": minutes})], minutes


def retarget(task: Task, grid_cell: str, now: datetime) -> Task | None:
    """Move a not-yet-taken task to another cell (its household moved), or None to keep it.

    Offers still pending are withdrawn and the shortlist dropped: the caller
    ranks the new cell's volunteers and starts offering again. A task someone
    has accepted stays with them: they know the household and can follow it.
    """
    if task.grid_cell == grid_cell or task.status not in (OPEN, ESCALATED):
        return None
    offers = tuple(
        replace(o, status=WITHDRAWN, answered_at=now) if o.status == PENDING else o
        for o in task.offers
    )
    return replace(task, grid_cell=grid_cell, offers=offers, candidates=(), status=OPEN)
