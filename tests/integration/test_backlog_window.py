"""``BacklogWindow`` on the real store: the oldest of a backlog, without reading all of it.

A command listener records the filters sent, so the tests see that later
reads ask only for the range up to the horizon, and that the order and
every item are kept when the horizon runs out or an older item arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from shequ.store import BacklogWindow
from tests.conftest import Servers

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ORDER = [("due_at", 1), ("_id", 1)]


class Filters(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.sent.append(event.command["filter"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def backlog(servers: Servers) -> Iterator[tuple[Any, Filters]]:
    filters = Filters()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        servers.mongo_uri, tz_aware=True, event_listeners=[filters]
    )
    name = f"window_{uuid.uuid4().hex[:8]}"
    items = client[name]["items"]
    items.create_index([("status", 1), ("due_at", 1)])
    items.insert_many(
        [{"_id": f"i{n:03}", "status": "pending", "due_at": START + timedelta(seconds=n),
          "odd": n % 2 == 1} for n in range(100)]
    )  # fmt: skip
    yield items, filters
    client.drop_database(name)
    client.close()


def take(window: BacklogWindow, items: Any, wanted: int = 5, **keep: Any) -> list[str]:
    """The ids the window gives, marked done as a worker would."""
    found = window.oldest(
        items,
        {"status": "pending", "due_at": {"$lte": START + timedelta(hours=1)}},
        {"status": 1, "odd": 1},
        ORDER,
        wanted,
        lambda doc: all(doc.get(key) == value for key, value in keep.items()),
    )
    ids = [doc["_id"] for doc in found]
    items.update_many({"_id": {"$in": ids}}, {"$set": {"status": "done"}})
    return ids


def test_later_reads_ask_only_up_to_the_horizon_and_keep_the_order(
    backlog: tuple[Any, Filters],
) -> None:
    items, filters = backlog
    window = BacklogWindow("due_at", batches=2)
    taken = [take(window, items) for _ in range(6)]
    assert sum(taken, []) == [f"i{n:03}" for n in range(30)]
    bounds = [f["due_at"]["$lte"] - START for f in filters.sent]
    # A full read notes the horizon at the 10th item; the next reads stay
    # within it; with nothing left there, a full read again, and so on.
    full = timedelta(hours=1)
    assert bounds == [full, timedelta(seconds=9), timedelta(seconds=9), full,
                      timedelta(seconds=19), timedelta(seconds=19), full,
                      timedelta(seconds=29)]  # fmt: skip


def test_an_item_older_than_the_horizon_arriving_later_is_read_first(
    backlog: tuple[Any, Filters],
) -> None:
    items, _ = backlog
    window = BacklogWindow("due_at", batches=4)
    assert take(window, items) == [f"i{n:03}" for n in range(5)]
    items.insert_one({"_id": "late", "status": "pending", "due_at": START - timedelta(hours=1)})
    assert take(window, items)[0] == "late"


def test_items_the_reader_does_not_keep_never_hide_those_behind_them(
    backlog: tuple[Any, Filters],
) -> None:
    items, _ = backlog
    items.update_many({"_id": {"$lt": "i050"}}, {"$set": {"odd": False}})
    window = BacklogWindow("due_at", batches=2)
    # The first fifty are all passed over: the first read still finds five.
    assert take(window, items, odd=True) == ["i051", "i053", "i055", "i057", "i059"]
    odd = [take(window, items, odd=True) for _ in range(5)]
    assert sum(odd, []) == [f"i{n:03}" for n in range(61, 100, 2)]
    passed_over = [f"i{n:03}" for n in range(50)] + [f"i{n:03}" for n in range(50, 60, 2)]
    assert take(window, items, wanted=60, odd=False)[:55] == passed_over
