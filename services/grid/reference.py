"""Reference data: the registry seed loader, the cached registry reader and the policy.

The registry (communities, cells, departments, categories, buildings, grid
workers) lives in the grid database so admins can change it while the
service runs. The YAML files (``registry.yaml``, ``categories.yaml``, or
``SHEQU_GRID_REGISTRY_FILE`` / ``SHEQU_GRID_CATEGORIES_FILE``) only seed a
database that holds no registry yet; afterwards they are ignored.

Every worker reads a snapshot at most ``GRID_REGISTRY_CACHE_SECONDS`` old
(default 5): reports and dispatches are checked against the stored registry
without a database round-trip each. A write through the admin API drops this
process's snapshot at once; other processes see it when theirs expires.

The time-limit policy (``policy.yaml``) is still read once per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import marshmallow
import yaml
from nameko.extensions import DependencyProvider
from pymongo.errors import PyMongoError

from shequ.errors import Unavailable
from shequ.service import provider_of
from shequ.store import Store, bind_actor
from shequ_services.grid import registry
from shequ_services.grid.deadlines import Policy, parse_policy
from shequ_services.grid.domain import Category, GridCell, parse_categories
from shequ_services.grid.open311 import Attribute, parse_questions
from shequ_services.grid.registry_store import RegistryRepository
from shequ_services.grid.schemas import RegistrySeedSchema

log = logging.getLogger(__name__)

HERE = Path(__file__).parent

#: How long a request waits for the registry while the service is starting.
REGISTRY_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class ReferenceData:
    """What a worker checks reports and steps against: one consistent registry snapshot."""

    categories: Mapping[str, Category]
    cells: Mapping[str, GridCell]
    policy: Policy
    registry: registry.Registry | None = None
    duplicate_window: timedelta = field(default=timedelta(hours=48))
    reopen_window: timedelta = field(default=timedelta(days=7))

    questions: Mapping[str, list[Attribute]] = field(default_factory=dict)

    @property
    def departments(self) -> Mapping[str, registry.Department]:
        return self.registry.departments if self.registry is not None else {}

    @property
    def centroids(self) -> dict[str, tuple[float, float]]:
        """Cell centres, for placing an Open311 request that gives only lat/long."""
        return {cid: cell.centroid for cid, cell in self.cells.items() if cell.centroid}


def load_seed(registry_file: Path, categories_file: Path) -> registry.Seed:
    """Read and check the seed files; a broken seed stops the service with the entry named."""
    try:
        raw = RegistrySeedSchema().load(_read(registry_file), unknown=marshmallow.RAISE)
    except marshmallow.ValidationError as exc:
        raise ValueError(f"{registry_file}: {exc.messages}") from exc
    subdistrict = registry.Subdistrict(**raw["subdistrict"])
    communities, cells, buildings = [], [], []
    for community in raw["communities"]:
        communities.append(registry.Community(community["id"], community["name"], subdistrict.id))
        for cell in community["cells"]:
            seeded = {k: v for k, v in cell.items() if k != "buildings"}
            cells.append(GridCell(**{**seeded, "community": community["id"]}))
            buildings.extend(
                registry.Building(b["id"], b["name"], cell["id"]) for b in cell["buildings"]
            )
    try:
        return registry.build(
            subdistrict,
            communities=communities,
            cells=cells,
            departments=[registry.Department(**d) for d in raw["departments"]],
            categories=parse_categories(_read(categories_file)).values(),
            buildings=buildings,
            workers=[registry.GridWorker(**w) for w in raw["grid_workers"]],
        )
    except registry.RegistryInvalid as exc:
        raise ValueError(f"{registry_file} with {categories_file}: {exc.errors}") from exc


class Reference(DependencyProvider):
    """Seeds the registry at start when the database has none; serves cached snapshots."""

    def setup(self) -> None:
        config = self.container.config
        self.seed = load_seed(
            Path(config.get("GRID_REGISTRY_FILE") or HERE / "registry.yaml"),
            Path(config.get("GRID_CATEGORIES_FILE") or HERE / "categories.yaml"),
        )
        self.policy = parse_policy(
            _read(Path(config.get("GRID_POLICY_FILE") or HERE / "policy.yaml"))
        )
        self.questions = parse_questions(
            _read(Path(config.get("GRID_QUESTIONS_FILE") or HERE / "questions.yaml"))
        )
        self.cache_seconds = float(config.get("GRID_REGISTRY_CACHE_SECONDS", 5))
        self.reopen_window = timedelta(days=float(config.get("GRID_REOPEN_WINDOW_DAYS", 7)))
        self.duplicate_window = timedelta(
            hours=float(config.get("GRID_DUPLICATE_WINDOW_HOURS", 48))
        )
        self.data = self._snapshot(self.seed.registry)
        self.loaded_at = float("-inf")
        self.ready = threading.Event()

    def start(self) -> None:
        store = self._store()
        repository = self.repository()
        store.at_start(repository.create_indexes, "creating the registry's indexes")
        if not store.at_start(repository.is_seeded, "looking for the registry"):
            added = store.at_start(lambda: repository.seed(self.seed), "seeding the registry")
            log.info("seeded the grid registry: %d new entries", added)
        store.at_start(self.refresh, "loading the registry")
        self.ready.set()

    def _store(self) -> Store:
        return provider_of(self.container, Store)

    def repository(self) -> RegistryRepository:
        """A registry repository on the service's own database (the ``Store``'s client)."""
        store = self._store()
        repository = RegistryRepository(store.db, service=store.service, district=store.district)
        repository.on_change = self.invalidate
        return repository

    def refresh(self) -> None:
        self.data = self._snapshot(self.repository().load())
        self.loaded_at = time.monotonic()

    def invalidate(self) -> None:
        self.loaded_at = float("-inf")

    def get_dependency(self, worker_ctx: Any) -> ReferenceData:
        # nameko injects every dependency into every worker, /readyz's too, and
        # an exception while injecting kills the container: so the snapshot is
        # fetched at its first use, in the worker (_Loaded).
        return cast(ReferenceData, _Loaded(self))

    def current(self) -> ReferenceData:
        """The snapshot, reloaded when older than the cache; waits while the registry loads.

        nameko starts the HTTP server alongside this provider, so a request
        can arrive while the registry is being seeded or its store is away
        (``Store.at_start``): it waits a while, then fails with a 503.
        """
        if not self.ready.wait(timeout=REGISTRY_WAIT_SECONDS):
            raise Unavailable("the grid registry is not loaded yet")
        if time.monotonic() - self.loaded_at >= self.cache_seconds:
            try:
                self.refresh()
            except PyMongoError as exc:
                log.warning("registry reload failed, keeping the previous snapshot: %s", exc)
        return self.data

    def _snapshot(self, loaded: registry.Registry) -> ReferenceData:
        return ReferenceData(
            categories=loaded.categories,
            cells=loaded.cells,
            policy=self.policy,
            registry=loaded,
            duplicate_window=self.duplicate_window,
            reopen_window=self.reopen_window,
            questions=self.questions,
        )


class _Loaded:
    """A worker's registry snapshot, taken when the worker first reads it."""

    def __init__(self, provider: Reference) -> None:
        self._provider = provider
        self._data: ReferenceData | None = None

    def __getattr__(self, name: str) -> Any:
        if self._data is None:
            self._data = self._provider.current()
        return getattr(self._data, name)


class RegistryAdmin(DependencyProvider):
    """The registry repository for the admin routes; its writes drop the cached snapshot."""

    def get_dependency(self, worker_ctx: Any) -> RegistryRepository:
        reference = provider_of(self.container, Reference)
        repository = reference.repository()
        bind_actor(repository, worker_ctx)
        return repository


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)
