"""The volunteer service's repository: the only code that touches its collections.

Every state change and the events it causes are written in one transaction.
Task changes are conditional on the version that was read, so two replicas
scanning the same offer deadline, or a volunteer answering while the timer
expires their offer, cannot both win: the loser's transaction (events
included) is rolled back with ``TaskChanged`` and it reads again.

A volunteer's name and phone are sealed at rest (``shequ.sealing``, bound to
the volunteer's id and the field) and opened on the way out; nothing else
here is personal. Each volunteer document lists the key ids it uses
(``kids``), so the rotation timer finds the ones sealed under an old key, and
the ones written in the clear before sealing (no ``kids``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, time, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from shequ import sealing
from shequ.contracts import volunteer as contract
from shequ.contracts.registry import EventSpec
from shequ.errors import NotFound
from shequ.store import Repository, Store
from shequ_services.volunteer.domain import (
    Change,
    Offer,
    Skill,
    Task,
    Team,
    Volunteer,
    Window,
    next_due,
)
from shequ_services.volunteer.ledger import APPROVED, PENDING, Entry
from shequ_services.volunteer.rounds import Household

VOLUNTEERS, TEAMS, HOUSEHOLDS, TASKS, LEDGER, META = (
    "volunteers",
    "teams",
    "households",
    "tasks",
    "ledger",
    "meta",
)
SPECS: dict[str, EventSpec] = {
    "task.offered": contract.TASK_OFFERED_V1,
    "task.accepted": contract.TASK_ACCEPTED_V1,
    "task.declined": contract.TASK_DECLINED_V1,
    "task.expired": contract.TASK_EXPIRED_V1,
    "task.completed": contract.TASK_COMPLETED_V1,
    "task.overdue": contract.TASK_OVERDUE_V1,
    "task.escalated": contract.TASK_ESCALATED_V1,
    "hours.approved": contract.HOURS_APPROVED_V1,
    "hours.corrected": contract.HOURS_CORRECTED_V1,
}


class Duplicate(Exception):
    """An id that is taken already (HTTP 409)."""


class TaskChanged(Exception):
    """The task changed since it was read; read it again and redo the step."""


class EntryChanged(Exception):
    """The ledger entry was approved meanwhile by someone else."""


# -- documents ---------------------------------------------------------------------------


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")


#: The volunteer's fields sealed at rest; their label is the field's name.
SEALED_FIELDS = ("name", "phone")


def volunteer_document(
    volunteer: Volunteer, now: datetime, keyring: sealing.Keyring
) -> dict[str, Any]:
    document = asdict(volunteer)
    document["_id"] = document.pop("id")
    for name in SEALED_FIELDS:
        document[name] = keyring.seal(document[name], record_id=volunteer.id, label=name)
    document["kids"] = sorted(sealing.kids_in(document))
    document["windows"] = [
        {"weekday": w.weekday, "start": _hhmm(w.start), "end": _hhmm(w.end)}
        for w in volunteer.windows
    ]
    document["updated_at"] = now
    return document


def to_volunteer(document: Mapping[str, Any], keyring: sealing.Keyring) -> Volunteer:
    opened = {
        name: keyring.open_stored(document[name], record_id=document["_id"], label=name)
        for name in SEALED_FIELDS
    }
    return Volunteer(
        id=document["_id"],
        community=document["community"],
        home_cell=document["home_cell"],
        name=opened["name"],
        phone=opened["phone"],
        household_id=document.get("household_id"),
        skills=tuple(Skill(s["code"], s["confirmed_by"]) for s in document["skills"]),
        languages=tuple(document["languages"]),
        windows=tuple(
            Window(w["weekday"], time.fromisoformat(w["start"]), time.fromisoformat(w["end"]))
            for w in document["windows"]
        ),
        teams=tuple(document["teams"]),
        consent_to_contact=document["consent_to_contact"],
        active=document["active"],
    )


def task_document(task: Task) -> dict[str, Any]:
    document = asdict(task)
    document["_id"] = document.pop("id")
    document["next_due"] = next_due(task)
    document["pending_with"] = [o.volunteer_id for o in task.pending()]
    return document


def to_task(document: Mapping[str, Any]) -> Task:
    values = {k: v for k, v in document.items() if k not in ("_id", "next_due", "pending_with")}
    values["offers"] = tuple(Offer(**offer) for offer in document["offers"])
    for name in ("skills", "candidates"):
        values[name] = tuple(document[name])
    return Task(id=document["_id"], **values)


def to_entry(document: Mapping[str, Any]) -> Entry:
    values = {k: v for k, v in document.items() if k != "_id"}
    values["teams"] = tuple(document["teams"])
    return Entry(id=document["_id"], **values)


def entry_document(entry: Entry) -> dict[str, Any]:
    document = asdict(entry)
    document["_id"] = document.pop("id")
    return document


class VolunteerRepository(Repository):
    keyring: sealing.Keyring

    INDEXES = {
        VOLUNTEERS: [
            IndexModel([("community", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("updated_at", ASCENDING)]),
            IndexModel([("teams", ASCENDING)]),
            IndexModel([("kids", ASCENDING)]),
        ],
        TEAMS: [IndexModel([("leaders", ASCENDING)])],
        HOUSEHOLDS: [IndexModel([("community", ASCENDING), ("_id", ASCENDING)])],
        TASKS: [
            IndexModel(
                [("incident_id", ASCENDING)],
                unique=True,
                partialFilterExpression={"incident_id": {"$type": "string"}},
            ),
            # The lookup by incident, run for every report: the embedded store
            # plans no partial index for it (docs/performance.md, "Query plans").
            IndexModel([("incident_id", ASCENDING), ("_id", ASCENDING)]),
            IndexModel(
                [("household_id", ASCENDING), ("round_month", ASCENDING)],
                unique=True,
                partialFilterExpression={"round_month": {"$type": "string"}},
            ),
            IndexModel([("next_due", ASCENDING)]),
            IndexModel([("pending_with", ASCENDING)]),
            IndexModel([("offers.volunteer_id", ASCENDING), ("created_at", DESCENDING)]),
            IndexModel([("assignee", ASCENDING), ("assigned_at", DESCENDING)]),
            IndexModel([("community", ASCENDING), ("created_at", DESCENDING)]),
        ],
        LEDGER: [
            IndexModel([("volunteer_id", ASCENDING), ("served_at", ASCENDING)]),
            IndexModel([("community", ASCENDING), ("served_at", ASCENDING)]),
            IndexModel([("corrects", ASCENDING)]),
        ],
    }

    # -- seeding -----------------------------------------------------------------------

    def seed_once(
        self,
        teams: Iterable[Team],
        volunteers: Iterable[Volunteer],
        households: Iterable[Household],
        now: datetime,
    ) -> bool:
        """Write the seed into an empty database, once across replicas; False if done before."""

        if self.db[META].find_one({"_id": "seed"}) is not None:
            return False

        def work() -> bool:
            # A replica seeding at the same moment makes this insert fail, which
            # aborts the whole transaction: the error must leave it, not be caught in it.
            self.db[META].insert_one({"_id": "seed", "at": now}, session=self.session)
            for team in teams:
                self._insert(TEAMS, "team", {"_id": team.id, **_without_id(asdict(team))})
            for volunteer in volunteers:
                document = volunteer_document(volunteer, now, self.keyring)
                self._insert(VOLUNTEERS, "volunteer", document)
            for household in households:
                self._insert(HOUSEHOLDS, "household", self._household_document(household, now))
            return True

        try:
            return self.run_in_transaction(work)
        except DuplicateKeyError:
            return False

    def _insert(self, collection: str, kind: str, document: dict[str, Any]) -> None:
        """Insert a new document and its audit record, in one transaction."""

        def work() -> None:
            self.db[collection].insert_one(document, session=self.session)
            self.audit(kind, document["_id"], None, self.stored(collection, document["_id"]))

        self.run_in_transaction(work)

    def _replace(self, collection: str, kind: str, document: dict[str, Any]) -> None:
        """Replace a stored document (matched by ``_id``) and record the change."""

        def work() -> None:
            previous = self.replace_by_id(collection, document["_id"], document)
            if previous is not None:
                after = self.stored(collection, document["_id"])
                self.audit(kind, document["_id"], previous, after)

        self.run_in_transaction(work)

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Hold ``name`` until ``now + ttl`` unless another holder's lease is still running.

        One atomic single-document write, outside any transaction: replicas
        racing for the monthly round do not all start writing visit tasks
        at once (the unique index stays the guarantee; the lease avoids the
        conflicting transactions). Not audited: it is coordination between
        replicas, not a fact about anyone; the round's tasks are recorded.
        """
        try:
            self.db[META].find_one_and_update(
                {"_id": f"lease:{name}", "$or": [{"until": {"$lt": now}}, {"holder": holder}]},
                {"$set": {"holder": holder, "until": now + ttl}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    def release_lease(self, name: str, holder: str, now: datetime) -> None:
        self.db[META].update_one(
            {"_id": f"lease:{name}", "holder": holder}, {"$set": {"until": now}}
        )

    # -- registry ----------------------------------------------------------------------

    def add_volunteer(self, volunteer: Volunteer, now: datetime) -> None:
        try:
            self._insert(VOLUNTEERS, "volunteer", volunteer_document(volunteer, now, self.keyring))
        except DuplicateKeyError as exc:
            raise Duplicate(f"volunteer {volunteer.id!r} exists already") from exc

    def replace_volunteer(self, volunteer: Volunteer, now: datetime) -> None:
        self._replace(VOLUNTEERS, "volunteer", volunteer_document(volunteer, now, self.keyring))

    def reseal_batch(self, limit: int) -> int:
        """Re-seal up to ``limit`` volunteers under the active key; how many changed.

        Picks documents sealed under another key and those still in the clear
        from before sealing (no ``kids``). ``updated_at`` does not move: no
        fact changed, so the dispatch index need not read them again. The
        write is conditional on the document being as read, so a change
        made meanwhile (sealed under the active key anyway) is left alone.
        Each re-sealed volunteer is recorded (action ``volunteer.timer.<timer>``):
        the stored bytes changed, though no fact did.
        """
        stale = self.keyring.stale_kids()
        query = {"$or": [{"kids": {"$exists": False}}, {"kids": {"$in": stale}}]}
        changed = 0
        for document in self.db[VOLUNTEERS].find(query).limit(limit):
            volunteer = to_volunteer(document, self.keyring)
            resealed = volunteer_document(volunteer, document["updated_at"], self.keyring)
            written = self.replace_audited(
                VOLUNTEERS, "volunteer", document, resealed, "updated_at"
            )
            changed += written is not None
        return changed

    def volunteer(self, volunteer_id: str) -> Volunteer:
        document = self.db[VOLUNTEERS].find_one({"_id": volunteer_id}, session=self.session)
        if document is None:
            raise NotFound(f"no volunteer {volunteer_id!r}")
        return to_volunteer(document, self.keyring)

    def volunteers(
        self,
        *,
        communities: Sequence[str] | None,
        team: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Volunteer]:
        query = _in_communities(communities, after)
        if team is not None:
            query["teams"] = team
        cursor = self.db[VOLUNTEERS].find(query).sort("_id", ASCENDING).limit(limit)
        return [to_volunteer(d, self.keyring) for d in cursor]

    def volunteers_changed_since(self, since: datetime | None) -> tuple[list[Volunteer], Any]:
        """Volunteers written at or after ``since`` (all when None), and the newest write time."""
        query = {} if since is None else {"updated_at": {"$gte": since}}
        found, newest = [], since
        for document in self.db[VOLUNTEERS].find(query):
            found.append(to_volunteer(document, self.keyring))
            if newest is None or document["updated_at"] > newest:
                newest = document["updated_at"]
        return found, newest

    def add_team(self, team: Team) -> None:
        try:
            self._insert(TEAMS, "team", {"_id": team.id, **_without_id(asdict(team))})
        except DuplicateKeyError as exc:
            raise Duplicate(f"team {team.id!r} exists already") from exc

    def teams(
        self,
        communities: Sequence[str] | None = None,
        *,
        after: str | None = None,
        limit: int = 0,
    ) -> dict[str, Team]:
        """Teams in id order: of ``communities`` (None: all), after the id ``after``,
        at most ``limit`` (0: no limit, for the service's own checks)."""
        cursor = self.db[TEAMS].find(_in_communities(communities, after)).sort("_id", ASCENDING)
        return {
            d["_id"]: Team(d["_id"], d["community"], d["name"], tuple(d["leaders"]))
            for d in cursor.limit(limit)
        }

    def led_teams(self, leader: str) -> list[str]:
        return [d["_id"] for d in self.db[TEAMS].find({"leaders": leader}, {"_id": 1})]

    @staticmethod
    def _household_document(household: Household, now: datetime) -> dict[str, Any]:
        document = asdict(household)
        document["_id"] = document.pop("id")
        document["updated_at"] = now
        return document

    def add_household(self, household: Household, now: datetime) -> None:
        try:
            self._insert(HOUSEHOLDS, "household", self._household_document(household, now))
        except DuplicateKeyError as exc:
            raise Duplicate(f"household {household.id!r} exists already") from exc

    def household(self, household_id: str) -> Household:
        document = self.db[HOUSEHOLDS].find_one({"_id": household_id}, session=self.session)
        if document is None:
            raise NotFound(f"no household {household_id!r}")
        return _to_household(document)

    def households(
        self,
        communities: Sequence[str] | None = None,
        *,
        after: str | None = None,
        limit: int = 0,
    ) -> list[Household]:
        """Households in id order, as ``teams`` (0: no limit, for the rounds timer)."""
        query = _in_communities(communities, after)
        cursor = self.db[HOUSEHOLDS].find(query).sort("_id", ASCENDING).limit(limit)
        return [_to_household(d) for d in cursor]

    def replace_household(self, household: Household, now: datetime) -> None:
        self._replace(HOUSEHOLDS, "household", self._household_document(household, now))

    # -- tasks -------------------------------------------------------------------------

    def create(self, task: Task, changes: Sequence[Change] = ()) -> Task:
        """Store a new task with its ``task.created`` event and the events of its first offers.

        Raises ``Duplicate`` when a task for the same incident, or the same
        household and month, exists already: creation is idempotent by content,
        not only by event id.
        """

        def work() -> Task:
            stored = replace(task, event_seq=1 + len(changes))
            document = task_document(stored)
            try:
                self.db[TASKS].insert_one(document, session=self.session)
            except DuplicateKeyError as exc:
                raise Duplicate(f"task {task.id} exists already") from exc
            self.audit("task", task.id, None, self.stored(TASKS, task.id))
            self.emit(
                contract.TASK_CREATED_V1,
                subject=task.id,
                sequence=1,
                data={
                    "task_id": task.id,
                    "incident_id": task.incident_id,
                    "community": task.community,
                    "grid_cell": task.grid_cell,
                    "kind": task.kind,
                },
            )
            self._emit_changes(task.id, changes, first=2)
            return stored

        return self.run_in_transaction(work)

    def save(self, before: Task, after: Task, changes: Sequence[Change]) -> Task:
        """Write a step, conditional on ``before``'s version; emit its events in order."""

        def work() -> Task:
            stored = replace(
                after, version=before.version + 1, event_seq=before.event_seq + len(changes)
            )
            previous = self.stored(TASKS, before.id)
            written = self.compare_and_set(
                TASKS, before.id, {"version": before.version}, task_document(stored)
            )
            if written is None:
                raise TaskChanged(f"task {before.id} changed since it was read")
            # Offers and the assignment live in the task: one record per step.
            self.audit("task", before.id, previous, self.stored(TASKS, before.id))
            self._emit_changes(before.id, changes, first=before.event_seq + 1)
            return stored

        return self.run_in_transaction(work)

    def _emit_changes(self, subject: str, changes: Sequence[Change], first: int) -> None:
        for offset, change in enumerate(changes):
            self.emit(
                SPECS[change.event], subject=subject, sequence=first + offset, data=change.data
            )

    def task(self, task_id: str) -> Task:
        document = self.db[TASKS].find_one({"_id": task_id}, session=self.session)
        if document is None:
            raise NotFound(f"no task {task_id!r}")
        return to_task(document)

    def round_task(self, household_id: str, month: str) -> Task | None:
        document = self.db[TASKS].find_one({"household_id": household_id, "round_month": month})
        return to_task(document) if document else None

    def round_households(self, month: str) -> set[str]:
        """The households that have their visit task for ``month`` already."""
        found = self.db[TASKS].find({"round_month": month}, {"household_id": 1})
        return {d["household_id"] for d in found}

    def for_incident(self, incident_id: str) -> list[Task]:
        found = self.db[TASKS].find({"incident_id": incident_id}, session=self.session)
        return [to_task(d) for d in found]

    def tasks(
        self,
        *,
        communities: Sequence[str] | None,
        filters: Mapping[str, Any],
        limit: int,
    ) -> list[Task]:
        query = {k: v for k, v in filters.items() if v is not None}
        if communities is not None:
            query["community"] = {"$in": list(communities)}
        cursor = self.db[TASKS].find(query).sort("created_at", DESCENDING).limit(limit)
        return [to_task(d) for d in cursor]

    def offered_to(self, volunteer_id: str) -> list[Task]:
        """Tasks with an offer pending for this volunteer."""
        return [to_task(d) for d in self.db[TASKS].find({"pending_with": volunteer_id})]

    def due(self, now: datetime, limit: int) -> list[Task]:
        cursor = (
            self.db[TASKS]
            .find({"next_due": {"$lte": now}})
            .sort("next_due", ASCENDING)
            .limit(limit)
        )
        return [to_task(d) for d in cursor]

    def recent_loads(self, since: datetime, among: Sequence[str]) -> dict[str, int]:
        """Tasks taken (accepted or assigned) per volunteer of ``among`` since ``since``.

        The fairness figure of the ranking.
        """
        pipeline: list[dict[str, Any]] = [
            {"$match": {"assignee": {"$in": list(among)}, "assigned_at": {"$gte": since}}},
            {"$group": {"_id": "$assignee", "n": {"$sum": 1}}},
        ]
        return {d["_id"]: d["n"] for d in self.db[TASKS].aggregate(pipeline)}

    # -- ledger ------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Add a ledger entry (in the caller's transaction, if any) with its record."""
        self._insert(LEDGER, "ledger_entry", entry_document(entry))

    def entry(self, entry_id: str) -> Entry:
        document = self.db[LEDGER].find_one({"_id": entry_id})
        if document is None:
            raise NotFound(f"no ledger entry {entry_id!r}")
        return to_entry(document)

    def corrections_of(self, entry_id: str) -> list[Entry]:
        return [to_entry(d) for d in self.db[LEDGER].find({"corrects": entry_id})]

    def approve(self, before: Entry, after: Entry, changes: Sequence[Change]) -> Entry:
        """Stamp an entry approved once (conditional on it being pending) and emit."""

        def work() -> Entry:
            previous = self.stored(LEDGER, before.id)
            written = self.compare_and_set(
                LEDGER,
                before.id,
                {"status": PENDING},
                {
                    "$set": {
                        "status": APPROVED,
                        "approved_by": after.approved_by,
                        "approved_at": after.approved_at,
                    }
                },
            )
            if written is None:
                raise EntryChanged(f"entry {before.id} was approved meanwhile")
            self.audit("ledger_entry", before.id, previous, written)
            self._emit_changes(before.id, changes, first=1)
            return after

        return self.run_in_transaction(work)

    def entries(
        self,
        *,
        communities: Sequence[str] | None,
        volunteer_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after: Entry | None = None,
        limit: int = 50_000,
    ) -> list[Entry]:
        """Entries in service-time order (ties by id), those after ``after`` if given."""
        query: dict[str, Any] = {}
        if communities is not None:
            query["community"] = {"$in": list(communities)}
        if volunteer_id is not None:
            query["volunteer_id"] = volunteer_id
        if start is not None or end is not None:
            query["served_at"] = {
                **({"$gte": start} if start else {}),
                **({"$lt": end} if end else {}),
            }
        if after is not None:
            # The range names only what the indexes hold; the tie on the time is
            # broken by id here (an ``$or`` would read the whole ledger).
            served = query.setdefault("served_at", {})
            served["$gte"] = max(served.get("$gte", after.served_at), after.served_at)
        cursor = self.db[LEDGER].find(query).sort([("served_at", ASCENDING), ("_id", ASCENDING)])
        found: list[Entry] = []
        for document in cursor:
            entry = to_entry(document)
            if after is not None and (entry.served_at, entry.id) <= (after.served_at, after.id):
                continue
            found.append(entry)
            if len(found) == limit:
                break
        cursor.close()
        return found


def _in_communities(communities: Sequence[str] | None, after: str | None) -> dict[str, Any]:
    """A listing's filter: the communities (None: all) and the ids after ``after``."""
    query: dict[str, Any] = {}
    if communities is not None:
        query["community"] = {"$in": list(communities)}
    if after is not None:
        query["_id"] = {"$gt": after}
    return query


def _to_household(document: Mapping[str, Any]) -> Household:
    return Household(
        id=document["_id"],
        community=document["community"],
        grid_cell=document["grid_cell"],
        care_lists=tuple(document["care_lists"]),
        active=document["active"],
    )


def _without_id(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "id"}


class VolunteerStore(Store):
    """The store provider, which also seeds an empty database once its indexes exist.

    nameko starts a container's extensions concurrently; seeding from another
    provider's ``start`` raced the index creation here (and hung the embedded
    store), so the seed runs after ``ensure_indexes``, in this provider.
    It hands each repository the keyring from configuration
    (``VOLUNTEER_KEYS``, ...), read in ``setup()``: without keys the service
    does not start rather than store names and phones in the clear.
    """

    def setup(self) -> None:
        super().setup()
        self.keyring = sealing.Keyring.from_settings(self.container.config, "volunteer")

    def get_dependency(self, worker_ctx: Any) -> Repository:
        repository = super().get_dependency(worker_ctx)
        repository.keyring = self.keyring  # type: ignore[attr-defined]
        return repository

    def start(self) -> None:
        super().start()
        seeders = [ext for ext in self.container.dependencies if hasattr(ext, "seed_into")]
        for seeder in seeders:
            self.at_start(
                lambda seeder=seeder: seeder.seed_into(self.get_dependency(None)),
                "seeding the roster",
            )
