"""The hotspots database: one counter document per community, grid cell and category."""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING, IndexModel

from shequ.store import Repository

CELLS = "cells"


class CellRepository(Repository):
    INDEXES = {CELLS: [IndexModel([("community", 1), ("reports", DESCENDING)])]}

    def count_report(self, community: str, grid_cell: str, category: str, at: Any) -> None:
        """One more report here; called inside the idempotent handler's transaction."""
        self.db[CELLS].update_one(
            {"_id": f"{community}/{grid_cell}/{category}"},
            {
                "$inc": {"reports": 1},
                "$max": {"last_reported_at": at},
                "$setOnInsert": {
                    "community": community,
                    "grid_cell": grid_cell,
                    "category": category,
                },
            },
            upsert=True,
            session=self.session,
        )

    def hottest(self, community: str | None, limit: int) -> list[dict[str, Any]]:
        query = {"community": community} if community else {}
        found = self.db[CELLS].find(query, session=self.session)
        return list(found.sort([("reports", DESCENDING), ("_id", 1)]).limit(limit))
