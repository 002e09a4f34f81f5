"""Ranking volunteers for a task: a pure function over a prebuilt index.

The rules, in order of weight (a lexicographic key, so each rule only breaks
ties of the ones before it and the order is explainable to a volunteer):

1. **skill fit**: how many of the task's skills the volunteer has (confirmed by
   an organisation); a task that names skills excludes volunteers with none;
2. **distance**: the task's own cell first, then its adjacent cells (nobody
   farther is asked: a visit is on foot);
3. **availability now**: inside one of their weekly windows (local time);
4. **fairness**: fewer recently accepted tasks first;
5. the volunteer id, so equal candidates always come out in the same order.

Never ranked: volunteers who are inactive, have not consented to be contacted,
lack the task's language, live in the household the task is about, or are
explicitly excluded (already offered this task).

``VolunteerIndex`` groups volunteers by cell once, so ranking touches only the
volunteers of the task's cell and its neighbours, not the whole district.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, time

from shequ_services.volunteer.domain import Volunteer


@dataclass(frozen=True)
class Need:
    """What a task asks of a volunteer and where."""

    grid_cell: str
    skills: frozenset[str] = frozenset()
    language: str | None = None
    household_id: str | None = None


@dataclass(frozen=True)
class Candidate:
    volunteer_id: str
    fit: int
    distance: int
    available: bool
    load: int


@dataclass(frozen=True)
class _Entry:
    """A volunteer reduced to what ranking reads, computed once when the index is built."""

    id: str
    household_id: str | None
    skills: frozenset[str]
    languages: frozenset[str]
    windows: tuple[tuple[tuple[time, time], ...], ...]  # by weekday, Monday first


class Adjacency:
    """Cell neighbours, made symmetric: a cell that names another is its neighbour both ways."""

    def __init__(self, pairs: Mapping[str, Iterable[str]]) -> None:
        neighbours: dict[str, set[str]] = {}
        for cell, adjacent in pairs.items():
            neighbours.setdefault(cell, set())
            for other in adjacent:
                neighbours[cell].add(other)
                neighbours.setdefault(other, set()).add(cell)
        self._neighbours = {cell: frozenset(n - {cell}) for cell, n in neighbours.items()}

    def __contains__(self, cell: object) -> bool:
        return cell in self._neighbours

    def cells(self) -> frozenset[str]:
        return frozenset(self._neighbours)

    def of(self, cell: str) -> frozenset[str]:
        return self._neighbours.get(cell, frozenset())

    def scope(self, cell: str) -> frozenset[str]:
        """The cells whose volunteers a task in ``cell`` may be offered to."""
        return self.of(cell) | {cell}


class VolunteerIndex:
    """The volunteers who may be asked at all, by home cell and by (cell, skill).

    Built once per process and kept current with ``put`` (a changed or new
    volunteer) so that ranking a task reads only the volunteers of its cell
    and its neighbours, and for a task that names skills only those of them
    who have one.
    """

    def __init__(self, volunteers: Iterable[Volunteer] = ()) -> None:
        self.by_cell: dict[str, dict[str, _Entry]] = {}
        self.by_skill: dict[tuple[str, str], set[str]] = {}
        self._cell_of: dict[str, str] = {}
        for volunteer in volunteers:
            self.put(volunteer)

    @property
    def size(self) -> int:
        return len(self._cell_of)

    def put(self, volunteer: Volunteer) -> None:
        """Add, replace or (when inactive or without consent) drop one volunteer."""
        self._drop(volunteer.id)
        if not (volunteer.active and volunteer.consent_to_contact):
            return
        days: list[list[tuple[time, time]]] = [[] for _ in range(7)]
        for window in volunteer.windows:
            days[window.weekday].append((window.start, window.end))
        entry = _Entry(
            volunteer.id,
            volunteer.household_id,
            volunteer.skill_codes,
            frozenset(volunteer.languages),
            tuple(tuple(day) for day in days),
        )
        self.by_cell.setdefault(volunteer.home_cell, {})[volunteer.id] = entry
        for skill in entry.skills:
            self.by_skill.setdefault((volunteer.home_cell, skill), set()).add(volunteer.id)
        self._cell_of[volunteer.id] = volunteer.home_cell

    def _drop(self, volunteer_id: str) -> None:
        cell = self._cell_of.pop(volunteer_id, None)
        if cell is None:
            return
        entry = self.by_cell[cell].pop(volunteer_id)
        for skill in entry.skills:
            self.by_skill[(cell, skill)].discard(volunteer_id)

    def matching(self, cell: str, skills: frozenset[str]) -> Iterator[tuple[_Entry, int]]:
        """The cell's volunteers with their skill fit; with skills named, only those with one."""
        entries = self.by_cell.get(cell, {})
        if not skills:
            for entry in entries.values():
                yield entry, 0
            return
        fits: dict[str, int] = {}
        for skill in skills:
            for volunteer_id in self.by_skill.get((cell, skill), ()):
                fits[volunteer_id] = fits.get(volunteer_id, 0) + 1
        for volunteer_id, fit in fits.items():
            yield entries[volunteer_id], fit


def available_at(windows: Iterable[tuple[time, time]], moment: time) -> bool:
    return any(start <= moment < end for start, end in windows)


def rank(
    need: Need,
    index: VolunteerIndex,
    adjacency: Adjacency,
    *,
    now_local: datetime,
    loads: Mapping[str, int],
    exclude: Iterable[str] = (),
    limit: int = 20,
) -> list[Candidate]:
    """The best ``limit`` candidates for ``need``, best first (see the module doc).

    The task's own cell is read first; its neighbours only when it has fewer
    than ``limit`` candidates of the best possible fit, since nobody farther
    away can outrank those.
    """
    excluded = set(exclude)
    weekday, moment = now_local.weekday(), now_local.time()
    best_fit = len(need.skills)
    keyed: list[tuple[int, int, int, int, str]] = []
    tiers = ((0, (need.grid_cell,)), (1, tuple(sorted(adjacency.of(need.grid_cell)))))
    for distance, cells in tiers:
        for cell in cells:
            for entry, fit in index.matching(cell, need.skills):
                if entry.id in excluded:
                    continue
                if need.household_id is not None and entry.household_id == need.household_id:
                    continue
                if need.language is not None and need.language not in entry.languages:
                    continue
                busy = 0 if available_at(entry.windows[weekday], moment) else 1
                keyed.append((-fit, distance, busy, loads.get(entry.id, 0), entry.id))
        if sum(1 for key in keyed if -key[0] == best_fit) >= limit:
            break
    return [
        Candidate(volunteer_id, -fit, distance, busy == 0, load)
        for fit, distance, busy, load, volunteer_id in heapq.nsmallest(limit, keyed)
    ]
