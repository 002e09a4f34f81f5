"""Notify's routing in memory: read once, read again on this process's changes and with age."""

from __future__ import annotations

from shequ_services.notify.domain import Rule, Template
from shequ_services.notify.routing import CachedRouting, RoutingTable

REPORTED = "shequ.grid.incident.reported"
CLOSED = "shequ.grid.incident.closed"


def rule(rule_id: str, event_type: str = REPORTED) -> Rule:
    return Rule(id=rule_id, event_type=event_type, audiences=("staff",), template="t1")


class Store:
    """Stands in for the repository's ``routing_table``: counts reads, can change under us."""

    def __init__(self) -> None:
        self.rules = [rule("r1")]
        self.reads = 0
        self.during_read = lambda: None

    def read(self) -> RoutingTable:
        self.reads += 1
        rules = list(self.rules)
        self.during_read()
        return RoutingTable.of(rules, [("s1", [REPORTED, CLOSED])], [Template("t1", {"en": "x"})])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_table_groups_rules_and_live_subscriptions_by_event_type() -> None:
    table = RoutingTable.of(
        [rule("r1"), rule("r2", CLOSED), rule("r3")],
        [("s1", [REPORTED]), ("s2", [REPORTED, CLOSED])],
        [Template("t1", {"en": "x"})],
    )
    assert [r.id for r in table.rules[REPORTED]] == ["r1", "r3"]
    assert [r.id for r in table.rules[CLOSED]] == ["r2"]
    assert table.subscriptions == {REPORTED: ("s1", "s2"), CLOSED: ("s2",)}
    assert table.templates["t1"].body == {"en": "x"}


def test_questions_within_the_age_are_answered_from_one_read() -> None:
    store, clock = Store(), Clock()
    routing = CachedRouting(store.read, max_age=5, clock=clock)
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1"]
    assert routing.subscribed_to(CLOSED) == ["s1"]
    assert routing.template("t1") is not None
    assert routing.rules_for("shequ.grid.incident.rated") == []
    assert routing.template("missing") is None
    clock.now += 4.9
    routing.rules_for(REPORTED)
    assert store.reads == 1


def test_a_change_in_another_process_counts_once_the_table_is_too_old() -> None:
    store, clock = Store(), Clock()
    routing = CachedRouting(store.read, max_age=5, clock=clock)
    routing.rules_for(REPORTED)
    store.rules.append(rule("r2"))
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1"]
    clock.now += 5
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1", "r2"]
    assert store.reads == 2


def test_a_change_in_this_process_counts_at_once() -> None:
    store, clock = Store(), Clock()
    routing = CachedRouting(store.read, max_age=3600, clock=clock)
    routing.rules_for(REPORTED)
    store.rules.append(rule("r2"))
    routing.changed()
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1", "r2"]


def test_a_read_that_a_change_overtook_is_used_once_and_not_kept() -> None:
    store, clock = Store(), Clock()
    routing = CachedRouting(store.read, max_age=3600, clock=clock)

    def change_meanwhile() -> None:
        # The change commits after this read saw the rules, before it returns.
        store.during_read = lambda: None
        store.rules.append(rule("r2"))
        routing.changed()

    store.during_read = change_meanwhile
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1"]
    assert [r.id for r in routing.rules_for(REPORTED)] == ["r1", "r2"]
    assert store.reads == 2


def test_an_age_of_zero_reads_the_store_every_time() -> None:
    store = Store()
    routing = CachedRouting(store.read, max_age=0, clock=Clock())
    routing.rules_for(REPORTED)
    routing.subscribed_to(REPORTED)
    assert store.reads == 2
