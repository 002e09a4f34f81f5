"""How long ranking volunteers for one task takes with 10,000 volunteers in a district.

Run: ``make bench-volunteer`` (or ``.venv/bin/python bench/volunteer_matching.py``).

Synthetic volunteers (fixed seed) with 1 to 3 skills, 0 to 3 weekly windows,
a household each, and a recent-load figure each; tasks in random cells asking
for 0 to 2 skills, a third of them about a household. Three layouts of the
same 10,000 volunteers: a district (1,000 cells), one sub-district (120 cells,
about 83 volunteers a cell) and the worst case, one community (13 cells, about
770 a cell). Per task it measures ``matching.rank`` against the district index, built
once as the service builds it once per process (and keeps current with
``put``); the service's database reads per task (the recent loads) are not
part of this figure.

Figures are wall-clock per task on this machine (median and 95th percentile),
also written to ``bench/results/volunteer.json`` for ``bench/fanout.py`` to merge.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from shequ_services.volunteer.domain import Skill, Volunteer, Window
from shequ_services.volunteer.matching import Adjacency, Need, VolunteerIndex, rank

VOLUNTEERS = 10_000
TASKS = 2_000
SKILLS = ("visiting", "cleaning", "legal_aid", "counselling", "first_aid", "tutoring", "repair")
TARGET_MS = 20.0
RESULTS = Path(__file__).resolve().parent / "results" / "volunteer.json"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def grid_adjacency(cells: int) -> tuple[list[str], Adjacency]:
    """Cells on a square-ish grid, each adjacent to its right and lower neighbour."""
    width = max(1, round(cells**0.5))
    ids = [f"c{n:04d}" for n in range(cells)]
    pairs = {
        ids[n]: [ids[m] for m in (n + 1, n + width) if m < cells and (m != n + 1 or m % width)]
        for n in range(cells)
    }
    return ids, Adjacency(pairs)


def volunteers(rng: random.Random, cells: list[str]) -> list[Volunteer]:
    people = []
    for n in range(VOLUNTEERS):
        windows = tuple(
            Window(rng.randrange(7), clock(h), clock(h + rng.randint(2, 4)))
            for h in (rng.randint(7, 18) for _ in range(rng.randint(0, 3)))
        )
        people.append(
            Volunteer(
                id=f"v{n:05d}",
                community="c",
                home_cell=rng.choice(cells),
                name="",
                phone="",
                household_id=f"h{rng.randrange(VOLUNTEERS // 2):05d}",
                skills=tuple(Skill(s, "org") for s in rng.sample(SKILLS, rng.randint(1, 3))),
                languages=("zh",) if rng.random() < 0.9 else ("zh", "en"),
                windows=windows,
                consent_to_contact=rng.random() < 0.95,
                active=rng.random() < 0.97,
            )
        )
    return people


def needs(rng: random.Random, cells: list[str]) -> list[Need]:
    return [
        Need(
            grid_cell=rng.choice(cells),
            skills=frozenset(rng.sample(SKILLS, rng.randint(0, 2))),
            household_id=f"h{rng.randrange(VOLUNTEERS // 2):05d}" if rng.random() < 0.3 else None,
        )
        for _ in range(TASKS)
    ]


def per_task_ms(work: list[float]) -> tuple[float, float]:
    ordered = sorted(work)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95)] * 1000


def measure(label: str, cells: int) -> dict[str, float]:
    rng = random.Random(cells)
    ids, adjacency = grid_adjacency(cells)
    people = volunteers(rng, ids)
    loads = {v.id: rng.randint(0, 6) for v in people}
    started = time.perf_counter()
    index = VolunteerIndex(people)
    build_ms = (time.perf_counter() - started) * 1000
    tasks = needs(rng, ids)

    ranked = []
    found = 0
    for need in tasks:
        started = time.perf_counter()
        found += len(rank(need, index, adjacency, now_local=NOW, loads=loads))
        ranked.append(time.perf_counter() - started)
    median, p95 = per_task_ms(ranked)
    print(
        f"{label:<26} index built once in {build_ms:6.1f} ms | per task: median {median:6.3f} ms,"
        f" p95 {p95:6.3f} ms, max {max(ranked) * 1000:6.3f} ms | {found / len(tasks):4.1f} ranked"
    )
    return {
        "cells": cells,
        "median_ms": round(median, 3),
        "p95_ms": round(p95, 3),
        "max_ms": round(max(ranked) * 1000, 3),
        "index_build_ms": round(build_ms, 1),
    }


def main() -> int:
    print(f"{VOLUNTEERS:,} volunteers, {TASKS:,} tasks per layout, Python {sys.version.split()[0]}")
    layouts = {
        "district": measure("district: 1,000 cells", 1000),
        "sub_district": measure("sub-district: 120 cells", 120),
        "community": measure("one community: 13 cells", 13),
    }
    worst = max(layout["p95_ms"] for layout in layouts.values())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "volunteers": VOLUNTEERS,
        "tasks_per_layout": TASKS,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "layouts": layouts,
        "worst_p95_ms": round(worst, 3),
        "target_ms": TARGET_MS,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    verdict = "within" if worst <= TARGET_MS else "OVER"
    print(f"worst p95 per task {worst:.3f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
