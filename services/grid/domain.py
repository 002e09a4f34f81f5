"""Grid domain rules: categories, the registry of cells, and reporting an incident.

Plain Python: no nameko, pymongo or marshmallow here, so the rules are tested
without servers. Categories and cells are data (``categories.yaml``,
``registry.yaml``); a district adds its own without code changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from shequ.policy import Policy
from shequ_services.grid import deadlines
from shequ_services.grid.access import TABLE
from shequ_services.grid.deadlines import Clock

URGENCY_TIERS = ("urgent", "simple", "ordinary", "complex")
#: The channels a native report may name; ``open311`` is set by the Open311 route only.
NATIVE_CHANNELS = ("patrol", "resident_app", "hotline", "video_patrol", "assigned_from_above")
CHANNELS = (*NATIVE_CHANNELS, "open311")


class GridError(Exception):
    """Base of grid rule violations."""


class UnknownCategory(GridError):
    pass


class UnknownGridCell(GridError):
    pass


class CategoryRetired(GridError):
    pass


@dataclass(frozen=True)
class Category:
    code: str
    name_zh: str
    name_en: str
    urgency: str
    department: str
    opens_mediation: bool = False
    volunteer_task: bool = False
    sensitive: bool = False
    active: bool = True


@dataclass(frozen=True)
class GridCell:
    """A grid cell; the map fields are optional so a cell can be registered before it is drawn.

    ``centroid`` is ``(lat, lon)``; ``polygon`` its outline as ``(lat, lon)``
    points; ``adjacent`` the ids of the cells that share a border with it
    (kept symmetric by ``registry``), which is what "near" means for the
    duplicate hint.
    """

    id: str
    name: str
    community: str
    centroid: tuple[float, float] | None = None
    polygon: tuple[tuple[float, float], ...] = ()
    adjacent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rating:
    """The reporter's judgement (评) of one closure; ``closure`` counts closures from 1."""

    score: int
    at: datetime
    closure: int
    comment: str | None = None


@dataclass
class Incident:
    """An incident as the grid keeps it; ``reporter`` and ``description`` never leave."""

    id: str
    category: str
    grid_cell: str
    community: str
    description: str
    location: dict[str, float] | None
    reporter: str
    channel: str
    urgency: str
    status: str
    reported_at: datetime
    version: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    department: str | None = None
    clocks: dict[str, Clock] = field(default_factory=dict)
    next_due: datetime | None = None
    #: The SLA board's sort key while the incident is open (``open_deadline``).
    next_deadline: datetime | None = None
    event_seq: int = 1
    # Co-handling (吹哨报到) and extensions (延期); see ``workflow.consequences``.
    subtasks: list[dict[str, Any]] = field(default_factory=list)
    extension: dict[str, Any] | None = None
    ratings: list[Rating] = field(default_factory=list)
    possible_duplicates: list[str] = field(default_factory=list)
    merged_into: str | None = None
    # Open311 intake: the reporter's personal fields as sent (never in a view or
    # event) and the request's own details (client, lookup token, attributes).
    private: dict[str, str] = field(default_factory=dict)
    open311: dict[str, Any] | None = None
    # The outcome of the people's mediation case the incident opened, when it closed.
    mediation: dict[str, Any] | None = None

    def co_handlers(self) -> tuple[str, ...]:
        """Every department with a sub-task on the case, open or handled."""
        return tuple(task["department"] for task in self.subtasks)

    def open_subtasks(self) -> tuple[str, ...]:
        return tuple(task["department"] for task in self.subtasks if task["status"] == "open")


def parse_categories(raw: list[dict[str, Any]]) -> dict[str, Category]:
    """Build the category table from data, refusing duplicates and unknown tiers."""
    categories: dict[str, Category] = {}
    for item in raw:
        category = Category(**item)
        if category.code in categories:
            raise ValueError(f"category {category.code} is defined twice")
        if category.urgency not in URGENCY_TIERS:
            raise ValueError(f"category {category.code}: unknown urgency {category.urgency}")
        categories[category.code] = category
    return categories


def parse_cells(raw: dict[str, Any]) -> dict[str, GridCell]:
    """Flatten ``communities: [{id, name, cells: [{id, name}]}]`` into cells by id.

    Ids and names only, for quick fixtures; the service loads the full
    registry (map fields, buildings, departments) with ``registry.build``.
    """
    cells: dict[str, GridCell] = {}
    for community in raw.get("communities", []):
        for cell in community.get("cells", []):
            if cell["id"] in cells:
                raise ValueError(f"grid cell {cell['id']} is defined twice")
            cells[cell["id"]] = GridCell(cell["id"], cell["name"], community["id"])
    return cells


def report_incident(
    *,
    categories: dict[str, Category],
    cells: dict[str, GridCell],
    category: str,
    grid_cell: str,
    description: str,
    location: dict[str, float] | None,
    reporter: str,
    channel: str,
    now: datetime,
    policy: deadlines.Policy,
) -> Incident:
    """Open a new incident in state ``reported``, or say which rule the report breaks."""
    found = categories.get(category)
    if found is None:
        raise UnknownCategory(f"unknown category {category!r}")
    if not found.active:
        raise CategoryRetired(f"category {category!r} is retired and takes no new reports")
    cell = cells.get(grid_cell)
    if cell is None:
        raise UnknownGridCell(f"unknown grid cell {grid_cell!r}")
    incident = Incident(
        id=new_incident_id(now),
        category=found.code,
        grid_cell=cell.id,
        community=cell.community,
        description=description,
        location=location,
        reporter=reporter,
        channel=channel,
        urgency=found.urgency,
        status="reported",
        reported_at=now,
    )
    incident.history.append({"at": now, "actor": reporter, "action": "reported", "to": "reported"})
    incident.clocks, _ = deadlines.on_state(
        {}, policy, urgency=incident.urgency, to_state="reported", at=now
    )
    incident.next_due = deadlines.next_due(incident.clocks)
    incident.next_deadline = open_deadline(incident.status, incident.clocks)
    return incident


def new_incident_id(now: datetime) -> str:
    """``INC-YYYYMMDD-<12 hex>``: readable on a phone call, unique without a counter."""
    return f"INC-{now:%Y%m%d}-{uuid.uuid4().hex[:12]}"


# Object-level read access: one table, used by ``read_view`` (one incident) and by
# the store's listing query (``read_grants``), so the two cannot disagree.

FULL = "full"
REDACTED = "redacted"
HIDDEN = "hidden"
VIEWS = (HIDDEN, REDACTED, FULL)
#: What a redacted view leaves out: the personal content of a sensitive report.
#: Ratings (the reporter's comment), co-handlers' sub-tasks (their feedback) and an
#: extension (its reason) are free text about the case, so they go too.
REDACTED_FIELDS = ("description", "location", "ratings", "subtasks", "extension")
#: The declared purpose (token claim ``purpose``) that unlocks sensitive incidents.
SENSITIVE_PURPOSE = "casework"

#: How a rule reaches incidents: (stored field, reader attribute holding the
#: value(s) it must equal), or ``None`` for every incident. The stored field is
#: what the listing query filters on; ``reached_values`` reads the same from an
#: ``Incident``.
REACHES: dict[str, tuple[str, str] | None] = {
    "own": ("reporter", "sub"),
    "community": ("community", "communities"),
    "department": ("department", "department"),
    "co_handling": ("subtasks.department", "department"),
    "all": None,
}


class Reader(Protocol):
    """Who is reading; ``shequ.auth.Identity`` has this shape."""

    @property
    def sub(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def communities(self) -> tuple[str, ...]: ...
    @property
    def department(self) -> str | None: ...
    @property
    def purpose(self) -> str | None: ...


@dataclass(frozen=True)
class ReadRule:
    """One row of the read table: for callers with one of ``roles`` (``None``: anyone),
    the incidents ``reach`` covers, seen as ``ordinary`` when the category is not
    sensitive, as ``sensitive`` when it is, or as ``with_purpose`` when it is and
    the token declares ``SENSITIVE_PURPOSE``."""

    roles: frozenset[str] | None
    reach: str
    ordinary: str
    sensitive: str
    with_purpose: str


#: How a table scope reaches incidents (``REACHES`` keys): a department
#: reaches the incidents it leads and those it co-handles.
SCOPE_REACHES: dict[str, tuple[str, ...]] = {
    "own": ("own",),
    "community": ("community",),
    "department": ("department", "co_handling"),
    "district": ("all",),
}
#: The actions of the grid's access table that make up the read table.
READ_ACTION = "grid.incident.read"
SENSITIVE_ACTION = "grid.incident.read_sensitive"
REDACTED_ACTION = "grid.incident.read_redacted"


def read_rules_from(table: Policy) -> tuple[ReadRule, ...]:
    """The read table, derived from the grid's access table (``access.yaml``).

    For each role and each scope its ``grid.incident.read`` rule reaches,
    ordinary incidents are seen in full; sensitive ones in full if
    ``grid.incident.read_sensitive`` grants the same scope (without a
    purpose, or with ``SENSITIVE_PURPOSE`` for ``with_purpose``), redacted if
    ``grid.incident.read_redacted`` does, else hidden. Roles with the same
    reach and views share one rule.
    """

    def grants(action: str, role: str, scope: str, purposes: tuple[str | None, ...]) -> bool:
        return any(
            rule.role == role and rule.purpose in purposes and rule.scope in (scope, "district")
            for rule in table.action(action).rules
        )

    def view(role: str, scope: str, purposes: tuple[str | None, ...]) -> str:
        if grants(SENSITIVE_ACTION, role, scope, purposes):
            return FULL
        if grants(REDACTED_ACTION, role, scope, purposes):
            return REDACTED
        return HIDDEN

    # The route gate checks a machine client's scope for READ_ACTION only; the
    # views below are derived by role, so the other read actions must not ask
    # for a different scope, or holding the read scope would unlock them too.
    scope = table.action(READ_ACTION).client_scopes
    for other in (SENSITIVE_ACTION, REDACTED_ACTION):
        if table.action(other).client_scopes not in ((), scope):
            raise ValueError(f"{other}: client_scope must be {READ_ACTION}'s, {scope}")
    grouped: dict[tuple[str, str, str], set[str]] = {}
    for rule in table.action(READ_ACTION).rules:
        if rule.purpose is not None or rule.scope not in SCOPE_REACHES:
            raise ValueError(
                f"{READ_ACTION}: {rule.role}: the grid reads by own, community, department "
                "or district, without a purpose"
            )
        sensitive = view(rule.role, rule.scope, (None,))
        with_purpose = view(rule.role, rule.scope, (None, SENSITIVE_PURPOSE))
        for reach in SCOPE_REACHES[rule.scope]:
            grouped.setdefault((reach, sensitive, with_purpose), set()).add(rule.role)
    return tuple(
        ReadRule(frozenset(roles), reach, FULL, sensitive, with_purpose)
        for (reach, sensitive, with_purpose), roles in grouped.items()
    )


READ_RULES: tuple[ReadRule, ...] = read_rules_from(TABLE)


@dataclass(frozen=True)
class Grant:
    """What one rule gives one reader: incidents whose ``field`` is one of ``values``
    (every incident when ``field`` is ``None``), with the view of each kind."""

    field: str | None
    values: tuple[str, ...]
    ordinary: str
    sensitive: str


@dataclass(frozen=True)
class ReaderClaims:
    """A ``Reader`` from plain values, for callers without an ``Identity``."""

    sub: str
    roles: frozenset[str]
    communities: tuple[str, ...] = ()
    department: str | None = None
    purpose: str | None = None


def read_grants(reader: Reader) -> list[Grant]:
    """The rows of ``READ_RULES`` that apply to ``reader``, bound to its claims.

    A rule whose reach needs a claim the reader lacks (no communities, no
    department) grants nothing rather than everything.
    """
    grants = []
    for rule in READ_RULES:
        if rule.roles is not None and not reader.roles & rule.roles:
            continue
        sensitive = rule.with_purpose if reader.purpose == SENSITIVE_PURPOSE else rule.sensitive
        reach = REACHES[rule.reach]
        if reach is None:
            grants.append(Grant(None, (), rule.ordinary, sensitive))
            continue
        field_name, claim = reach
        value = getattr(reader, claim)
        values = tuple(v for v in (value if isinstance(value, tuple) else (value,)) if v)
        if values:
            grants.append(Grant(field_name, values, rule.ordinary, sensitive))
    return grants


def reached_values(incident: Incident, stored_field: str) -> tuple[str | None, ...]:
    """The values of ``stored_field`` (a ``REACHES`` field) on ``incident``.

    A co-handling department is one of several sub-tasks, so that field has
    many values where the others have one; a query's ``$in`` matches either.
    """
    if stored_field == "subtasks.department":
        return incident.co_handlers()
    return (getattr(incident, stored_field),)


def read_view(incident: Incident, reader: Reader, *, sensitive: bool) -> str:
    """How ``reader`` sees ``incident``: ``FULL``, ``REDACTED`` or ``HIDDEN``.

    The most generous applicable rule wins: an auditor who reported a
    sensitive incident sees their own report in full.
    """
    best = HIDDEN
    for grant in read_grants(reader):
        if grant.field is None or set(reached_values(incident, grant.field)) & set(grant.values):
            view = grant.sensitive if sensitive else grant.ordinary
            best = max(best, view, key=VIEWS.index)
    return best


def can_read(
    incident: Incident,
    *,
    sub: str,
    roles: frozenset[str],
    communities: tuple[str, ...],
    department: str | None = None,
    purpose: str | None = None,
    sensitive: bool,
) -> bool:
    """Whether the caller may see the incident at all (``read_view`` is not ``HIDDEN``).

    ``sensitive`` is the category's flag; it has no default so that a caller
    cannot forget it and show a sensitive incident as an ordinary one.
    """
    reader = ReaderClaims(sub, frozenset(roles), tuple(communities), department, purpose)
    return read_view(incident, reader, sensitive=sensitive) != HIDDEN


CLOSED_STATES = ("closed_resolved", "closed_unresolved")


def closed_at(incident: Incident) -> datetime | None:
    """When the incident was last closed, for the reporter's reopen window."""
    for entry in reversed(incident.history):
        if entry.get("to") in CLOSED_STATES:
            at: datetime = entry["at"]
            return at
    return None


# -- duplicate hint --------------------------------------------------------------------
#
# A grid worker and three residents may report the same broken lamp. A new
# report is linked to open incidents of the same category in the same or an
# adjacent cell reported within the window before it, so staff can merge
# them; nothing is merged automatically (two lamps may really be broken).

NOT_OPEN_STATES = (*CLOSED_STATES, "rejected", "merged")


def open_deadline(status: str, clocks: Mapping[str, deadlines.Clock]) -> datetime | None:
    """What the store keeps as ``next_deadline``: the earliest running clock's deadline
    while the incident is open, ``None`` once it is closed, rejected or merged.

    ``None`` for every incident no longer open, whatever a policy left running,
    lets the SLA board's main query be one range of the ``next_deadline``
    index with no condition on the state.
    """
    if status in NOT_OPEN_STATES:
        return None
    return deadlines.next_deadline(clocks)


#: The newest span of the duplicate window, read first (``DuplicateScope.first_span``).
FIRST_SPAN = timedelta(minutes=1)


@dataclass(frozen=True)
class DuplicateScope:
    """Which open incidents could be the same matter as a new report: the store's query."""

    category: str
    cells: tuple[str, ...]
    since: datetime
    until: datetime
    exclude: str

    def first_span(self, width: timedelta = FIRST_SPAN) -> tuple[datetime, datetime]:
        """The newest ``[start, end)`` span of the window, read first.

        The window is read a span at a time, newest first, until enough open
        incidents are found: a read then touches about as many incidents as
        it needs, even when a burst of reports fills the window. The embedded
        store reads every match before it sorts and limits, so one sorted,
        limited query over the whole window would read the whole burst for
        every report (docs/performance.md). The span ends a millisecond after
        ``until``, the precision of a stored date, so that an incident
        reported at that instant is in it.
        """
        end = self.until + timedelta(milliseconds=1)
        return max(self.since, end - width), end

    def next_span(
        self, start: datetime, read: int, wanted: int, held: int
    ) -> tuple[datetime, datetime] | None:
        """The span before ``start``; ``None`` once the window is read.

        ``read`` incidents were read in all, ``held`` of them by the span
        just read, and ``wanted`` are still missing. The next span is sized
        to hold about twice ``wanted`` at the rate the spans so far held
        incidents, and is at least as long again as those. When the span
        just read held none, it is the rest of the window: the incidents thin
        out going back, so the rate of the newer ones overstates the older
        ones and spans sized by it would grow a few times over for nothing.
        A burst that began a minute ago, the first thing a storm brings, read
        a scope's three or four cells in six to eight spans that way (18 to
        32 reads a report).

        So a quiet scope costs two reads, a busy one a few spans growing
        geometrically, each about as full as what is still missing, and a
        burst on a quiet scope three. Reading the rest at once costs at worst
        what the geometric spans would: a span that reached the same older
        incidents would be as long as the rest of the window or nearly.
        """
        if start <= self.since:
            return None
        if read == 0 or held == 0:
            return self.since, start
        covered = self.until + timedelta(milliseconds=1) - start
        width = covered * max(1.0, 2 * wanted / read)
        return max(self.since, start - width), start


def near_cells(cells: Mapping[str, GridCell], cell: str) -> tuple[str, ...]:
    """The cell and its neighbours: where a report counts as near another one."""
    found = cells.get(cell)
    return (cell, *found.adjacent) if found is not None else (cell,)


def duplicate_scope(
    incident: Incident, cells: Mapping[str, GridCell], window: timedelta
) -> DuplicateScope:
    return DuplicateScope(
        category=incident.category,
        cells=near_cells(cells, incident.grid_cell),
        since=incident.reported_at - window,
        until=incident.reported_at,
        exclude=incident.id,
    )


def is_possible_duplicate(scope: DuplicateScope, other: Incident) -> bool:
    return (
        other.id != scope.exclude
        and other.category == scope.category
        and other.grid_cell in scope.cells
        and other.status not in NOT_OPEN_STATES
        and scope.since <= other.reported_at <= scope.until
    )


def link_duplicates(
    incident: Incident, scope: DuplicateScope, candidates: Iterable[Incident]
) -> Incident:
    """The new incident with the ids of the candidates that fit the rule, oldest first."""
    found = sorted(
        (c for c in candidates if is_possible_duplicate(scope, c)), key=lambda c: c.reported_at
    )
    return replace(incident, possible_duplicates=[c.id for c in found])


class InvalidMergeTarget(GridError):
    """The incident named to merge into cannot take the duplicate."""


def check_merge(duplicate: Incident, original: Incident) -> None:
    """A duplicate merges into another open incident of its category and community.

    The original must still be open so the reporter of the duplicate has a case
    to follow; the same category and community keep a merge from hiding a
    different problem or moving a case out of the community that answers for it.
    """
    if original.id == duplicate.id:
        raise InvalidMergeTarget("an incident cannot be merged into itself")
    if original.status in NOT_OPEN_STATES:
        raise InvalidMergeTarget(f"{original.id} is {original.status}, not open")
    if original.category != duplicate.category:
        raise InvalidMergeTarget(
            f"{original.id} is a {original.category}, not a {duplicate.category}"
        )
    if original.community != duplicate.community:
        raise InvalidMergeTarget(f"{original.id} belongs to another community")


#: How a closed mediation case reads as the lead department's feedback (反馈).
MEDIATION_OUTCOMES_ZH = {
    "agreed": "调解成功，双方达成人民调解协议",
    "failed": "调解不成",
    "referred": "调解不成，已引导当事人诉讼（诉非对接）",
    "withdrawn": "当事人撤回调解申请",
}


def mediation_feedback(case_id: str, outcome: str) -> str:
    """The feedback text of a ``report_handled`` step taken for a closed mediation case."""
    return f"人民调解案件 {case_id} 已结案：{MEDIATION_OUTCOMES_ZH.get(outcome, outcome)}"


def mediation_closes_step(incident: Incident) -> bool:
    """Whether a closed mediation case can take the incident's ``report_handled`` step.

    Only from ``in_progress`` with no open co-handling sub-task: that is the
    one state where the lead department reports back. In any other state
    (not yet dispatched or started, deferred, already handled or closed) the
    outcome is recorded on the incident for the staff to act on, and the
    lifecycle is left to people: a machine must not skip a step the workflow
    gives to someone else.
    """
    return incident.status == "in_progress" and not incident.open_subtasks()
