"""The disclosure service: the community's public notice board as a hash-chained log."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.events import event_handler, idempotent
from shequ.http import load_query, route
from shequ.service import PlatformService
from shequ.store import Store
from shequ_services.disclosure import domain
from shequ_services.disclosure.schemas import EntryPageSchema, EntryQuerySchema, EntrySchema
from shequ_services.disclosure.store import EntryRepository


class DisclosureService(PlatformService):
    name = "disclosure"

    entries = Store(EntryRepository)

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("entries")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        draft = domain.incident_received(
            incident_id=data["incident_id"],
            category=data["category"]["code"],
            category_name=data["category"]["name_zh"],
            sensitive=data["category"]["sensitive"],
            community=data["community"],
            urgency=data["urgency"],
        )
        self.entries.append(draft)

    @route(
        "GET",
        "/api/v1/disclosure/entries",
        public=True,
        summary="The public disclosure log, in order, after a sequence number",
        query=EntryQuerySchema,
        response=EntryPageSchema,
    )
    def list_entries(self, request: Request) -> dict[str, Any]:
        query = load_query(request, EntryQuerySchema())
        found = self.entries.page(
            community=query.get("community"), after=query["after"], limit=query["limit"]
        )
        return {"items": EntrySchema(many=True).dump(found)}
