"""The grid's repository: the only code that touches the grid's collections."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shequ.contracts import grid as contract
from shequ.errors import NotFound
from shequ.pagination import InvalidCursor
from shequ.store import Repository, as_record
from shequ_services.grid import deadlines, open311, sla
from shequ_services.grid.deadlines import Clock
from shequ_services.grid.domain import (
    CLOSED_STATES,
    HIDDEN,
    NOT_OPEN_STATES,
    Category,
    DuplicateScope,
    Grant,
    Incident,
    Rating,
    Reader,
    open_deadline,
    read_grants,
)
from shequ_services.grid.rates import RESPONSE_CLOCK, Facts
from shequ_services.grid.workflow import StaleVersion, Transition

INCIDENTS = "incidents"
CLIENTS = "open311_clients"


#: The fields the rates and the open-work gauges read of an incident.
FACTS_PROJECTION = {
    "_id": 0,
    "community": 1,
    "category": 1,
    "department": 1,
    "status": 1,
    "reported_at": 1,
    "clocks": 1,
    "ratings.score": 1,
}


class IncidentNotFound(NotFound):
    pass


class IncidentChanged(Exception):
    """A timer scan lost a race with a step or another replica; the next scan retries."""


#: The listing's order is (reported_at, _id) newest first; these serve it alone and
#: under the filters used most (community, cell, category, status, department).
LISTING_INDEXES = [
    IndexModel([("reported_at", DESCENDING), ("_id", DESCENDING)]),
    *(
        IndexModel([(key, ASCENDING), ("reported_at", DESCENDING), ("_id", DESCENDING)])
        for key in ("community", "grid_cell", "category", "status", "department")
    ),
]


#: The SLA board's hot query: open incidents by their next deadline, over the whole
#: district and within one community or one department (the board's filters).
SLA_INDEXES = [
    IndexModel([("next_deadline", ASCENDING), ("_id", ASCENDING)]),
    IndexModel([("community", ASCENDING), ("next_deadline", ASCENDING), ("_id", ASCENDING)]),
    IndexModel([("department", ASCENDING), ("next_deadline", ASCENDING), ("_id", ASCENDING)]),
]
#: What the board reads of an incident: never the reporter, description or location.
SLA_PROJECTION = {
    "_id": 1,
    "category": 1,
    "community": 1,
    "department": 1,
    "status": 1,
    "reported_at": 1,
    "clocks": 1,
    "subtasks.department": 1,
}


class IncidentRepository(Repository):
    INDEXES = {
        INCIDENTS: [
            IndexModel([("reporter", 1), ("reported_at", DESCENDING)]),
            IndexModel([("community", 1), ("reported_at", DESCENDING)]),
            IndexModel([("department", 1), ("reported_at", DESCENDING)]),
            IndexModel([("next_due", ASCENDING)], sparse=True),
            IndexModel([("subtasks.department", 1), ("reported_at", DESCENDING)]),
            IndexModel([("open311.token", ASCENDING)], sparse=True),
            *LISTING_INDEXES,
            IndexModel([("category", 1), ("grid_cell", 1), ("reported_at", DESCENDING)]),
            *SLA_INDEXES,
        ]
    }

    def add_reported(self, incident: Incident, category: Category) -> None:
        """Store a new incident and its ``incident.reported`` event in one transaction."""

        def work() -> None:
            document = asdict(incident)
            document["_id"] = document.pop("id")
            self.db[INCIDENTS].insert_one(document, session=self.session)
            self.audit("incident", incident.id, None, asdict(incident))
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
        self,
        incident: Incident,
        step: Transition,
        clocks: dict[str, Clock],
        changes: dict[str, Any] | None = None,
    ) -> Incident:
        """Store one lifecycle step, its clocks, its field ``changes`` and its event,
        if nobody changed the incident.

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
            stored: dict[str, Any] = {
                **(changes or {}),
                "status": step.to_state,
                "clocks": _clock_documents(clocks),
                "next_due": deadlines.next_due(clocks),
                "next_deadline": open_deadline(step.to_state, clocks),
            }
            document = self.compare_and_set(
                INCIDENTS,
                incident.id,
                {"version": incident.version},
                {
                    "$set": stored,
                    "$inc": {"version": 1, "event_seq": 1},
                    "$push": {"history": entry},
                },
            )
            if document is None:
                raise StaleVersion(expected=incident.version, actual=self.get(incident.id).version)
            updated = _to_incident(document)
            self.audit("incident", incident.id, asdict(incident), asdict(updated))
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
                    **_step_details(step, updated),
                },
            )
            return updated

        return self.run_in_transaction(work)

    def record_mediation(self, incident_id: str, outcome: dict[str, Any]) -> None:
        """Note a closed mediation case on the incident without a lifecycle step.

        The version does not move: nothing a person could act on changed, so a
        step decided meanwhile on the same version stays valid.
        """
        before = self.stored(INCIDENTS, incident_id)
        if before is not None:
            self.update_by_id(INCIDENTS, incident_id, {"$set": {"mediation": outcome}})
            after = {**before, "mediation": outcome}
            self.audit(
                "incident", incident_id, asdict(_to_incident(before)), asdict(_to_incident(after))
            )

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
        alerts: list[deadlines.Alert],
        clocks: dict[str, Clock],
    ) -> None:
        """Store raised alerts and emit one event each, exactly once across replicas.

        The update is conditional on the incident's version and event count as
        read: a replica that scanned the same incident concurrently, or a step
        taken meanwhile, makes this one match nothing, and its transaction
        (events included) is rolled back by ``StaleVersion``.
        """

        def work() -> None:
            document = self.compare_and_set(
                INCIDENTS,
                incident.id,
                {"version": incident.version, "event_seq": incident.event_seq},
                {
                    "$set": {
                        "clocks": _clock_documents(clocks),
                        "next_due": deadlines.next_due(clocks),
                        "next_deadline": open_deadline(incident.status, clocks),
                    },
                    "$inc": {"event_seq": len(alerts)},
                },
            )
            if document is None:
                raise IncidentChanged(f"incident {incident.id} changed since it was scanned")
            self.audit("incident", incident.id, asdict(incident), asdict(_to_incident(document)))
            for offset, alert in enumerate(alerts, start=1):
                clock = clocks[alert.clock]
                data: dict[str, Any] = {
                    **_place(incident),
                    "clock": clock.name,
                    "deadline": clock.deadline,
                    "department": clock.department or incident.department,
                }
                if alert.kind == "escalated":
                    data.update(level=alert.level, target=alert.to)
                self.emit(
                    contract.ALERT_SPECS[alert.kind],
                    subject=incident.id,
                    sequence=incident.event_seq + offset,
                    data=data,
                )

        self.run_in_transaction(work)

    def record_rating(self, incident: Incident, rating: Rating, actor: str) -> Incident:
        """Store the reporter's rating, its history entry and ``incident.rated``.

        Conditional on the version the rating was decided on, like a step, so
        a double submission or a reopen in between rates nothing.
        """

        def work() -> Incident:
            fields: dict[str, Any] = {"score": rating.score}
            if rating.comment is not None:
                fields["comment"] = rating.comment
            # No from/to: a rating enters no state, and readers of the history
            # (the reopen window, the closure count) look for the entries that do.
            entry = {"at": rating.at, "actor": actor, "action": "rate", "fields": fields}
            document = self.compare_and_set(
                INCIDENTS,
                incident.id,
                {"version": incident.version},
                {
                    "$inc": {"version": 1, "event_seq": 1},
                    "$push": {"history": entry, "ratings": asdict(rating)},
                },
            )
            if document is None:
                raise StaleVersion(expected=incident.version, actual=self.get(incident.id).version)
            updated = _to_incident(document)
            self.audit("incident", incident.id, asdict(incident), asdict(updated))
            self.emit(
                contract.INCIDENT_RATED_V1,
                subject=incident.id,
                sequence=updated.event_seq,
                data={
                    **_place(incident),
                    "score": rating.score,
                    "outcome": incident.status,
                    "department": incident.department,
                    "at": rating.at,
                },
            )
            return updated

        return self.run_in_transaction(work)

    def rate_facts(
        self,
        *,
        start: datetime,
        end: datetime,
        communities: tuple[str, ...] | None,
        category: str | None,
        department: str | None,
    ) -> list[Facts]:
        """What the rates need of the incidents reported in [start, end), nothing more."""
        query: dict[str, Any] = {"reported_at": {"$gte": start, "$lt": end}}
        if communities is not None:
            query["community"] = {"$in": list(communities)}
        if category is not None:
            query["category"] = category
        if department is not None:
            query["department"] = department
        return self._facts(query)

    def open_facts(self) -> list[Facts]:
        """The rate facts of every open incident: what the open-work gauges count."""
        return self._facts({"status": {"$nin": list(NOT_OPEN_STATES)}})

    def _facts(self, query: dict[str, Any]) -> list[Facts]:
        projection = FACTS_PROJECTION
        return [
            Facts(
                community=document["community"],
                category=document["category"],
                department=document.get("department"),
                status=document["status"],
                reported_at=document["reported_at"],
                clocks={
                    name: Clock.from_document(clock)
                    for name, clock in (document.get("clocks") or {}).items()
                },
                score=(document.get("ratings") or [{}])[-1].get("score"),
            )
            for document in self.db[INCIDENTS].find(query, projection)
        ]

    def open_in(self, scope: DuplicateScope, limit: int = 20) -> list[Incident]:
        """Open incidents a new report may duplicate (``domain.duplicate_scope``), newest first.

        Reads through the ``(category, grid_cell, reported_at)`` index one
        span of the window at a time, newest first, and stops once ``limit``
        open incidents are found (``DuplicateScope.first_span``), so a burst
        of reports in one cell does not make every report read the whole
        burst. The state is checked here: a filter naming more than the index
        holds is a whole-collection read on the embedded store
        (``Repository.compare_and_set``), and this runs for every report.
        """
        found: list[dict[str, Any]] = []
        read = 0
        span: tuple[datetime, datetime] | None = scope.first_span()
        while span is not None and len(found) < limit:
            start, end = span
            before = read
            for cell in scope.cells:
                for document in self.db[INCIDENTS].find(
                    {
                        "category": scope.category,
                        "grid_cell": cell,
                        "reported_at": {"$gte": start, "$lt": end},
                    }
                ):
                    read += 1
                    if (
                        document["status"] not in NOT_OPEN_STATES
                        and document["_id"] != scope.exclude
                    ):
                        found.append(document)
            span = scope.next_span(start, read, limit - len(found), held=read - before)
        found.sort(key=lambda document: document["reported_at"], reverse=True)
        return [_to_incident(document) for document in found[:limit]]

    def get(self, incident_id: str) -> Incident:
        document = self.db[INCIDENTS].find_one({"_id": incident_id}, session=self.session)
        if document is None:
            raise IncidentNotFound(f"no incident {incident_id}")
        return _to_incident(document)

    def visible_to(
        self,
        reader: Reader,
        *,
        filters: Mapping[str, Any],
        ordinary_categories: Collection[str],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[Incident], bool]:
        """One page of the incidents ``reader`` may see, newest first, and whether more follow.

        Visibility is ``domain.read_grants`` turned into a query (``listing_query``),
        so a filter can only narrow what the reader may see, never widen it.
        """
        query = listing_query(read_grants(reader), ordinary_categories, filters, after)
        if query is None:
            return [], False
        cursor = (
            self.db[INCIDENTS]
            .find(query)
            .sort([("reported_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
        )
        found = [_to_incident(document) for document in cursor]
        return found[:limit], len(found) > limit

    # -- the ops SLA board (sla.py): open incidents by deadline, counts, 30 days of history ----

    def sla_page(
        self,
        grants: list[Grant],
        ordinary_categories: Collection[str],
        filters: Mapping[str, Any],
        *,
        skip: int,
        limit: int,
        total: int,
    ) -> list[sla.SlaRecord]:
        """One page of the open incidents the grants show, by next deadline.

        Ordered as ``sla.urgency_key``: the incidents with a running clock by
        deadline (the index ``SLA_INDEXES``), then those with none. MongoDB
        sorts a missing value first, so the two parts are two queries.
        ``total`` is how many open incidents the same grants and filters show
        (``sla.total_of`` the counts, which the page reads anyway), so no
        query here counts the whole list; only a page that reaches past the
        first part counts the second, which is normally empty.
        """
        base = sla_query(grants, ordinary_categories, filters)
        visible = read_clause(grants, ordinary_categories)
        if base is None or visible is None:
            return []
        # next_deadline is set on open incidents only (domain.open_deadline), so the
        # first part needs no condition on the state: a range of the index.
        timed = [c for c in (visible, filter_clause(filters)) if c]
        timed.append({"next_deadline": {"$ne": None}})
        found = list(
            self.db[INCIDENTS]
            .find({"$and": timed}, SLA_PROJECTION)
            .sort([("next_deadline", ASCENDING), ("_id", ASCENDING)])
            .skip(skip)
            .limit(limit)
        )
        if len(found) < limit:
            untimed = {"$and": [base, {"next_deadline": None}]}
            timed_count = total - self.db[INCIDENTS].count_documents(untimed)
            found += list(
                self.db[INCIDENTS]
                .find(untimed, SLA_PROJECTION)
                .sort("_id", ASCENDING)
                .skip(max(skip - timed_count, 0))
                .limit(limit - len(found))
            )
        return [_sla_record(document) for document in found]

    def fill_next_deadlines(self, limit: int) -> int:
        """Give up to ``limit`` open incidents stored without ``next_deadline`` their value.

        Incidents stored before the field existed would otherwise sort after
        every other on the SLA board until their next step. Conditional on the
        version read, like a step, so a step taken meanwhile (which writes the
        field itself) wins; returns how many were filled.
        """
        missing = {"next_deadline": {"$exists": False}, "status": {"$nin": list(NOT_OPEN_STATES)}}
        filled = 0
        for document in self.db[INCIDENTS].find(missing, {"clocks": 1, "version": 1}).limit(limit):
            deadline = {"$set": {"next_deadline": deadlines.next_deadline(_clocks_of(document))}}
            changed = self.run_in_transaction(
                lambda document=document, deadline=deadline: self.compare_and_set(
                    INCIDENTS, document["_id"], {"version": document["version"]}, deadline
                )
            )
            filled += changed is not None
        return filled

    def sla_counts(
        self,
        grants: list[Grant],
        ordinary_categories: Collection[str],
        filters: Mapping[str, Any],
        now: datetime,
    ) -> list[sla.Cell]:
        """Open, overdue and due-within-a-day counts per (community, department)."""
        base = sla_query(grants, ordinary_categories, filters)
        if base is None:
            return []
        parts = {
            "open": base,
            "overdue": {"$and": [base, {"next_deadline": {"$lt": now}}]},
            "due_soon": {
                "$and": [base, {"next_deadline": {"$gte": now, "$lt": now + sla.DUE_SOON}}]
            },
        }
        counts: dict[tuple[str, str | None], dict[str, int]] = {}
        for name, match in parts.items():
            pipeline: list[dict[str, Any]] = [
                {"$match": match},
                {
                    "$group": {
                        "_id": {"community": "$community", "department": "$department"},
                        "n": {"$sum": 1},
                    }
                },
            ]
            for group in self.db[INCIDENTS].aggregate(pipeline):
                key = (group["_id"]["community"], group["_id"].get("department"))
                counts.setdefault(key, {})[name] = group["n"]
        return [
            sla.Cell(
                community=community,
                department=department,
                open=found.get("open", 0),
                overdue=found.get("overdue", 0),
                due_soon=found.get("due_soon", 0),
            )
            for (community, department), found in counts.items()
        ]

    def sla_history(
        self,
        grants: list[Grant],
        ordinary_categories: Collection[str],
        filters: Mapping[str, Any],
        *,
        start: datetime,
        end: datetime,
    ) -> list[sla.HistoryRecord]:
        """What the board's charts need of the incidents alive in [start, end).

        Those reported before ``end`` that are still open or took a step
        since ``start``: the window's reports, closures and overdue clocks
        are all among them.
        """
        visible = read_clause(grants, ordinary_categories)
        if visible is None:
            return []
        alive = {
            "reported_at": {"$lt": end},
            "$or": [
                {"status": {"$nin": list(NOT_OPEN_STATES)}},
                {"history.at": {"$gte": start}},
            ],
        }
        query = {"$and": [c for c in (visible, filter_clause(filters), alive) if c]}
        projection = {
            **FACTS_PROJECTION,
            "history.at": 1,
            "history.to": 1,
        }
        found = []
        for document in self.db[INCIDENTS].find(query, projection):
            found.append(
                sla.HistoryRecord(
                    facts=Facts(
                        community=document["community"],
                        category=document["category"],
                        department=document.get("department"),
                        status=document["status"],
                        reported_at=document["reported_at"],
                        clocks=_clocks_of(document),
                        score=(document.get("ratings") or [{}])[-1].get("score"),
                    ),
                    closures=tuple(
                        entry["at"]
                        for entry in document.get("history") or ()
                        if entry.get("to") in CLOSED_STATES
                    ),
                )
            )
        return found

    # -- Open311: public reads, never of sensitive categories -------------------------------

    def open311_requests(
        self,
        *,
        ids: tuple[str, ...],
        categories: tuple[str, ...],
        start: datetime | None,
        end: datetime | None,
        closed: bool | None,
        limit: int,
    ) -> list[Incident]:
        """Incidents an Open311 client may see, newest first.

        ``categories`` are the offered ones (already narrowed by a
        service_code filter); ``closed`` None means any status.
        """
        query: dict[str, Any] = {"category": {"$in": list(categories)}}
        if ids:
            query["_id"] = {"$in": list(ids)}
        if start is not None and end is not None:
            query["reported_at"] = {"$gte": start, "$lte": end}
        if closed is not None:
            query["status"] = {"$in" if closed else "$nin": list(open311.CLOSED_STATES)}
        cursor = self.db[INCIDENTS].find(query).sort("reported_at", DESCENDING).limit(limit)
        return [_to_incident(document) for document in cursor]

    def open311_client(self, key_hash: str) -> ApiClient | None:
        """The active Open311 client holding the key with this hash, if any."""
        return ApiKeyRepository(self.db).active_client(key_hash)

    def by_open311_token(self, token: str) -> Incident:
        document = self.db[INCIDENTS].find_one({"open311.token": token}, session=self.session)
        if document is None:
            raise IncidentNotFound(f"no request with token {token}")
        return _to_incident(document)


#: Single-valued listing filters that are stored under the same name.
EQUALITY_FILTERS = ("community", "grid_cell", "category", "department", "channel", "urgency")


def listing_query(
    grants: list[Grant],
    ordinary_categories: Collection[str],
    filters: Mapping[str, Any],
    after: tuple[datetime, str] | None,
) -> dict[str, Any] | None:
    """The MongoDB query for a listing page, or ``None`` when the reader may see nothing."""
    visible = read_clause(grants, ordinary_categories)
    if visible is None:
        return None
    position = after_clause(after) if after is not None else {}
    clauses = [clause for clause in (visible, filter_clause(filters), position) if clause]
    if len(clauses) <= 1:
        return clauses[0] if clauses else {}
    return {"$and": clauses}


def read_clause(grants: list[Grant], ordinary_categories: Collection[str]) -> dict[str, Any] | None:
    """Incidents some grant shows, as a query; ``None`` if no grant shows anything.

    Sensitivity is by category, and a category missing from the reference
    data counts as sensitive (``$in`` the ordinary ones), as in ``read_view``.
    """
    ordinary = sorted(ordinary_categories)
    alternatives: list[dict[str, Any]] = []
    for grant in grants:
        reach: dict[str, Any] = (
            {} if grant.field is None else {grant.field: {"$in": list(grant.values)}}
        )
        shows_ordinary, shows_sensitive = grant.ordinary != HIDDEN, grant.sensitive != HIDDEN
        if shows_ordinary and shows_sensitive:
            alternatives.append(reach)
        elif shows_ordinary:
            alternatives.append({**reach, "category": {"$in": ordinary}})
        elif shows_sensitive:
            alternatives.append({**reach, "category": {"$nin": ordinary}})
    if not alternatives:
        return None
    if {} in alternatives:
        return {}
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def filter_clause(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The listing's filters as a query (all must hold)."""
    query: dict[str, Any] = {key: filters[key] for key in EQUALITY_FILTERS if key in filters}
    if filters.get("status"):
        query["status"] = {"$in": list(filters["status"])}
    reported: dict[str, datetime] = {}
    if filters.get("reported_from") is not None:
        reported["$gte"] = filters["reported_from"]
    if filters.get("reported_to") is not None:
        reported["$lt"] = filters["reported_to"]
    if reported:
        query["reported_at"] = reported
    return query


def sla_query(
    grants: list[Grant], ordinary_categories: Collection[str], filters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The open incidents the grants show, narrowed by the board's filters; ``None``: none."""
    visible = read_clause(grants, ordinary_categories)
    if visible is None:
        return None
    opened = {"status": {"$nin": list(NOT_OPEN_STATES)}}
    clauses = [clause for clause in (visible, filter_clause(filters), opened) if clause]
    return {"$and": clauses}


def _clocks_of(document: Mapping[str, Any]) -> dict[str, Clock]:
    return {
        name: Clock.from_document(clock) for name, clock in (document.get("clocks") or {}).items()
    }


def _sla_record(document: Mapping[str, Any]) -> sla.SlaRecord:
    return sla.SlaRecord(
        id=document["_id"],
        category=document["category"],
        community=document["community"],
        department=document.get("department"),
        status=document["status"],
        reported_at=document["reported_at"],
        clocks=_clocks_of(document),
        co_departments=tuple(
            task["department"] for task in document.get("subtasks") or () if "department" in task
        ),
    )


def position_of(incident: Incident) -> list[str]:
    """Where ``incident`` stands in the listing order, as a cursor position."""
    return [incident.reported_at.isoformat(), incident.id]


def parse_position(position: list[Any]) -> tuple[datetime, str]:
    """A cursor position back as ``(reported_at, id)``; ``InvalidCursor`` if it is not one."""
    try:
        reported_at, incident_id = position
        parsed = datetime.fromisoformat(reported_at)
    except (TypeError, ValueError) as exc:
        raise InvalidCursor() from exc
    if parsed.tzinfo is None or not isinstance(incident_id, str):
        raise InvalidCursor()
    return parsed, incident_id


def after_clause(after: tuple[datetime, str]) -> dict[str, Any]:
    """Everything after ``(reported_at, id)`` in the newest-first order (keyset pagination)."""
    reported_at, incident_id = after
    return {
        "$or": [
            {"reported_at": {"$lt": reported_at}},
            {"reported_at": reported_at, "_id": {"$lt": incident_id}},
        ]
    }


@dataclass(frozen=True)
class ApiClient:
    """An Open311 client: it is known by name; its key exists only as a hash."""

    name: str
    created_at: datetime
    active: bool = True


class ClientExists(Exception):
    pass


class ApiKeyRepository:
    """Open311 clients and their key hashes (``open311_clients``).

    Not a ``Repository``: nothing here is an event, so it needs neither a
    transaction nor the outbox, and the ``shequ apikey`` command can use it
    with a bare database handle.
    """

    def __init__(self, db: Database[Any]) -> None:
        self.db = db

    def add(self, name: str, key_hash: str, created_at: datetime) -> ApiClient:
        """Register a client; a second client of the same name is refused."""
        self.db[CLIENTS].create_index("name", unique=True)
        try:
            self.db[CLIENTS].insert_one(
                {"_id": key_hash, "name": name, "created_at": created_at, "active": True}
            )
        except DuplicateKeyError as exc:
            raise ClientExists(f"an Open311 client named {name!r} exists already") from exc
        return ApiClient(name, created_at)

    def active_client(self, key_hash: str) -> ApiClient | None:
        document = self.db[CLIENTS].find_one({"_id": key_hash})
        if document is None or not document.get("active"):
            return None
        return ApiClient(document["name"], document["created_at"], document["active"])


def issue_api_key(keys: ApiKeyRepository, name: str) -> str:
    """Register a client and return its new key, the only time the key exists in the clear."""
    key = open311.new_api_key()
    keys.add(open311.check_client_name(name), open311.hash_api_key(key), datetime.now(UTC))
    return key


def _storable(fields: dict[str, Any]) -> dict[str, Any]:
    """BSON has no date type: a target date is stored as its ISO text."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in fields.items()}


def _answer(incident: Incident) -> dict[str, Any]:
    """Whether the report was answered in time: concluding events carry it for the board."""
    clock = incident.clocks.get(RESPONSE_CLOCK)
    if clock is None or clock.stopped_at is None:
        return {"answered_in_time": None}
    return {"answered_in_time": clock.stopped_at <= clock.deadline}


def _step_details(step: Transition, updated: Incident) -> dict[str, Any]:
    """What the co-handling and extension events add to a step's payload: ids and dates only."""
    if step.action == "dispatch":
        return {"co_departments": list(step.fields.get("co_departments", []))}
    if step.action == "report_subtask":
        return {"co_department": step.fields["co_department"]}
    if step.action == "merge":
        return {"merged_into": step.fields["duplicate_of"], **_answer(updated)}
    if step.action == "reject" or (step.action == "check" and step.to_state != "reopened"):
        return _answer(updated)
    if step.action in ("request_extension", "approve_extension", "refuse_extension"):
        assert updated.extension is not None
        return {"target_date": date.fromisoformat(updated.extension["target_date"])}
    return {}


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
    record["ratings"] = [Rating(**rating) for rating in record.get("ratings", [])]
    return Incident(**record)
