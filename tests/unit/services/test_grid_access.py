"""The grid's read table: one incident's view, and the listing query built from the same rows."""

from __future__ import annotations

import itertools
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ.auth import ROLES, Identity
from shequ.pagination import InvalidCursor
from shequ_services.grid import domain
from shequ_services.grid.store import (
    after_clause,
    filter_clause,
    listing_query,
    parse_position,
    position_of,
)

ORDINARY = frozenset({"facility_damaged"})
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def incident(
    *,
    reporter: str = "r-1",
    community: str = "c-1",
    department: str | None = "municipal",
    category: str = "facility_damaged",
    at: datetime = T0,
    number: int = 0,
) -> domain.Incident:
    return domain.Incident(
        id=f"INC-{number:04d}",
        category=category,
        grid_cell="cell",
        community=community,
        description="d",
        location=None,
        reporter=reporter,
        channel="patrol",
        urgency="simple",
        status="dispatched",
        reported_at=at,
        department=department,
    )


def reader(*roles: str, **claims: Any) -> Identity:
    return Identity(sub=claims.pop("sub", "someone"), roles=frozenset(roles), **claims)


def view(item: domain.Incident, who: Identity) -> str:
    return domain.read_view(item, who, sensitive=item.category not in ORDINARY)


@pytest.mark.parametrize(
    ("who", "category", "expected"),
    [
        (reader("resident", sub="r-1"), "new_pregnancy", domain.FULL),
        (reader("resident"), "facility_damaged", domain.HIDDEN),
        (reader("grid_worker", communities=("c-1",)), "facility_damaged", domain.FULL),
        (reader("grid_worker", communities=("c-1",)), "new_pregnancy", domain.HIDDEN),
        (
            reader("grid_worker", communities=("c-1",), purpose="casework"),
            "new_pregnancy",
            domain.FULL,
        ),
        (reader("community_staff", communities=("c-2",)), "facility_damaged", domain.HIDDEN),
        (reader("department", department="municipal"), "facility_damaged", domain.FULL),
        (reader("department", department="municipal"), "new_pregnancy", domain.HIDDEN),
        (reader("department", department="health"), "facility_damaged", domain.HIDDEN),
        (reader("auditor"), "new_pregnancy", domain.REDACTED),
        (reader("auditor", purpose="casework"), "new_pregnancy", domain.REDACTED),
        (reader("admin"), "new_pregnancy", domain.REDACTED),
        (reader("admin", purpose="casework"), "new_pregnancy", domain.FULL),
        (reader("auditor", sub="r-1"), "new_pregnancy", domain.FULL),
        (reader("mediator", communities=("c-1",), department="municipal"), "facility_damaged",
         domain.HIDDEN),
    ],
)  # fmt: skip
def test_the_view_follows_the_read_table(who: Identity, category: str, expected: str) -> None:
    assert view(incident(category=category), who) == expected


def test_a_reach_without_its_claim_grants_nothing() -> None:
    own = domain.Grant("reporter", ("someone",), domain.FULL, domain.FULL)
    assert domain.read_grants(reader("department")) == [own]
    assert domain.read_grants(reader("community_staff")) == [own]


def test_can_read_is_the_view_not_being_hidden() -> None:
    item = incident(category="new_pregnancy")
    claims = {"sub": "x", "roles": frozenset({"community_staff"}), "communities": ("c-1",)}
    assert not domain.can_read(item, **claims, sensitive=True)
    assert domain.can_read(item, **claims, purpose="casework", sensitive=True)


# A tiny evaluator for the query operators the listing uses, so the test can check
# that the store's query selects exactly the incidents ``read_view`` shows.
def matches(query: dict[str, Any], document: dict[str, Any]) -> bool:
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(q, document) for q in condition):
                return False
        elif key == "$and":
            if not all(matches(q, document) for q in condition):
                return False
        elif isinstance(condition, dict):
            value = document.get(key)
            for op, operand in condition.items():
                ok = {
                    "$in": lambda v, o: v in o,
                    "$nin": lambda v, o: v not in o,
                    "$lt": lambda v, o: v is not None and v < o,
                    "$gte": lambda v, o: v is not None and v >= o,
                }[op](value, operand)
                if not ok:
                    return False
        elif document.get(key) != condition:
            return False
    return True


def document(item: domain.Incident) -> dict[str, Any]:
    record = asdict(item)
    record["_id"] = record.pop("id")
    return record


POPULATION = [
    incident(reporter=r, community=c, department=d, category=k, number=n)
    for n, (r, c, d, k) in enumerate(
        itertools.product(
            ("r-1", "r-2"),
            ("c-1", "c-2"),
            ("municipal", "health", None),
            ("facility_damaged", "new_pregnancy", "category_not_in_the_data"),
        )
    )
]
READERS = [
    reader(role, sub=sub, communities=communities, department=department, purpose=purpose)
    for role, sub, communities, department, purpose in itertools.product(
        sorted(ROLES), ("r-1", "x"), ((), ("c-1",), ("c-1", "c-2")), (None, "municipal"),
        (None, "casework"),
    )
] + [reader("grid_worker", "department", communities=("c-2",), department="health")]  # fmt: skip


@pytest.mark.parametrize("who", READERS, ids=repr)
def test_the_listing_query_selects_exactly_what_read_view_shows(who: Identity) -> None:
    query = listing_query(domain.read_grants(who), ORDINARY, {}, None)
    for item in POPULATION:
        visible = view(item, who) != domain.HIDDEN
        assert (query is not None and matches(query, document(item))) is visible, item


def test_a_filter_cannot_widen_what_the_reader_sees() -> None:
    staff = reader("community_staff", communities=("c-1",))
    query = listing_query(domain.read_grants(staff), ORDINARY, {"category": "new_pregnancy"}, None)
    assert query is not None
    assert not any(matches(query, document(item)) for item in POPULATION if item.reporter != "x")


def test_a_reader_who_may_see_nothing_gets_no_query() -> None:
    assert listing_query([], ORDINARY, {}, None) is None


def test_the_filters_become_one_condition_each() -> None:
    start, end = T0, T0 + timedelta(days=1)
    assert filter_clause(
        {"community": "c-1", "status": ["reported", "accepted"], "urgency": "simple",
         "reported_from": start, "reported_to": end}
    ) == {
        "community": "c-1", "urgency": "simple", "status": {"$in": ["reported", "accepted"]},
        "reported_at": {"$gte": start, "$lt": end},
    }  # fmt: skip


def test_no_filters_is_no_condition() -> None:
    assert filter_clause({}) == {}
    assert listing_query(domain.read_grants(reader("admin")), ORDINARY, {}, None) == {}


def test_a_page_starts_strictly_after_the_cursors_position_newest_first() -> None:
    items = [incident(at=T0 + timedelta(minutes=n // 2), number=n) for n in range(6)]
    ordered = sorted(items, key=lambda i: (i.reported_at, i.id), reverse=True)
    last = ordered[2]
    after = after_clause(parse_position(position_of(last)))
    assert [i for i in ordered if matches(after, document(i))] == ordered[3:]


@pytest.mark.parametrize(
    "position",
    [[], ["not a time", "INC-1"], ["2026-11-23T09:00:00", "INC-1"], ["2026-11-23T09:00:00Z", 7],
     "text", [1, 2, 3]],
)  # fmt: skip
def test_a_position_that_is_not_one_is_an_invalid_cursor(position: Any) -> None:
    with pytest.raises(InvalidCursor):
        parse_position(position)
