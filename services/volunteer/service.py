"""The volunteer service: tasks for volunteers, from incidents and visit rounds."""

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
from shequ_services.volunteer import domain
from shequ_services.volunteer.schemas import TaskListSchema, TaskQuerySchema, TaskSchema
from shequ_services.volunteer.store import TaskRepository

READER_ROLES = ("volunteer", "community_staff", "grid_worker", "admin", "auditor")


class VolunteerService(PlatformService):
    name = "volunteer"

    tasks = Store(TaskRepository)
    report_effects = (Effect("tasks", "incident_id", expected="volunteer_task"),)

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("tasks")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        task = domain.task_for_incident(
            incident_id=data["incident_id"],
            category=data["category"]["code"],
            volunteer_task=data["category"]["volunteer_task"],
            community=data["community"],
            grid_cell=data["grid_cell"],
            now=datetime.now(UTC),
        )
        if task is not None:
            self.tasks.create(task)

    @route(
        "GET",
        "/api/v1/volunteer/tasks",
        summary="The volunteer tasks created for an incident",
        query=TaskQuerySchema,
        response=TaskListSchema,
        errors=(403,),
    )
    def list_tasks(self, request: Request) -> dict[str, Any]:
        if not request.identity.has_role(*READER_ROLES):
            raise Forbidden("volunteer tasks are visible to volunteers and community staff")
        query = load_query(request, TaskQuerySchema())
        return {"items": TaskSchema(many=True).dump(self.tasks.for_incident(query["incident_id"]))}
