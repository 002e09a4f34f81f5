"""The volunteer service's repository."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pymongo import IndexModel

from shequ.contracts import volunteer as contract
from shequ.store import Repository, as_record
from shequ_services.volunteer.domain import Task

TASKS = "tasks"


class TaskRepository(Repository):
    INDEXES = {
        TASKS: [
            IndexModel(
                [("incident_id", 1)],
                unique=True,
                partialFilterExpression={"incident_id": {"$type": "string"}},
            )
        ]
    }

    def create(self, task: Task) -> None:
        document = asdict(task)
        document["_id"] = document.pop("id")
        self.db[TASKS].insert_one(document, session=self.session)
        self.emit(
            contract.TASK_CREATED_V1,
            subject=task.id,
            sequence=1,
            data={
                "task_id": task.id,
                "incident_id": task.incident_id,
                "community": task.community,
                "grid_cell": task.grid_cell,
                "kind": task.kind,
            },
        )

    def for_incident(self, incident_id: str) -> list[dict[str, Any]]:
        return [as_record(d) for d in self.db[TASKS].find({"incident_id": incident_id})]
