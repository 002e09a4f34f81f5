"""Where an event goes: notify's rules, bureau subscriptions and templates, kept in memory.

Every event notify handles needs the rules for its type and the
subscriptions to it, and every notification sent needs its template.
Reading them from the store each time cost two of the handler's five or so
statements (the profile of the 10,000-report soak, docs/reliability.md), on
a store that everything else waits for. They change rarely, by an admin or a
bureau, so each process keeps one copy and reads it again:

- at once when this process changes one of them (``changed``);
- otherwise once it is ``max_age`` seconds old: that is how long a change
  made through *another* replica can take to count here
  (``NOTIFY_ROUTING_MAX_AGE_SECONDS``, docs/notify.md).

``Routing`` is what the handler and the delivery worker ask;
``CachedRouting`` answers it from memory, the repository straight from the
store (what the tests of planning and sending use).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shequ_services.notify.domain import Rule, Template


class Routing(Protocol):
    """What the handler and the delivery worker ask (the repository answers it uncached)."""

    def rules_for(self, event_type: str) -> list[Rule]: ...

    def subscribed_to(self, event_type: str) -> list[str]: ...

    def template(self, template_id: str) -> Template | None: ...


@dataclass(frozen=True)
class RoutingTable:
    """One read of the rules, live subscriptions and templates, keyed as they are looked up."""

    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    subscriptions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    templates: Mapping[str, Template] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        rules: Iterable[Rule],
        subscriptions: Iterable[tuple[str, Iterable[str]]],
        templates: Iterable[Template],
    ) -> RoutingTable:
        """``subscriptions`` are (id, event types) pairs of the subscriptions not deleted."""
        by_type: dict[str, list[Rule]] = {}
        for rule in rules:
            by_type.setdefault(rule.event_type, []).append(rule)
        subscribed: dict[str, list[str]] = {}
        for subscription_id, event_types in subscriptions:
            for event_type in event_types:
                subscribed.setdefault(event_type, []).append(subscription_id)
        return cls(
            rules={t: tuple(found) for t, found in by_type.items()},
            subscriptions={t: tuple(found) for t, found in subscribed.items()},
            templates={template.id: template for template in templates},
        )


class CachedRouting:
    """The routing table, read through ``load`` when this process changed it or it is too old.

    Eventlet's green threads share one instance, and one of them reads while
    the others wait for what it reads, so a table going stale under load
    costs one read, not one per worker. A change made while a read is under
    way bumps the generation, so that read is used once but not kept: it may
    predate the change.
    """

    def __init__(
        self,
        load: Callable[[], RoutingTable],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        self.max_age = max_age
        self.clock = clock
        self.generation = 0
        self._kept: tuple[RoutingTable, float, int] | None = None
        self._reading = threading.Lock()

    def rules_for(self, event_type: str) -> list[Rule]:
        return list(self.table().rules.get(event_type, ()))

    def subscribed_to(self, event_type: str) -> list[str]:
        return list(self.table().subscriptions.get(event_type, ()))

    def template(self, template_id: str) -> Template | None:
        return self.table().templates.get(template_id)

    def changed(self) -> None:
        """This process changed a rule, template or subscription: the next question reads again."""
        self.generation += 1

    def table(self) -> RoutingTable:
        kept = self._still_good()
        if kept is not None:
            return kept
        with self._reading:
            kept = self._still_good()
            if kept is not None:
                return kept
            started, generation = self.clock(), self.generation
            table = self.load()
            if self.generation == generation:
                self._kept = (table, started, generation)
            return table

    def _still_good(self) -> RoutingTable | None:
        if self._kept is None:
            return None
        table, read_at, generation = self._kept
        if generation != self.generation or self.clock() - read_at >= self.max_age:
            return None
        return table
