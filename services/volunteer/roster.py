"""Reference data each worker ranks against: cell adjacency, the volunteer index, the rules.

The cells and their adjacency are data in ``cells.yaml`` (or
``SHEQU_VOLUNTEER_CELLS_FILE``), a copy of the grid registry's cell ids:
the volunteer service never imports or calls the grid, and a unit test
keeps the copies in step. Learning cells from grid events was the other
choice; the grid's events do not carry adjacency, so a copy it is.

The volunteer index is built once per process from the database and then
kept current incrementally: at most every ``VOLUNTEER_INDEX_REFRESH_SECONDS``
(default 5) it reads only the volunteers written since its last read (a few
seconds of overlap absorbs clock differences between replicas; putting a
volunteer twice is harmless). A write through this process's API is put at
once. Ranking a task then reads memory only, not 10,000 documents.

At start, an empty database is seeded from ``seed.yaml`` (or
``SHEQU_VOLUNTEER_SEED_FILE``), once across replicas.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import marshmallow
import yaml
from nameko.extensions import DependencyProvider

from shequ_services.volunteer.domain import DispatchRules, Skill, Team, Volunteer, Window
from shequ_services.volunteer.matching import Adjacency, VolunteerIndex
from shequ_services.volunteer.rounds import DEFAULT_TIMEZONE, Household
from shequ_services.volunteer.schemas import CellsSeedSchema, SeedSchema

HERE = Path(__file__).parent
OVERLAP = timedelta(seconds=5)


def volunteer_from(values: dict[str, Any]) -> Volunteer:
    """A volunteer from loaded schema values (the API's and the seed's)."""
    return Volunteer(
        id=values["id"],
        community=values["community"],
        home_cell=values["home_cell"],
        name=values["name"],
        phone=values["phone"],
        household_id=values.get("household_id"),
        skills=tuple(Skill(s["code"], s["confirmed_by"]) for s in values["skills"]),
        languages=tuple(values["languages"]),
        windows=tuple(
            Window(
                w["weekday"],
                datetime.strptime(w["start"], "%H:%M").time(),
                datetime.strptime(w["end"], "%H:%M").time()
                if w["end"] != "24:00"
                else datetime.max.time(),
            )
            for w in values["windows"]
        ),
        teams=tuple(values["teams"]),
        consent_to_contact=values["consent_to_contact"],
        active=values.get("active", True),
    )


def load_cells(path: Path) -> tuple[Adjacency, dict[str, str]]:
    """The cell adjacency and the community names."""
    try:
        raw = CellsSeedSchema().load(yaml.safe_load(path.read_text("utf-8")))
    except marshmallow.ValidationError as exc:
        raise ValueError(f"{path}: {exc.messages}") from exc
    return Adjacency(raw["cells"]), raw["communities"]


def load_seed(path: Path) -> tuple[list[Team], list[Volunteer], list[Household]]:
    try:
        raw = SeedSchema().load(yaml.safe_load(path.read_text("utf-8")) or {})
    except marshmallow.ValidationError as exc:
        raise ValueError(f"{path}: {exc.messages}") from exc
    teams = [Team(t["id"], t["community"], t["name"], tuple(t["leaders"])) for t in raw["teams"]]
    households = [
        Household(h["id"], h["community"], h["grid_cell"], tuple(h["care_lists"]), h["active"])
        for h in raw["households"]
    ]
    return teams, [volunteer_from(v) for v in raw["volunteers"]], households


class Roster(DependencyProvider):
    def setup(self) -> None:
        config = self.container.config
        self.adjacency, self.community_names = load_cells(
            Path(config.get("VOLUNTEER_CELLS_FILE") or HERE / "cells.yaml")
        )
        self.seed = load_seed(Path(config.get("VOLUNTEER_SEED_FILE") or HERE / "seed.yaml"))
        self.rules = DispatchRules(
            parallel=int(config.get("VOLUNTEER_OFFER_PARALLEL") or 3),
            response_window=timedelta(
                seconds=float(config.get("VOLUNTEER_OFFER_RESPONSE_SECONDS") or 1800)
            ),
            shortlist=int(config.get("VOLUNTEER_SHORTLIST") or 20),
        )
        self.load_window = timedelta(days=float(config.get("VOLUNTEER_LOAD_WINDOW_DAYS") or 30))
        self.tz = ZoneInfo(config.get("VOLUNTEER_TIMEZONE") or DEFAULT_TIMEZONE)
        self.refresh_seconds = float(config.get("VOLUNTEER_INDEX_REFRESH_SECONDS") or 5)
        self.index = VolunteerIndex()
        self.watermark: datetime | None = None
        self.refreshed_at = float("-inf")
        self.lock = threading.Lock()
        #: This process, as the holder of leases (the monthly round's).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def seed_into(self, repository: Any) -> None:
        """Seed an empty database (called by the store once its indexes exist)."""
        teams, volunteers, households = self.seed
        for volunteer in volunteers:
            if volunteer.home_cell not in self.adjacency:
                raise ValueError(
                    f"seed volunteer {volunteer.id}: unknown cell {volunteer.home_cell}"
                )
        repository.seed_once(teams, volunteers, households, datetime.now(UTC))

    def get_dependency(self, worker_ctx: Any) -> Roster:
        return self

    def current(self, repository: Any) -> VolunteerIndex:
        """The index, first catching up with volunteers written since the last look."""
        with self.lock:
            if time.monotonic() - self.refreshed_at >= self.refresh_seconds:
                since = None if self.watermark is None else self.watermark - OVERLAP
                changed, newest = repository.volunteers_changed_since(since)
                for volunteer in changed:
                    self.index.put(volunteer)
                self.watermark = newest
                self.refreshed_at = time.monotonic()
            return self.index

    def put(self, volunteer: Volunteer) -> None:
        with self.lock:
            self.index.put(volunteer)
