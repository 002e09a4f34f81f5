"""Prometheus metrics: the names are a contract that dashboards and alerts rely on.

Metrics are created once, at import, on the default registry. Creating them in
a provider's ``setup()`` would register them again on every container start
and break repeated test starts. Labels stay low-cardinality: service, handler,
event type, route template, status, stage, category; never an id or a person.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# One second to thirty days, with finer steps below a second for handlers.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0,
    6 * 86400.0, 9 * 86400.0, 15 * 86400.0, 30 * 86400.0,
)  # fmt: skip

EVENT_HANDLE_SECONDS = Histogram(
    "shequ_event_handle_seconds",
    "Time a service spent handling one event delivery.",
    ["service", "handler", "event_type", "outcome"],
    buckets=DURATION_BUCKETS,
)
EVENT_LAG_SECONDS = Histogram(
    "shequ_event_lag_seconds",
    "Time from an event's CloudEvents time to the end of its handling.",
    ["service", "handler", "event_type"],
    buckets=DURATION_BUCKETS,
)
EVENT_RETRIES = Counter(
    "shequ_event_retries_total",
    "Failed deliveries scheduled for another attempt after a back-off.",
    ["service", "handler", "event_type"],
)
DEAD_LETTERS = Counter(
    "shequ_dead_letters_total",
    "Deliveries moved to the service's dead-letter queue.",
    ["service", "handler", "event_type", "reason"],
)
EVENTS_PUBLISHED = Counter(
    "shequ_events_published_total",
    "Outbox entries published to the broker with a publisher confirm.",
    ["service", "event_type"],
)
OUTBOX_PENDING = Gauge(
    "shequ_outbox_pending",
    "Outbox entries written but not yet confirmed by the broker.",
    ["service"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "shequ_http_request_seconds",
    "HTTP request handling time by route template and status.",
    ["service", "method", "route", "status"],
    buckets=DURATION_BUCKETS,
)
INCIDENT_STAGE_SECONDS = Histogram(
    "shequ_incident_stage_seconds",
    "Time an incident spent reaching a workflow stage.",
    ["stage", "category"],
    buckets=DURATION_BUCKETS,
)
SLA_BREACHES = Counter(
    "shequ_sla_breaches_total",
    "Time limits that ran out before the work was done.",
    ["clock", "category"],
)
INCIDENTS_OPEN = Gauge(
    "shequ_incidents_open",
    "Incidents reported and not yet closed.",
    ["category"],
)

NOTIFICATIONS = Counter(
    "shequ_notifications_total",
    "Notification and bureau-webhook delivery attempts by channel and outcome "
    "(sent, failed, fallback, dead).",
    ["channel", "outcome"],
)
NOTIFICATION_SECONDS = Histogram(
    "shequ_notification_delivery_seconds",
    "Time one delivery attempt took in its channel, by channel and outcome.",
    ["channel", "outcome"],
    buckets=DURATION_BUCKETS,
)
NOTIFICATION_DELAY = Histogram(
    "shequ_notification_delay_seconds",
    "Time from an event being recorded by notify to its delivery being sent "
    "(retries, quiet hours and rate limits included), by the channel that sent it.",
    ["channel"],
    buckets=DURATION_BUCKETS,
)
MEDIATION_CASE_SECONDS = Histogram(
    "shequ_mediation_case_seconds",
    "Time from opening a mediation case to closing it, by outcome; the agreement rate is "
    "the agreed count over all closed.",
    ["outcome"],
    buckets=DURATION_BUCKETS,
)
MEDIATION_CASES_OVERDUE = Counter(
    "shequ_mediation_cases_overdue_total",
    "Mediation cases whose time limit ran out while mediation was still running.",
)


DISCLOSURE_REDACTIONS = Counter(
    "shequ_disclosure_redactions_total",
    "Personal data removed from event-fed disclosure entries, by kind of data",
    ["kind"],
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, with its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
