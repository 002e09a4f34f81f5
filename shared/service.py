"""What every Shequ service has: health, readiness, metrics and API description routes.

A service class inherits ``PlatformService`` and gains ``/healthz`` (the
process answers), ``/readyz`` (database and broker reachable, event
consumers attached, outbox relay running) and ``/metrics`` on its own port,
and ``/api/v1/<service>/openapi.json``, its OpenAPI document, built from its
own routes (``shequ.openapi``) and so routed by the front door like its API.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import kombu
import marshmallow
from marshmallow import fields
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from shequ.events import TrackedQueueConsumer
from shequ.http import json_response, route
from shequ.metrics import exposition
from shequ.openapi import build_spec
from shequ.reconcile import Effect
from shequ.store import Store

log = logging.getLogger(__name__)


class Readiness(DependencyProvider):
    """Answers whether this container can do its work right now."""

    def get_dependency(self, worker_ctx: Any) -> Readiness:
        return self

    def check(self) -> dict[str, bool]:
        container = self.container
        checks: dict[str, bool] = {}
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


class HealthSchema(marshmallow.Schema):
    status = fields.String()


class ReadinessSchema(marshmallow.Schema):
    status = fields.String(metadata={"description": "ready or not ready"})
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())


class PlatformService:
    """Mixin for service classes: the platform's operational routes."""

    readiness = Readiness()
    #: Where this service records what a grid report caused (``shequ reconcile``).
    report_effects: ClassVar[tuple[Effect, ...]] = ()

    @route("GET", "/healthz", public=True, summary="The process answers", response=HealthSchema)
    def healthz(self, request: Request) -> dict[str, str]:
        return {"status": "ok"}

    @route(
        "GET",
        "/readyz",
        public=True,
        summary="Database, broker and event consumers are ready",
        response=ReadinessSchema,
        responses={503: "not ready; the body says which check failed"},
    )
    def readyz(self, request: Request) -> Response:
        checks = self.readiness.check()
        ready = all(checks.values())
        return json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

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
