"""The grid registry: sub-district, communities, grid cells, buildings, departments, workers.

Plain Python like ``domain``. The registry is data a district edits (seeded
from ``registry.yaml``, then changed through the admin API), so every rule
that keeps it coherent lives here and is checked the same way for the seed
and for each edit: ids are unique, every reference names something that
exists, adjacency is symmetric, a polygon is a real shape. Checks return
per-field messages, so the API can say which field of which entry is wrong.

``Registry`` holds what reports and dispatches are checked against
(communities, cells, departments, categories); buildings and grid workers
are many and only ever looked up one cell at a time, so they stay in the
store and are checked against a ``Registry`` when written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shequ_services.grid.domain import URGENCY_TIERS, Category, GridCell, GridError

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

Errors = dict[str, list[str]]


class RegistryError(GridError):
    """Base of registry refusals."""


class RegistryInvalid(RegistryError):
    """An entry breaks a registry rule; ``errors`` maps field (or entry path) to messages."""

    def __init__(self, errors: Errors) -> None:
        self.errors = errors
        first = next(iter(errors.items()), ("", [""]))
        super().__init__(f"the registry entry is invalid: {first[0]}: {'; '.join(first[1])}")


class DuplicateId(RegistryError):
    """An entry with this id exists already."""


class NotInRegistry(RegistryError):
    """No entry with this id."""


class UnknownDepartment(GridError):
    """A dispatch names a department the registry does not know."""


@dataclass(frozen=True)
class Subdistrict:
    id: str
    name: str


@dataclass(frozen=True)
class Community:
    id: str
    name: str
    subdistrict: str


@dataclass(frozen=True)
class Building:
    """A building (楼栋) in a cell; ``community`` follows from the cell."""

    id: str
    name: str
    cell: str
    community: str = ""


@dataclass(frozen=True)
class Department:
    """A department that takes dispatched work.

    ``communities`` and ``cells`` say where it serves; both empty means the
    whole sub-district (a district-level bureau such as the police station).
    """

    id: str
    name_zh: str
    name_en: str
    categories: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()

    def handles(self, category: str) -> bool:
        return category in self.categories

    def serves(self, cell: GridCell) -> bool:
        if not self.communities and not self.cells:
            return True
        return cell.id in self.cells or cell.community in self.communities


@dataclass(frozen=True)
class GridWorker:
    """A grid worker (网格员); ``id`` is the subject of their token, ``communities`` derived."""

    id: str
    name: str
    cells: tuple[str, ...]
    communities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registry:
    subdistrict: Subdistrict
    communities: Mapping[str, Community] = field(default_factory=dict)
    cells: Mapping[str, GridCell] = field(default_factory=dict)
    departments: Mapping[str, Department] = field(default_factory=dict)
    categories: Mapping[str, Category] = field(default_factory=dict)


@dataclass(frozen=True)
class CellEdit:
    """A cell to store, and the neighbours that must add or drop it (adjacency is symmetric).

    Expressed as link/unlink rather than whole neighbour cells so the store can
    apply them as set operations: two admins editing cells around the same
    neighbour at once cannot undo each other's links.
    """

    cell: GridCell
    link: tuple[str, ...] = ()
    unlink: tuple[str, ...] = ()


@dataclass(frozen=True)
class Seed:
    """A whole registry as a seed file describes it, checked and with adjacency made symmetric."""

    registry: Registry
    buildings: tuple[Building, ...] = ()
    workers: tuple[GridWorker, ...] = ()


# -- checks: each returns {field: [messages]}, empty when the entry is fine ----------


def check_id(value: str) -> list[str]:
    if not ID_PATTERN.match(value):
        return ["use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"]
    return []


def check_polygon(points: tuple[tuple[float, float], ...]) -> list[str]:
    """A polygon must be a real shape: three distinct points in range and a non-zero area."""
    if not points:
        return []
    problems = [
        f"point {i} ({lat}, {lon}) is out of range"
        for i, (lat, lon) in enumerate(points)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180)
    ]
    ring = list(points[:-1] if len(points) > 1 and points[0] == points[-1] else points)
    if len(set(ring)) < 3:
        problems.append("a polygon needs at least three distinct points")
    elif abs(_area(ring)) < 1e-12:
        problems.append("the points lie on one line; the polygon has no area")
    return problems


def check_community(community: Community, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "id", check_id(community.id))
    if community.subdistrict != registry.subdistrict.id:
        _add(errors, "subdistrict", [f"unknown sub-district {community.subdistrict!r}"])
    return errors


def check_cell(cell: GridCell, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "id", check_id(cell.id))
    if cell.community not in registry.communities:
        _add(errors, "community", [f"unknown community {cell.community!r}"])
    if cell.centroid is not None:
        lat, lon = cell.centroid
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            _add(errors, "centroid", [f"({lat}, {lon}) is out of range"])
    _add(errors, "polygon", check_polygon(cell.polygon))
    _add(errors, "adjacent", _unknown(cell.adjacent, registry.cells, "grid cell", cell.id))
    if cell.id in cell.adjacent:
        _add(errors, "adjacent", ["a cell is not adjacent to itself"])
    return errors


def check_building(building: Building, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "id", check_id(building.id))
    if building.cell not in registry.cells:
        _add(errors, "cell", [f"unknown grid cell {building.cell!r}"])
    return errors


def check_department(department: Department, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "id", check_id(department.id))
    _add(errors, "categories", _unknown(department.categories, registry.categories, "category"))
    _add(errors, "communities", _unknown(department.communities, registry.communities, "community"))
    _add(errors, "cells", _unknown(department.cells, registry.cells, "grid cell"))
    return errors


def check_worker(worker: GridWorker, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "id", check_id(worker.id))
    if not worker.cells:
        _add(errors, "cells", ["a grid worker serves at least one cell"])
    _add(errors, "cells", _unknown(worker.cells, registry.cells, "grid cell"))
    return errors


def check_category(category: Category, registry: Registry) -> Errors:
    errors: Errors = {}
    _add(errors, "code", check_id(category.code))
    if category.urgency not in URGENCY_TIERS:
        _add(errors, "urgency", [f"unknown urgency {category.urgency!r}"])
    if category.department not in registry.departments:
        _add(errors, "department", [f"unknown department {category.department!r}"])
    return errors


# -- the seed -------------------------------------------------------------------------


def build(
    subdistrict: Subdistrict,
    *,
    communities: Iterable[Community],
    cells: Iterable[GridCell],
    departments: Iterable[Department],
    categories: Iterable[Category],
    buildings: Iterable[Building] = (),
    workers: Iterable[GridWorker] = (),
) -> Seed:
    """Check a whole registry and make adjacency symmetric, or raise every problem at once.

    A seed names each neighbour once (``qy-01`` adjacent to ``qy-02`` is
    enough); the other direction is added here. Errors are keyed by entry
    path (``cells.qy-01.adjacent``) so a broken seed file says where.
    """
    errors: Errors = {}
    community_map = _unique("communities", communities, lambda c: c.id, errors)
    cell_map = _unique("cells", cells, lambda c: c.id, errors)
    cell_map = _symmetric(cell_map)
    registry = Registry(
        subdistrict=subdistrict,
        communities=community_map,
        cells=cell_map,
        departments=_unique("departments", departments, lambda d: d.id, errors),
        categories=_unique("categories", categories, lambda c: c.code, errors),
    )
    building_map = _unique("buildings", buildings, lambda b: b.id, errors)
    worker_map = _unique("grid_workers", workers, lambda w: w.id, errors)
    checks: list[tuple[str, Mapping[str, Any], Any]] = [
        ("communities", registry.communities, check_community),
        ("cells", registry.cells, check_cell),
        ("departments", registry.departments, check_department),
        ("categories", registry.categories, check_category),
        ("buildings", building_map, check_building),
        ("grid_workers", worker_map, check_worker),
    ]
    for kind, entries, check in checks:
        for key, entry in entries.items():
            for name, messages in check(entry, registry).items():
                _add(errors, f"{kind}.{key}.{name}", messages)
    if errors:
        raise RegistryInvalid(errors)
    return Seed(
        registry=registry,
        buildings=tuple(placed_building(b, registry) for b in building_map.values()),
        workers=tuple(placed_worker(w, registry) for w in worker_map.values()),
    )


# -- edits: each returns what to store, or raises ------------------------------------

KINDS = ("communities", "cells", "buildings", "departments", "grid-workers", "categories")

#: What one entry of each kind is called in messages.
NOUNS = {
    "communities": "community",
    "cells": "grid cell",
    "buildings": "building",
    "departments": "department",
    "grid-workers": "grid worker",
    "categories": "category",
}

ENTRY_TYPES: dict[str, type] = {
    "communities": Community,
    "cells": GridCell,
    "buildings": Building,
    "departments": Department,
    "grid-workers": GridWorker,
    "categories": Category,
}

CHECKS: dict[str, Callable[[Any, Registry], Errors]] = {
    "communities": check_community,
    "cells": check_cell,
    "buildings": check_building,
    "departments": check_department,
    "grid-workers": check_worker,
    "categories": check_category,
}


def create(registry: Registry, kind: str, values: Mapping[str, Any]) -> Any:
    """A new entry of ``kind`` checked against ``registry``: what the store writes.

    A cell comes back as a ``CellEdit`` (its neighbours gain it). Buildings and
    grid workers are not in ``Registry``; their duplicates are the store's to
    catch.
    """
    if kind == "communities":
        values = {**values, "subdistrict": registry.subdistrict.id}
    entry = ENTRY_TYPES[kind](**values)
    known = _held(registry, kind)
    if known is not None and _key(entry) in known:
        raise DuplicateId(f"{NOUNS[kind]} {_key(entry)!r} exists already")
    return _checked(registry, kind, entry, previous=None)


def change(registry: Registry, kind: str, current: Any, values: Mapping[str, Any]) -> Any:
    """``current`` with ``values`` applied, checked; ``active: False`` retires a category."""
    return _checked(registry, kind, replace(current, **values), previous=current)


def _checked(registry: Registry, kind: str, entry: Any, previous: Any) -> Any:
    _raise_if(CHECKS[kind](entry, registry))
    if kind == "cells":
        before = set(previous.adjacent) if previous is not None else set()
        return CellEdit(
            entry,
            link=tuple(sorted(set(entry.adjacent) - before)),
            unlink=tuple(sorted(before - set(entry.adjacent))),
        )
    if kind == "buildings":
        return placed_building(entry, registry)
    if kind == "grid-workers":
        return placed_worker(entry, registry)
    return entry


def placed_building(building: Building, registry: Registry) -> Building:
    return replace(building, community=registry.cells[building.cell].community)


def placed_worker(worker: GridWorker, registry: Registry) -> GridWorker:
    communities = sorted({registry.cells[cell].community for cell in worker.cells})
    return replace(worker, communities=tuple(communities))


def in_communities(kind: str, entry: Any, communities: Iterable[str]) -> bool:
    """Whether a community's staff may read the entry: their own places, and every
    department and category (those are the sub-district's, not a community's)."""
    mine = set(communities)
    if kind == "communities":
        return bool(entry.id in mine)
    if kind in ("cells", "buildings"):
        return bool(entry.community in mine)
    if kind == "grid-workers":
        return bool(mine & set(entry.communities))
    return True


# -- questions the rest of the service asks --------------------------------------------


def require_department(departments: Mapping[str, Department], department: str) -> Department:
    """A dispatch must name a department the registry knows (a typo would strand the case)."""
    found = departments.get(department)
    if found is None:
        raise UnknownDepartment(f"unknown department {department!r}")
    return found


def departments_for(registry: Registry, category: str, cell: str) -> list[Department]:
    """Departments that handle ``category`` and serve ``cell``: the dispatch candidates."""
    found = registry.cells.get(cell)
    if found is None:
        return []
    return [d for d in registry.departments.values() if d.handles(category) and d.serves(found)]


# -- helpers ---------------------------------------------------------------------------


def _add(errors: Errors, key: str, messages: list[str]) -> None:
    if messages:
        errors.setdefault(key, []).extend(messages)


def _raise_if(errors: Errors) -> None:
    if errors:
        raise RegistryInvalid(errors)


def _key(entry: Any) -> str:
    return str(entry.code if isinstance(entry, Category) else entry.id)


def _held(registry: Registry, kind: str) -> Mapping[str, Any] | None:
    held: dict[str, Mapping[str, Any]] = {
        "communities": registry.communities,
        "cells": registry.cells,
        "departments": registry.departments,
        "categories": registry.categories,
    }
    return held.get(kind)


def _unknown(
    ids: Iterable[str], known: Mapping[str, Any], what: str, creating: str | None = None
) -> list[str]:
    return [f"unknown {what} {i!r}" for i in ids if i not in known and i != creating]


def _unique(kind: str, entries: Iterable[Any], key: Any, errors: Errors) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in entries:
        if key(entry) in found:
            _add(errors, f"{kind}.{key(entry)}", ["defined twice"])
        found[key(entry)] = entry
    return found


def _symmetric(cells: Mapping[str, GridCell]) -> dict[str, GridCell]:
    neighbours: dict[str, set[str]] = {cell_id: set(c.adjacent) for cell_id, c in cells.items()}
    for cell_id, cell in cells.items():
        for other in cell.adjacent:
            if other in neighbours and other != cell_id:
                neighbours[other].add(cell_id)
    return {
        cell_id: replace(cell, adjacent=tuple(sorted(neighbours[cell_id])))
        for cell_id, cell in cells.items()
    }


def _area(ring: list[tuple[float, float]]) -> float:
    """Twice the signed area (shoelace); zero means the points are collinear."""
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:] + ring[:1], strict=True))
