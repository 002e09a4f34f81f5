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
from collections.abc import Iterable, Mapping
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
    """The volunteers who may be asked at all, grouped by home cell."""

    def __init__(self, volunteers: Iterable[Volunteer]) -> None:
        self.by_cell: dict[str, list[_Entry]] = {}
        self.size = 0
        for volunteer in volunteers:
            if not (volunteer.active and volunteer.consent_to_contact):
                continue
            days: list[list[tuple[time, time]]] = [[] for _ in range(7)]
            for window in volunteer.windows:
                days[window.weekday].append((window.start, window.end))
            self.by_cell.setdefault(volunteer.home_cell, []).append(
                _Entry(
                    volunteer.id,
                    volunteer.household_id,
                    volunteer.skill_codes,
                    frozenset(volunteer.languages),
                    tuple(tuple(day) for day in days),
                )
            )
            self.size += 1


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
    """The best ``limit`` candidates for ``need``, best first (see the module doc)."""
    excluded = set(exclude)
    weekday, moment = now_local.weekday(), now_local.time()
    keyed: list[tuple[tuple[int, int, int, int, str], Candidate]] = []
    cells = [(need.grid_cell, 0)] + [(cell, 1) for cell in sorted(adjacency.of(need.grid_cell))]
    for cell, distance in cells:
        for entry in index.by_cell.get(cell, ()):
            if entry.id in excluded:
                continue
            if need.household_id is not None and entry.household_id == need.household_id:
                continue
            if need.language is not None and need.language not in entry.languages:
                continue
            fit = len(need.skills & entry.skills) if need.skills else 0
            if need.skills and fit == 0:
                continue
            available = available_at(entry.windows[weekday], moment)
            load = loads.get(entry.id, 0)
            candidate = Candidate(entry.id, fit, distance, available, load)
            keyed.append(((-fit, distance, 0 if available else 1, load, entry.id), candidate))
    return [candidate for _, candidate in heapq.nsmallest(limit, keyed, key=lambda k: k[0])]
