"""The report fan-out written the plain nameko way: the baseline of ``bench/fanout.py``.

Stock ``EventDispatcher`` and ``event_handler``, one plain ``insert_one``
per step, no transaction, no outbox, no processed marks, no retries: what a
first nameko version of the platform would look like. It does none of the
platform's domain work either (no notify rules, no disclosure log append, no
case or task), so what it measures is the plumbing, and the ratio to it is the
price of the guarantees and of that work together. Each consumer writes one
effect per report whatever the category.

Each class runs in a process of its own (``nameko run``), as the platform's
services do. The store and database come from ``PLAIN_MONGO_URI`` and
``PLAIN_DATABASE``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pymongo
from nameko.events import EventDispatcher, event_handler
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http
from werkzeug.wrappers import Request

SOURCE = "plaingrid"
EVENT = "incident_reported"


class Database(DependencyProvider):
    """One pymongo client per process, shared by its workers."""

    def setup(self) -> None:
        self.client: pymongo.MongoClient[Any] = pymongo.MongoClient(os.environ["PLAIN_MONGO_URI"])
        self.db = self.client[os.environ["PLAIN_DATABASE"]]

    def stop(self) -> None:
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> Any:
        return self.db


class PlainGrid:
    """Stores a report and dispatches its event, waiting for the broker's confirm."""

    name = SOURCE
    db = Database()
    dispatch = EventDispatcher()

    @http("POST", "/incidents")
    def report(self, request: Request) -> tuple[int, str]:
        body = json.loads(request.get_data(as_text=True))
        incident = {
            "_id": uuid.uuid4().hex,
            "category": body["category"],
            "grid_cell": body["grid_cell"],
            "description": body["description"],
            "reported_at": time.time(),
        }
        self.db["incidents"].insert_one(incident)
        self.dispatch(
            EVENT,
            {"incident_id": incident["_id"], "category": incident["category"]},
        )
        return 201, json.dumps({"id": incident["_id"]})


def _effect(db: Any, service: str, payload: dict[str, Any]) -> None:
    db["effects"].insert_one(
        {"service": service, "incident_id": payload["incident_id"], "at": time.time()}
    )


class PlainNotify:
    name = "plainnotify"
    db = Database()

    @event_handler(SOURCE, EVENT)
    def on_incident_reported(self, payload: dict[str, Any]) -> None:
        _effect(self.db, self.name, payload)


class PlainDisclosure:
    name = "plaindisclosure"
    db = Database()

    @event_handler(SOURCE, EVENT)
    def on_incident_reported(self, payload: dict[str, Any]) -> None:
        _effect(self.db, self.name, payload)


class PlainMediation:
    name = "plainmediation"
    db = Database()

    @event_handler(SOURCE, EVENT)
    def on_incident_reported(self, payload: dict[str, Any]) -> None:
        _effect(self.db, self.name, payload)


class PlainVolunteer:
    name = "plainvolunteer"
    db = Database()

    @event_handler(SOURCE, EVENT)
    def on_incident_reported(self, payload: dict[str, Any]) -> None:
        _effect(self.db, self.name, payload)


CONSUMERS = ("PlainNotify", "PlainDisclosure", "PlainMediation", "PlainVolunteer")
