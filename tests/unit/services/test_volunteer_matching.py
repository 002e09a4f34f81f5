"""Ranking rules on a fixture: skill fit, distance, availability, fairness, exclusions."""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from shequ_services.volunteer.domain import Skill, Volunteer, Window
from shequ_services.volunteer.matching import Adjacency, Need, VolunteerIndex, rank

TZ = ZoneInfo("Asia/Shanghai")
#: A Monday, 10:00 local.
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=TZ)
ADJACENCY = Adjacency({"a": ["b"], "b": ["c"], "c": []})
MORNINGS = (Window(0, time(9), time(12)),)


def volunteer(vid: str, cell: str, *skills: str, **extra: object) -> Volunteer:
    values: dict[str, object] = {
        "community": "c1",
        "home_cell": cell,
        "name": "某某",
        "phone": "13900000000",
        "skills": tuple(Skill(code, "居委会") for code in skills),
        "consent_to_contact": True,
    }
    values.update(extra)
    return Volunteer(id=vid, **values)  # type: ignore[arg-type]


def ranked(volunteers: list[Volunteer], need: Need, **kwargs: object) -> list[str]:
    found = rank(
        need, VolunteerIndex(volunteers), ADJACENCY, now_local=MONDAY_10,
        loads=kwargs.pop("loads", {}), **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return [c.volunteer_id for c in found]


def test_the_same_cell_comes_before_an_adjacent_one_and_farther_cells_are_not_asked() -> None:
    people = [volunteer("v-b", "b"), volunteer("v-a", "a"), volunteer("v-c", "c")]
    assert ranked(people, Need("a")) == ["v-a", "v-b"]


def test_adjacency_is_symmetric_even_when_named_once() -> None:
    people = [volunteer("v-a", "a"), volunteer("v-c", "c"), volunteer("v-b", "b")]
    assert ranked(people, Need("c")) == ["v-c", "v-b"]


def test_skill_fit_outweighs_distance_and_no_fit_at_all_is_excluded() -> None:
    people = [
        volunteer("v-near-none", "a"),
        volunteer("v-near-one", "a", "visiting"),
        volunteer("v-far-both", "b", "visiting", "legal_aid"),
    ]
    need = Need("a", skills=frozenset({"visiting", "legal_aid"}))
    assert ranked(people, need) == ["v-far-both", "v-near-one"]


def test_someone_available_now_comes_before_someone_who_is_not() -> None:
    people = [volunteer("v-1", "a"), volunteer("v-2", "a", windows=MORNINGS)]
    assert ranked(people, Need("a")) == ["v-2", "v-1"]
    evening = MONDAY_10.replace(hour=19)
    found = rank(Need("a"), VolunteerIndex(people), ADJACENCY, now_local=evening, loads={})
    assert [c.volunteer_id for c in found] == ["v-1", "v-2"]


def test_fewer_recent_tasks_come_first_among_equals() -> None:
    people = [volunteer("v-1", "a"), volunteer("v-2", "a"), volunteer("v-3", "a")]
    assert ranked(people, Need("a"), loads={"v-1": 4, "v-2": 1}) == ["v-3", "v-2", "v-1"]


def test_availability_outweighs_load() -> None:
    people = [volunteer("v-busy", "a", windows=MORNINGS), volunteer("v-idle", "a")]
    assert ranked(people, Need("a"), loads={"v-busy": 9}) == ["v-busy", "v-idle"]


def test_nobody_is_asked_to_visit_their_own_household() -> None:
    people = [volunteer("v-home", "a", household_id="hh-1"), volunteer("v-other", "a")]
    assert ranked(people, Need("a", household_id="hh-1")) == ["v-other"]


def test_no_consent_inactive_wrong_language_and_excluded_volunteers_are_not_ranked() -> None:
    people = [
        volunteer("v-ok", "a", languages=("zh", "en")),
        volunteer("v-no-consent", "a", consent_to_contact=False, languages=("en",)),
        volunteer("v-inactive", "a", active=False, languages=("en",)),
        volunteer("v-zh-only", "a"),
        volunteer("v-asked", "a", languages=("en",)),
    ]
    assert ranked(people, Need("a", language="en"), exclude={"v-asked"}) == ["v-ok"]


def test_the_limit_keeps_the_best_and_equal_candidates_come_in_id_order() -> None:
    people = [volunteer(f"v-{n:02d}", "a") for n in range(30, 0, -1)]
    assert ranked(people, Need("a"), limit=3) == ["v-01", "v-02", "v-03"]


def test_the_volunteer_cell_copy_agrees_with_the_grid_registry(repo_root: Path) -> None:
    grid = yaml.safe_load((repo_root / "services/grid/registry.yaml").read_text("utf-8"))
    grid_pairs = {
        cell["id"]: cell.get("adjacent", [])
        for community in grid["communities"]
        for cell in community["cells"]
    }
    ours = yaml.safe_load((repo_root / "services/volunteer/cells.yaml").read_text("utf-8"))
    mine, theirs = Adjacency(ours["cells"]), Adjacency(grid_pairs)
    assert mine.cells() == theirs.cells()
    assert all(mine.of(cell) == theirs.of(cell) for cell in mine.cells())


def test_putting_a_changed_volunteer_moves_them_and_withdrawing_consent_drops_them() -> None:
    index = VolunteerIndex([volunteer("v-1", "a", "visiting"), volunteer("v-2", "a")])
    index.put(volunteer("v-1", "c", "visiting"))
    index.put(volunteer("v-2", "a", consent_to_contact=False))
    need = Need("a", skills=frozenset({"visiting"}))
    assert rank(need, index, ADJACENCY, now_local=MONDAY_10, loads={}) == []
    assert [c.volunteer_id for c in rank(Need("c"), index, ADJACENCY, now_local=MONDAY_10,
                                         loads={})] == ["v-1"]  # fmt: skip
    assert index.size == 1


def test_neighbours_fill_the_list_when_the_cell_has_too_few() -> None:
    people = [volunteer(f"v-a{n}", "a") for n in range(2)] + [volunteer("v-b0", "b")]
    assert ranked(people, Need("a"), limit=2) == ["v-a0", "v-a1"]
    assert ranked(people, Need("a"), limit=3) == ["v-a0", "v-a1", "v-b0"]
