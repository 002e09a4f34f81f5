"""The notify service: tells people what happened, through pluggable channels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request

from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.errors import Forbidden
from shequ.events import event_handler, idempotent
from shequ.http import load_query, route
from shequ.reconcile import Effect
from shequ.service import PlatformService
from shequ.store import Store
from shequ_services.notify import domain
from shequ_services.notify.channels import LogChannel
from shequ_services.notify.schemas import (
    NotificationListSchema,
    NotificationQuerySchema,
    NotificationSchema,
)
from shequ_services.notify.store import NotificationRepository

READER_ROLES = ("community_staff", "grid_worker", "admin", "auditor")


class NotifyService(PlatformService):
    name = "notify"

    notifications = Store(NotificationRepository)
    report_effects = (
        Effect("notifications", "subject_ref", many=True, unique_by=("template", "audience")),
    )

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("notifications")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        channel = LogChannel()
        for notification in domain.for_incident_reported(
            incident_id=data["incident_id"],
            grid_cell=data["grid_cell"],
            urgency=data["urgency"],
            event_id=event.id,
            now=datetime.now(UTC),
        ):
            self.notifications.record_sent(notification)
            channel.send(notification)

    @route(
        "GET",
        "/api/v1/notify/notifications",
        summary="The notifications sent about one subject (an incident, a case)",
        query=NotificationQuerySchema,
        response=NotificationListSchema,
        errors=(403,),
    )
    def list_notifications(self, request: Request) -> dict[str, Any]:
        if not request.identity.has_role(*READER_ROLES):
            raise Forbidden("notifications are visible to community staff and grid workers")
        query = load_query(request, NotificationQuerySchema())
        found = self.notifications.about(query["subject_ref"], query["limit"])
        return {"items": NotificationSchema(many=True).dump(found)}
