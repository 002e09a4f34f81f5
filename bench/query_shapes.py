"""Old and new shapes of the hot queries, timed on the embedded store among 20,000 documents.

SecantusDB plans an index only when one covers every field a filter names;
docs/performance.md ("Query plans") says what that cost and how the hot
queries were reshaped. This prints the time of each shape, old and new, on a
private SecantusDB (free port, temporary directory) holding ``--documents``
documents that the queries do not match, so the difference is what a
whole-collection read costs. Run: ``.venv/bin/python bench/query_shapes.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from pymongo import IndexModel, ReturnDocument

from shequ.embedded import SecantusServer
from shequ.store import BacklogWindow


def timed(label: str, query: Callable[[], Any], repeat: int = 5) -> None:
    query()  # warm
    started = time.perf_counter()
    for _ in range(repeat):
        query()
    print(f"| {label} | {(time.perf_counter() - started) * 1000 / repeat:,.1f} |", flush=True)


def drain(db: Any, backlog: int, now: datetime) -> None:
    """Drain a backlog of due deliveries a batch at a time: reading it whole each time, or not.

    Prints the seconds spent reading (marking each batch sent is left out:
    it is the same either way).
    """
    batch = 100
    due = {"status": "pending", "due_at": {"$lte": now}}
    print(f"\ndraining {backlog:,} due deliveries, {batch} at a time; seconds reading\n")
    print("| read | s |\n| --- | ---: |")
    for label, window in (
        ("whole backlog each batch (before)", None),
        ("`BacklogWindow` (after)", BacklogWindow("due_at")),
    ):
        db.backlog.drop()
        db.backlog.create_indexes([IndexModel([("status", 1), ("due_at", 1)])])
        db.backlog.insert_many(
            [{"_id": f"b{i}", "status": "pending", "due_at": now - timedelta(seconds=backlog - i),
              "kind": "notification", "lease_until": None, "pad": "z" * 300}
             for i in range(backlog)]
        )  # fmt: skip
        reading = 0.0
        while True:
            started = time.perf_counter()
            if window is None:
                found = list(db.backlog.find(due, {"_id": 1}).sort("due_at", 1).limit(batch))
            else:
                found = window.oldest(db.backlog, due, {"_id": 1}, [("due_at", 1)], batch,
                                      lambda doc: True)  # fmt: skip
            reading += time.perf_counter() - started
            if not found:
                break
            ids = [doc["_id"] for doc in found]
            db.backlog.update_many({"_id": {"$in": ids}}, {"$set": {"status": "sent"}})
        print(f"| {label} | {reading:,.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=5_000, help="due deliveries to drain")
    args = parser.parse_args()
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    with tempfile.TemporaryDirectory(prefix="shequ-shapes-") as scratch:
        server = SecantusServer(Path(scratch) / "secantus")
        server.start()
        try:
            db = pymongo.MongoClient(server.mongo_uri, tz_aware=True)["shapes"]
            n = args.documents
            db.outbox.create_indexes([IndexModel([("status", 1), ("created_at", 1)])])
            db.outbox.insert_many(
                [{"_id": f"o{i}", "status": "sent", "created_at": now, "lease_until": None,
                  "body": {"pad": "x" * 200}} for i in range(n)]
                + [{"_id": f"p{i}", "status": "pending", "created_at": now, "lease_until": None}
                   for i in range(3)]
            )  # fmt: skip
            db.incidents.create_indexes(
                [IndexModel([("category", 1), ("grid_cell", 1), ("reported_at", -1)])]
            )
            db.incidents.insert_many(
                [{"_id": f"i{i}", "version": 1, "category": "alley_unclean",
                  "grid_cell": f"c{i % 50}", "reported_at": now, "status": "closed_resolved",
                  "pad": "z" * 300} for i in range(n)]
            )  # fmt: skip
            db.deliveries.create_indexes(
                [IndexModel([("status", 1), ("due_at", 1)]),
                 IndexModel([("recipient", 1), ("at", -1), ("_id", -1)])]
            )  # fmt: skip
            db.deliveries.insert_many(
                [{"_id": f"d{i}", "status": "sent", "due_at": now, "kind": "notification",
                  "lease_until": None, "recipient": f"r{i % 100}", "at": now, "outcome": "sent",
                  "urgent": False, "pad": "z" * 300} for i in range(n)]
                + [{"_id": "due", "status": "pending", "due_at": now, "kind": "notification",
                    "lease_until": None}]
            )  # fmt: skip
            print(f"{n:,} documents per collection; milliseconds per query, mean of 5\n")
            print("| query shape | ms |\n| --- | ---: |")
            leased = {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
            order = [("created_at", 1), ("_id", 1)]
            timed(
                "outbox claim, old: `{status, $or: lease}`",
                lambda: list(db.outbox.find({"status": "pending", **leased}).sort(order)),
            )
            timed(
                "outbox claim, old, hinted",
                lambda: list(
                    db.outbox.find({"status": "pending", **leased})
                    .sort(order)
                    .hint([("status", 1), ("created_at", 1)])
                ),
            )
            timed(
                "outbox claim, new: `{status}`",
                lambda: list(db.outbox.find({"status": "pending"}).sort(order)),
            )
            timed(
                "compare-and-set, old: `find_one_and_update({_id, version})`",
                lambda: db.incidents.find_one_and_update(
                    {"_id": "i500", "version": 1},
                    {"$set": {"seen": 1}},
                    return_document=ReturnDocument.AFTER,
                ),
            )
            timed(
                "compare-and-set, between: `find_one({_id})` + `find_one_and_update({_id})`",
                lambda: (
                    db.incidents.find_one({"_id": "i500"}),
                    db.incidents.find_one_and_update(
                        {"_id": "i500"}, {"$set": {"seen": 1}}, return_document=ReturnDocument.AFTER
                    ),
                ),
            )
            timed(
                "compare-and-set, new: `find_one({_id})` + `update_one({_id})`",
                lambda: (
                    db.incidents.find_one({"_id": "i500"}),
                    db.incidents.update_one({"_id": "i500"}, {"$set": {"seen": 1}}),
                ),
            )
            window = {"$gte": now - timedelta(days=1), "$lte": now}
            timed(
                "duplicate check, old: `{category, grid_cell $in, reported_at, status, _id}`",
                lambda: list(
                    db.incidents.find(
                        {
                            "category": "alley_unclean",
                            "grid_cell": {"$in": ["c1"]},
                            "reported_at": window,
                            "status": {"$nin": ["rejected"]},
                            "_id": {"$ne": "new"},
                        }
                    )
                ),
            )
            timed(
                "duplicate check, new: `{category, grid_cell, reported_at}` per cell",
                lambda: list(
                    db.incidents.find(
                        {"category": "alley_unclean", "grid_cell": "c1", "reported_at": window}
                    )
                ),
            )
            due = {"status": "pending", "due_at": {"$lte": now}}
            timed(
                "notify claim, old: `{status, due_at, kind $in, $or: lease}`",
                lambda: db.deliveries.find_one_and_update(
                    {**due, "kind": {"$in": ["notification"]}, **leased},
                    {"$set": {"seen": 1}},
                    sort=[("due_at", 1)],
                ),
            )
            timed(
                "notify claim, new: `{status, due_at}`",
                lambda: list(db.deliveries.find(due).sort("due_at", 1)),
            )
            timed(
                "notify send count, old: `{recipient, outcome, at, urgent}`",
                lambda: list(
                    db.deliveries.find(
                        {
                            "recipient": "r5",
                            "outcome": "sent",
                            "at": {"$gt": hour_ago},
                            "urgent": False,
                        }
                    )
                ),
            )
            timed(
                "notify send count, new: `{recipient, at}`",
                lambda: list(db.deliveries.find({"recipient": "r5", "at": {"$gt": hour_ago}})),
            )
            drain(db, args.backlog, now)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
