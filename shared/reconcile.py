"""Reconciliation: did every report reach every consumer exactly once?

The grid's outbox holds every ``incident.reported`` event it committed, with
its id and the category flags that say which consumers owe an effect. Each
consumer keeps a processed mark per handler and event (committed with the
effect), and each declares in ``report_effects`` where the effect of a
report lives in its own database. Reconciling compares the three:

* **unpublished**: committed in the grid, not yet confirmed by the broker
  (not in the relay's publication log);
* **missing**: a consumer has no processed mark for a published report, or
  no effect where its rule expects one (lost, or still in flight);
* **duplicated**: more than one effect for one report where one is expected,
  or an effect where none is;

read-only, from the databases (an operator's command, like ``shequ dlq``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from shequ.outbox import published_ids
from shequ.store import OUTBOX, PROCESSED, database_name
from shequ.topology import subscriptions

REPORTED_TYPE = "shequ.grid.incident.reported"
REPORTED_EVENT = "incident.reported"


@dataclass(frozen=True)
class Effect:
    """Where a consumer's effect of one report is, and when one is owed.

    ``expected`` is ``always``, ``public`` (the category is not sensitive) or
    the name of a category flag of the report (``opens_mediation``,
    ``volunteer_task``). ``incident_field`` holds the incident id (a list
    field counts when it contains it); ``match`` narrows the documents.
    """

    collection: str
    incident_field: str
    expected: str = "always"
    match: Mapping[str, Any] = field(default_factory=dict)
    #: Several documents per report are legitimate (one notification per
    #: recipient): then only their absence is a gap, and duplicates are
    #: judged on ``unique_by`` instead.
    many: bool = False
    unique_by: tuple[str, ...] = ()

    def owed(self, category: Mapping[str, Any]) -> bool:
        if self.expected == "always":
            return True
        if self.expected == "public":
            return not category.get("sensitive", False)
        return bool(category.get(self.expected, False))


@dataclass
class Report:
    reports: int = 0
    unpublished: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    effects: Counter[str] = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        return not self.unpublished and not self.missing and not self.duplicated

    def as_dict(self) -> dict[str, Any]:
        return {
            "reports": self.reports,
            "unpublished": self.unpublished,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "effects": dict(self.effects),
            "clean": self.clean,
        }


def reconcile(
    client: Any, prefix: str | None, consumers: Iterable[type], *, limit: int | None = None
) -> Report:
    """Compare the grid's reports with every consumer's marks and effects."""
    grid = client[database_name("grid", prefix)]
    report = Report()
    reports = _reports(grid, limit)
    report.reports = len(reports)
    logged = published_ids(grid)
    published = {event_id: r for event_id, r in reports.items() if event_id in logged}
    report.unpublished = len(reports) - len(published)
    by_incident = {r["incident_id"]: r for r in published.values()}
    for service_cls in consumers:
        handlers = [
            sub.method
            for sub in subscriptions(service_cls)
            if sub.source_service == "grid" and sub.event_name == REPORTED_EVENT
        ]
        if not handlers:
            continue
        db = client[database_name(service_cls.name, prefix)]
        _check_marks(db, service_cls.name, handlers, published, report)
        for effect in getattr(service_cls, "report_effects", ()):
            _check_effect(db, service_cls.name, effect, by_incident, report)
    return report


def _reports(grid: Database[Any], limit: int | None) -> dict[str, dict[str, Any]]:
    cursor = (
        grid[OUTBOX]
        .find({"type": REPORTED_TYPE}, {"body.subject": 1, "body.data.category": 1})
        .sort("created_at", 1)
    )
    if limit:
        cursor = cursor.limit(limit)
    return {
        doc["_id"]: {
            "incident_id": doc["body"]["subject"],
            "category": doc["body"]["data"]["category"],
        }
        for doc in cursor
    }


def _check_marks(
    db: Database[Any],
    service: str,
    handlers: list[str],
    published: Mapping[str, Mapping[str, Any]],
    report: Report,
) -> None:
    marks = {
        (doc["handler"], doc["event_id"])
        for doc in db[PROCESSED].find({"type": REPORTED_TYPE}, {"handler": 1, "event_id": 1})
    }
    for event_id, reported in published.items():
        for handler in handlers:
            if (handler, event_id) not in marks:
                report.missing.append(
                    f"{service}.{handler}: no processed mark for {reported['incident_id']}"
                )


def _check_effect(
    db: Database[Any],
    service: str,
    effect: Effect,
    by_incident: Mapping[str, Mapping[str, Any]],
    report: Report,
) -> None:
    # Every effect of the kind is grouped and the reports are picked out here,
    # by a dictionary lookup: a ``$in`` of every report id is checked element
    # by element by the embedded store, which at a few thousand reports made
    # one reconciliation take seconds of the store's time (the soak run's
    # profile), and the soak reconciles in a loop.
    field_name = effect.incident_field
    pipeline: list[dict[str, Any]] = [{"$match": {**effect.match, field_name: {"$exists": True}}}]
    if _is_list_field(db, effect):
        pipeline.append({"$unwind": f"${field_name}"})
    key: dict[str, Any] = {"incident": f"${field_name}"}
    for name in effect.unique_by:
        key[name] = f"${name}"
    pipeline.append({"$group": {"_id": key, "count": {"$sum": 1}}})
    per_incident: Counter[str] = Counter()
    for group in db[effect.collection].aggregate(pipeline):
        incident = group["_id"]["incident"]
        if incident not in by_incident:
            continue  # not one of the reports compared (``limit``), or not a report's
        per_incident[incident] += group["count"]
        if (effect.unique_by or not effect.many) and group["count"] > 1:
            report.duplicated.append(
                f"{service}.{effect.collection}: {group['count']} for {incident}"
                + (f" {group['_id']}" if effect.unique_by else "")
            )
    for incident, reported in by_incident.items():
        count = per_incident.get(incident, 0)
        owed = effect.owed(reported["category"])
        report.effects[f"{service}.{effect.collection}"] += count
        if owed and count == 0:
            report.missing.append(f"{service}.{effect.collection}: none for {incident}")
        elif not owed and count:
            report.duplicated.append(
                f"{service}.{effect.collection}: {count} for {incident}, which owes none"
            )


def _is_list_field(db: Database[Any], effect: Effect) -> bool:
    sample = db[effect.collection].find_one(
        {**effect.match, effect.incident_field: {"$exists": True}}, {effect.incident_field: 1}
    )
    return sample is not None and isinstance(sample.get(effect.incident_field), list)
