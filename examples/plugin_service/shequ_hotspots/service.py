"""The hotspots service: consumes the grid's reports through the platform's runtime.

Everything a built-in service has comes with ``PlatformService``, ``Store``
and ``idempotent``: its own database (``hotspots``), health and readiness,
metrics, an OpenAPI document, retries and dead letters for its handler, and
exactly-once effects per event.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.events import event_handler, idempotent
from shequ.http import load_query, route
from shequ.service import PlatformService
from shequ.store import Store
from shequ_hotspots.schemas import CellListSchema, CellQuerySchema, CellSchema
from shequ_hotspots.store import CellRepository


class HotspotsService(PlatformService):
    name = "hotspots"

    cells = Store(CellRepository)

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("cells")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        self.cells.count_report(
            data["community"], data["grid_cell"], data["category"]["code"], data["reported_at"]
        )

    @route(
        "GET",
        "/api/v1/hotspots/cells",
        action="hotspots.cells.read",
        summary="Grid cells by how many incidents were reported there, most first",
        query=CellQuerySchema,
        response=CellListSchema,
    )
    def list_cells(self, request: Request) -> dict[str, Any]:
        query = load_query(request, CellQuerySchema())
        found = self.cells.hottest(query["community"], query["limit"])
        return {"items": CellSchema(many=True).dump(found)}
