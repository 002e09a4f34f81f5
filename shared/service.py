"""What every Shequ service has: health, readiness, metrics and API description routes.

A service class inherits ``PlatformService`` and gains ``/healthz`` (the
process answers), ``/readyz`` (start-up finished, database and broker
reachable, event consumers attached, outbox relay running) and ``/metrics`` on its own port,
and ``/api/v1/<service>/openapi.json``, its OpenAPI document, built from its
own routes (``shequ.openapi``) and so routed by the front door like its API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import kombu
import marshmallow
from marshmallow import fields, validate
from nameko.containers import ServiceContainer
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from shequ import audit
from shequ.events import TrackedQueueConsumer
from shequ.http import Route, json_response, load_query, route
from shequ.metrics import exposition
from shequ.openapi import build_spec
from shequ.reconcile import Effect
from shequ.store import Store

log = logging.getLogger(__name__)

P = TypeVar("P")


def provider_of(container: Any, cls: type[P]) -> P:
    """The container's dependency provider of ``cls``: for an extension that needs another
    (the store a seeding provider writes through, the readiness a probe reads)."""
    return next(ext for ext in container.dependencies if isinstance(ext, cls))


class PlatformContainer(ServiceContainer):
    """nameko's service container, which also knows when its start has finished.

    nameko's web server answers while the container's other extensions are
    still starting (creating indexes, seeding, waiting for a store that is
    restarting: ``Store.at_start``), and nameko sets ``started`` before any of
    them has begun. A service answering ``/readyz`` with 200 then would be
    sent traffic, and counted as up by ``shequ up`` and the tests, while it
    cannot yet do its work. ``SERVICE_CONTAINER_CLS`` in shared/defaults.yaml
    selects this class.
    """

    start_completed = False

    def start(self) -> None:
        super().start()
        self.start_completed = True

    def stop(self) -> None:
        self.start_completed = False
        super().stop()

    def kill(self, exc_info: Any = None) -> None:
        self.start_completed = False
        super().kill(exc_info)


class Readiness(DependencyProvider):
    """Answers whether this container can do its work right now."""

    def get_dependency(self, worker_ctx: Any) -> Readiness:
        return self

    def check(self) -> dict[str, bool]:
        container = self.container
        # A container of another class (nameko's own, in a test that builds one)
        # has only nameko's flag, set as its start begins.
        checks: dict[str, bool] = {
            "started": bool(getattr(container, "start_completed", container.started))
        }
        stores = [ext for ext in container.dependencies if isinstance(ext, Store)]
        checks["database"] = all(store.is_ready() for store in stores)
        consumers = [
            ext for ext in container.subextensions if isinstance(ext, TrackedQueueConsumer)
        ]
        if consumers:
            checks["consumers"] = all(consumer.consuming for consumer in consumers)
        checks["broker"] = self._broker_reachable()
        return checks

    def _broker_reachable(self) -> bool:
        try:
            with kombu.Connection(self.container.config["AMQP_URI"], connect_timeout=2) as conn:
                conn.connect()
            return True
        except Exception:  # noqa: BLE001 - any failure means not reachable
            return False


class ProbeRoute(Route):
    """A probe route answered by the web server's own greenthread, never by a worker.

    nameko runs each entrypoint in a worker from a pool of ``max_workers``.
    When event handlers hold every slot (a burst of events; all of them
    waiting for a store that is restarting), a probe waited for a free one:
    in one fault run notify's ``/readyz`` took 31 s to answer. Kubernetes'
    probes give up after 3 s, so a busy service would count as not live and
    be restarted in the middle of its work. A probe needs no worker: what it
    reads is the container's own state, through ``answer(container)``.
    """

    def __init__(
        self, method: str, url: str, *, answer: Callable[[Any], Response], **kwargs: Any
    ) -> None:
        self.answer = answer
        super().__init__(method, url, **kwargs)

    def respond(self, request: Request) -> Response:
        return self.answer(self.container)


probe = ProbeRoute.decorator


def _health() -> Response:
    return json_response({"status": "ok"})


def _readiness(readiness: Readiness) -> Response:
    checks = readiness.check()
    ready = all(checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


def _readiness_of(container: Any) -> Response:
    return _readiness(provider_of(container, Readiness))


class HealthSchema(marshmallow.Schema):
    status = fields.String()


class ReadinessSchema(marshmallow.Schema):
    status = fields.String(metadata={"description": "ready or not ready"})
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())


class AuditQuerySchema(marshmallow.Schema):
    object_kind = fields.String(validate=validate.Length(min=1, max=64))
    object_id = fields.String(validate=validate.Length(min=1, max=200))
    actor = fields.String(
        validate=validate.Length(min=1, max=200), metadata={"description": "a subject"}
    )
    action = fields.String(validate=validate.Length(min=1, max=200))
    from_ = fields.AwareDateTime(data_key="from", metadata={"description": "at or after"})
    to = fields.AwareDateTime(metadata={"description": "before"})
    after = fields.Integer(
        strict=False,
        validate=validate.Range(min=0, max=2**62),
        metadata={"description": "the next page: records after this seq"},
    )
    limit = fields.Integer(strict=False, load_default=100, validate=validate.Range(min=1, max=1000))


class AuditRecordSchema(marshmallow.Schema):
    seq = fields.Integer()
    at = fields.String(metadata={"description": "UTC, fixed width"})
    action = fields.String()
    actor = fields.Dict(
        metadata={"description": "sub and roles; or event_id, source, type; or timer"}
    )
    object = fields.Dict(metadata={"description": "kind and id"})
    before = fields.String(allow_none=True, metadata={"description": "SHA-256 of the object"})
    after = fields.String(allow_none=True, metadata={"description": "SHA-256 of the object"})
    prev = fields.String(allow_none=True, metadata={"description": "an earlier record's hash"})
    hash = fields.String(metadata={"description": "SHA-256 of this record"})


class AuditPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(AuditRecordSchema))
    next_after = fields.Integer(allow_none=True, metadata={"description": "pass as after="})


class PlatformService:
    """Mixin for service classes: the platform's operational routes."""

    readiness = Readiness()
    #: Where this service records what a grid report caused (``shequ reconcile``).
    report_effects: ClassVar[tuple[Effect, ...]] = ()

    # The probes are answered without a worker (``ProbeRoute``); the methods
    # give the same answer, for a caller that has an instance.
    @probe(
        "GET",
        "/healthz",
        answer=lambda container: _health(),
        public=True,
        summary="The process answers",
        response=HealthSchema,
    )
    def healthz(self, request: Request) -> Response:
        return _health()

    @probe(
        "GET",
        "/readyz",
        answer=_readiness_of,
        public=True,
        summary="Start-up finished; database, broker and event consumers are ready",
        response=ReadinessSchema,
        responses={503: "not ready; the body says which check failed"},
    )
    def readyz(self, request: Request) -> Response:
        return _readiness(self.readiness)

    @route(
        "GET",
        "/metrics",
        public=True,
        summary="Prometheus metrics (text exposition format)",
        media_type="text/plain",
    )
    def metrics(self, request: Request) -> Response:
        try:
            self.refresh_metrics()
        except Exception:  # noqa: BLE001 - the rest of the metrics are still worth a scrape
            log.exception("refreshing the store-computed metrics failed; serving the last values")
        body, content_type = exposition()
        return Response(body, status=200, headers={"Content-Type": content_type})

    @route(
        "GET",
        "/api/v1/{service}/audit",
        action="{service}.audit.read",
        summary="The audit trail: who changed what and when, with before/after hashes",
        query=AuditQuerySchema,
        response=AuditPageSchema,
    )
    def audit_trail(self, request: Request) -> dict[str, Any]:
        """Records in the order they were written, filtered by object, actor, action and time."""
        query = load_query(request, AuditQuerySchema())
        db = self._audit_database()
        if db is None:
            return {"items": [], "next_after": None}
        limit, after = query.pop("limit"), query.pop("after", None)
        items, next_after = audit.query(db, query, after=after, limit=limit)
        return AuditPageSchema().dump({"items": items, "next_after": next_after})

    def _audit_database(self) -> Any:
        """The service's own database, through the first store it declares (None: it has none)."""
        for klass in type(self).__mro__:
            for name, value in vars(klass).items():
                if isinstance(value, Store):
                    return getattr(self, name).db
        return None

    def refresh_metrics(self) -> None:
        """Set the gauges a service computes from its store, just before a scrape.

        A service whose gauges must be right after a restart (open work, say)
        counts them from its store here instead of keeping them in memory.
        """

    @route(
        "GET",
        "/api/v1/{service}/openapi.json",
        public=True,
        summary="This service's OpenAPI 3 document",
        response={"type": "object"},
    )
    def openapi(self, request: Request) -> dict[str, Any]:
        return build_spec(type(self))
