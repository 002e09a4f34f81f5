"""A test-only service whose handler fails on demand, for the retry and dead-letter tests.

It consumes a test-only event type, so it never sees the platform's own
traffic. A document in its database decides whether handling fails, so a
test can make the failure go away and replay the dead letter.
"""

from __future__ import annotations

import marshmallow
from marshmallow import fields
from pymongo import IndexModel

from shequ.contracts import CloudEvent
from shequ.contracts.registry import register
from shequ.events import event_handler, idempotent
from shequ.service import PlatformService
from shequ.store import Repository, Store

SOURCE = "testsource"
THING_HAPPENED = "thing.happened"


class ThingHappenedV1(marshmallow.Schema):
    thing_id = fields.String(required=True)
    poison = fields.Boolean(required=True)


THING_HAPPENED_V1 = register(
    SOURCE, THING_HAPPENED, 1, ThingHappenedV1, "Test-only event for the flaky service."
)


class FlakyRepository(Repository):
    INDEXES = {"handled": [IndexModel([("thing_id", 1)])]}

    def failing(self) -> bool:
        switch = self.db["switch"].find_one({"_id": "switch"}, session=self.session)
        return bool(switch and switch["fail_poison"])

    def record(self, thing_id: str) -> None:
        self.db["handled"].insert_one({"thing_id": thing_id}, session=self.session)


class FlakyService(PlatformService):
    name = "flaky"

    things = Store(FlakyRepository)

    @event_handler(SOURCE, THING_HAPPENED)
    @idempotent("things")
    def on_thing_happened(self, event: CloudEvent) -> None:
        if event.data["poison"] and self.things.failing():
            raise RuntimeError(f"refusing poison thing {event.data['thing_id']}")
        self.things.record(event.data["thing_id"])
