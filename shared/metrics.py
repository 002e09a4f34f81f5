"""Prometheus metrics: the names are a contract that dashboards and alerts rely on.

The contract is declared once, here, as ``CONTRACT``: every metric's name,
type, labels, buckets and the services that produce it. The metric objects
below are built from it, the end-to-end test scrapes every running service
and checks its ``/metrics`` against it, and the dashboard and rule tests check
that every metric a panel or rule names is in it (docs/observability.md lists
it for readers).

Metrics are created once, at import, on the default registry. Creating them in
a provider's ``setup()`` would register them again on every container start
and break repeated test starts. Labels stay low-cardinality: service, handler,
event type, route template, status, stage, clock, category, state, community;
never an id or a person. ``community`` is bounded by the grid registry (tens
per district), so a series per community is accepted where the dashboard
needs it.

Gauges of open work (incidents open, in each state, overdue) and the rates'
counts are computed from the store when ``/metrics`` is scraped, not counted
in memory, so they are right after a restart and every replica reports the
same value (queries take ``max`` across replicas, never ``sum``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# A ``*_created`` gauge beside every counter and histogram doubles the series
# for a timestamp no query here uses.
disable_created_metrics()

# One second to thirty days, with finer steps below a second for handlers.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0,
    6 * 86400.0, 9 * 86400.0, 15 * 86400.0, 30 * 86400.0,
)  # fmt: skip

#: Every service the platform runs (``shequ.services`` entry points).
ALL_SERVICES = ("grid", "notify", "disclosure", "mediation", "volunteer")


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the contract.

    ``services`` are the services whose ``/metrics`` carry samples of it (every
    process declares every metric, so the others show its HELP and TYPE only).
    """

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...] = ()
    services: tuple[str, ...] = ALL_SERVICES
    buckets: tuple[float, ...] | None = None


_TYPES = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}

#: The contract: name → spec. Add a metric here, never elsewhere.
CONTRACT: dict[str, MetricSpec] = {}


def _declare(spec: MetricSpec) -> Any:
    if spec.name in CONTRACT:
        raise ValueError(f"metric {spec.name} declared twice")
    if (spec.kind == "histogram") != (spec.buckets is not None):
        raise ValueError(f"{spec.name}: histograms, and only they, have buckets")
    if spec.kind == "counter" and not spec.name.endswith("_total"):
        raise ValueError(f"{spec.name}: a counter's name ends in _total")
    CONTRACT[spec.name] = spec
    extra = {"buckets": spec.buckets} if spec.buckets is not None else {}
    return _TYPES[spec.kind](spec.name, spec.help, list(spec.labels), **extra)


def _histogram(
    name: str, help: str, labels: Sequence[str], services: tuple[str, ...] = ALL_SERVICES
) -> Any:
    return _declare(MetricSpec(name, "histogram", help, tuple(labels), services, DURATION_BUCKETS))


def _counter(
    name: str, help: str, labels: Sequence[str] = (), services: tuple[str, ...] = ALL_SERVICES
) -> Any:
    return _declare(MetricSpec(name, "counter", help, tuple(labels), services))


def _gauge(
    name: str, help: str, labels: Sequence[str] = (), services: tuple[str, ...] = ALL_SERVICES
) -> Any:
    return _declare(MetricSpec(name, "gauge", help, tuple(labels), services))


# -- every service (shequ.events, shequ.outbox, shequ.http) -------------------------------

EVENT_HANDLE_SECONDS = _histogram(
    "shequ_event_handle_seconds",
    "Time a service spent handling one event delivery.",
    ["service", "handler", "event_type", "outcome"],
)
EVENT_LAG_SECONDS = _histogram(
    "shequ_event_lag_seconds",
    "Time from an event's CloudEvents time to the end of its handling.",
    ["service", "handler", "event_type"],
)
EVENT_RETRIES = _counter(
    "shequ_event_retries_total",
    "Failed deliveries scheduled for another attempt after a back-off.",
    ["service", "handler", "event_type"],
)
DEAD_LETTERS = _counter(
    "shequ_dead_letters_total",
    "Deliveries moved to the service's dead-letter queue.",
    ["service", "handler", "event_type", "reason"],
)
EVENTS_PUBLISHED = _counter(
    "shequ_events_published_total",
    "Outbox entries published to the broker with a publisher confirm.",
    ["service", "event_type"],
)
OUTBOX_PENDING = _gauge(
    "shequ_outbox_pending",
    "Outbox entries written after the last one the broker confirmed (the relay's position).",
    ["service"],
)
OUTBOX_OLDEST_PENDING_SECONDS = _gauge(
    "shequ_outbox_oldest_pending_seconds",
    "Age of the oldest outbox entry written after the relay's position (0 when none): "
    "how far the service's published events lag behind its writes.",
    ["service"],
)
HTTP_REQUEST_SECONDS = _histogram(
    "shequ_http_request_seconds",
    "HTTP request handling time by route template and status.",
    ["service", "method", "route", "status"],
)

# -- grid: incidents, clocks and the three rates -----------------------------------------

GRID = ("grid",)
INCIDENT_STAGE_SECONDS = _histogram(
    "shequ_incident_stage_seconds",
    "Time an incident's clock ran from its start to its stop (stage = the clock).",
    ["stage", "category"],
    GRID,
)
SLA_BREACHES = _counter(
    "shequ_sla_breaches_total",
    "Time limits that ran out before the work was done (once per clock run).",
    ["clock", "category"],
    GRID,
)
SLA_MET = _counter(
    "shequ_sla_met_total",
    "Clocks stopped within their time limit; with the breaches, the SLA burn rate's base.",
    ["clock", "category"],
    GRID,
)
INCIDENTS_OPEN = _gauge(
    "shequ_incidents_open",
    "Incidents reported and not yet closed, rejected or merged (from the store).",
    ["category"],
    GRID,
)
INCIDENTS_IN_STATE = _gauge(
    "shequ_incidents_in_state",
    "Open incidents by community and workflow state (from the store).",
    ["community", "state"],
    GRID,
)
INCIDENTS_OVERDUE = _gauge(
    "shequ_incidents_overdue",
    "Open incidents with a running clock past its deadline, by community and clock "
    "(from the store).",
    ["community", "clock"],
    GRID,
)
RATE_NUMERATOR = _gauge(
    "shequ_rate_numerator",
    "Numerator of a public rate (response, resolution, satisfaction) over the incidents "
    "reported in the last 30 local days, by community, exactly as the rates API counts it.",
    ["rate", "community"],
    GRID,
)
RATE_DENOMINATOR = _gauge(
    "shequ_rate_denominator",
    "Denominator of a public rate over the same cohort as shequ_rate_numerator.",
    ["rate", "community"],
    GRID,
)

# -- notify --------------------------------------------------------------------------------

NOTIFY = ("notify",)
NOTIFICATIONS = _counter(
    "shequ_notifications_total",
    "Notification and bureau-webhook delivery attempts by channel and outcome "
    "(sent, failed, fallback, dead).",
    ["channel", "outcome"],
    NOTIFY,
)
NOTIFICATION_SECONDS = _histogram(
    "shequ_notification_delivery_seconds",
    "Time one delivery attempt took in its channel, by channel and outcome.",
    ["channel", "outcome"],
    NOTIFY,
)
NOTIFICATION_DELAY = _histogram(
    "shequ_notification_delay_seconds",
    "Time from an event being recorded by notify to its delivery being sent "
    "(retries, quiet hours and rate limits included), by the channel that sent it.",
    ["channel"],
    NOTIFY,
)

# -- mediation -------------------------------------------------------------------------------

MEDIATION = ("mediation",)
MEDIATION_CASE_SECONDS = _histogram(
    "shequ_mediation_case_seconds",
    "Time from opening a mediation case to closing it, by outcome; the agreement rate is "
    "the agreed count over all closed.",
    ["outcome"],
    MEDIATION,
)
MEDIATION_CASES_CLOSED = _gauge(
    "shequ_mediation_cases_closed",
    "Mediation cases closed in the last 30 days by community and outcome (from the store); "
    "the agreement rate is the agreed ones over all.",
    ["community", "outcome"],
    MEDIATION,
)
MEDIATION_CASES_OVERDUE = _counter(
    "shequ_mediation_cases_overdue_total",
    "Mediation cases whose time limit ran out while mediation was still running.",
    (),
    MEDIATION,
)

# -- disclosure ------------------------------------------------------------------------------

DISCLOSURE_REDACTIONS = _counter(
    "shequ_disclosure_redactions_total",
    "Personal data removed from event-fed disclosure entries, by kind of data",
    ["kind"],
    ("disclosure",),
)

# -- volunteer -------------------------------------------------------------------------------

VOLUNTEER_DISPATCH_SECONDS = _histogram(
    "shequ_volunteer_dispatch_seconds",
    "Time from a volunteer task's creation to a volunteer taking it (an offer accepted "
    "or staff assigning), by kind of task (kinds staff made up count as other).",
    ["kind"],
    ("volunteer",),
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, with its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
