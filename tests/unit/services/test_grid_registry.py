"""The registry model and its seed loader: references, symmetric adjacency, polygons, edits."""

from pathlib import Path

import pytest
import yaml

from shequ_services.grid import registry
from shequ_services.grid.domain import Category, GridCell
from shequ_services.grid.reference import load_seed

HERE = Path(registry.__file__).parent
SEED = load_seed(HERE / "registry.yaml", HERE / "categories.yaml")
REGISTRY = SEED.registry
SUB = registry.Subdistrict("sd", "测试街道")
SQUARE = ((30.0, 120.0), (30.0, 120.01), (30.01, 120.01), (30.01, 120.0))


def small(**overrides: object) -> registry.Seed:
    parts: dict[str, object] = {
        "communities": [registry.Community("c1", "一社区", "sd")],
        "cells": [
            GridCell("a", "甲", "c1", adjacent=("b",)),
            GridCell("b", "乙", "c1"),
            GridCell("c", "丙", "c1"),
        ],
        "departments": [registry.Department("dept", "部门", "Dept", categories=("cat",))],
        "categories": [Category("cat", "类", "Cat", "simple", "dept")],
    }
    parts.update(overrides)
    return registry.build(SUB, **parts)  # type: ignore[arg-type]


def errors_of(**overrides: object) -> dict[str, list[str]]:
    with pytest.raises(registry.RegistryInvalid) as caught:
        small(**overrides)
    return caught.value.errors


def test_the_shipped_seed_keeps_the_cell_ids_tests_and_the_demo_use() -> None:
    assert {"qy-01", "qy-02", "qy-03", "ls-01", "ls-02"} <= set(REGISTRY.cells)
    assert REGISTRY.cells["ls-02"].community == "hx-liushu"
    assert REGISTRY.communities["hx-qingyuan"].name == "清源社区"
    assert all(cell.centroid is not None for cell in REGISTRY.cells.values())


def test_the_shipped_seed_has_a_department_for_every_category() -> None:
    used = {category.department for category in REGISTRY.categories.values()}
    assert used <= set(REGISTRY.departments)
    assert {"municipal", "city_management", "health", "police"} <= set(REGISTRY.departments)


def test_the_shipped_seed_has_buildings_and_grid_workers_placed_in_communities() -> None:
    assert {b.community for b in SEED.buildings} >= {"hx-qingyuan", "hx-liushu"}
    worker = next(w for w in SEED.workers if w.id == "gw-qy-001")
    assert worker.communities == ("hx-qingyuan",)


def test_adjacency_named_once_is_made_symmetric() -> None:
    cells = small().registry.cells
    assert cells["a"].adjacent == ("b",)
    assert cells["b"].adjacent == ("a",)
    assert cells["c"].adjacent == ()
    shipped = REGISTRY.cells
    assert all(c.id in shipped[n].adjacent for c in shipped.values() for n in c.adjacent)


def test_an_unknown_adjacent_cell_is_named_in_the_error() -> None:
    errors = errors_of(cells=[GridCell("a", "甲", "c1", adjacent=("zz",))])
    assert errors == {"cells.a.adjacent": ["unknown grid cell 'zz'"]}


def test_a_cell_is_not_adjacent_to_itself() -> None:
    errors = errors_of(cells=[GridCell("a", "甲", "c1", adjacent=("a",))])
    assert errors["cells.a.adjacent"] == ["a cell is not adjacent to itself"]


def test_duplicate_ids_are_refused() -> None:
    errors = errors_of(cells=[GridCell("a", "甲", "c1"), GridCell("a", "甲二", "c1")])
    assert errors == {"cells.a": ["defined twice"]}


def test_a_cell_of_an_unknown_community_is_refused() -> None:
    errors = errors_of(cells=[GridCell("a", "甲", "nowhere")])
    assert errors == {"cells.a.community": ["unknown community 'nowhere'"]}


def test_a_category_needs_a_known_department() -> None:
    errors = errors_of(categories=[Category("cat", "类", "Cat", "simple", "ghosts")])
    assert errors == {"categories.cat.department": ["unknown department 'ghosts'"]}


def test_a_department_names_known_categories_and_places() -> None:
    errors = errors_of(
        departments=[registry.Department("dept", "部门", "Dept", ("nope",), ("c9",), ("z",))],
        categories=[],
    )
    assert set(errors) == {
        "departments.dept.categories",
        "departments.dept.communities",
        "departments.dept.cells",
    }


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        (((30.0, 120.0), (30.0, 120.01)), "at least three distinct points"),
        (((30.0, 120.0), (30.0, 120.01), (30.0, 120.02)), "no area"),
        (((30.0, 120.0), (95.0, 120.01), (30.01, 120.0)), "out of range"),
    ],
)
def test_a_polygon_must_be_a_real_shape(
    polygon: tuple[tuple[float, float], ...], message: str
) -> None:
    assert message in " ".join(registry.check_polygon(polygon))


def test_a_closed_ring_and_an_open_one_are_both_a_polygon() -> None:
    assert registry.check_polygon(SQUARE) == []
    assert registry.check_polygon((*SQUARE, SQUARE[0])) == []


def test_a_new_cell_links_its_neighbours() -> None:
    edit = registry.create(
        small().registry, "cells", {"id": "d", "name": "丁", "community": "c1", "adjacent": ("c",)}
    )
    assert edit == registry.CellEdit(GridCell("d", "丁", "c1", adjacent=("c",)), link=("c",))


def test_a_changed_cell_unlinks_the_neighbours_it_dropped() -> None:
    base = small().registry
    edit = registry.change(base, "cells", base.cells["a"], {"adjacent": ("c",)})
    assert (edit.link, edit.unlink) == (("c",), ("b",))


def test_creating_an_existing_id_is_a_duplicate() -> None:
    with pytest.raises(registry.DuplicateId):
        registry.create(small().registry, "communities", {"id": "c1", "name": "又一个"})


def test_a_new_community_belongs_to_the_subdistrict() -> None:
    made = registry.create(small().registry, "communities", {"id": "c2", "name": "二社区"})
    assert made == registry.Community("c2", "二社区", "sd")


def test_retiring_a_category_is_a_change_of_active() -> None:
    base = small().registry
    retired = registry.change(base, "categories", base.categories["cat"], {"active": False})
    assert retired.active is False and retired.code == "cat"


def test_a_grid_worker_is_placed_in_the_communities_of_their_cells() -> None:
    worker = registry.create(
        small().registry, "grid-workers", {"id": "gw", "name": "王", "cells": ("a", "b")}
    )
    assert worker.communities == ("c1",)


def test_a_grid_worker_without_cells_is_refused() -> None:
    with pytest.raises(registry.RegistryInvalid) as caught:
        registry.create(small().registry, "grid-workers", {"id": "gw", "name": "王", "cells": ()})
    assert "cells" in caught.value.errors


def test_an_invalid_id_is_refused_with_the_rule() -> None:
    with pytest.raises(registry.RegistryInvalid) as caught:
        registry.create(small().registry, "communities", {"id": "Bad Id", "name": "x"})
    assert list(caught.value.errors) == ["id"]


def test_a_dispatch_to_an_unknown_department_is_refused() -> None:
    assert registry.require_department(REGISTRY.departments, "municipal").id == "municipal"
    with pytest.raises(registry.UnknownDepartment, match="'ghosts'"):
        registry.require_department(REGISTRY.departments, "ghosts")


def test_dispatch_candidates_handle_the_category_and_serve_the_cell() -> None:
    in_qingyuan = {d.id for d in registry.departments_for(REGISTRY, "facility_damaged", "qy-01")}
    in_guihua = {d.id for d in registry.departments_for(REGISTRY, "facility_damaged", "gh-01")}
    assert in_qingyuan == {"municipal", "property_management", "water_supply"}
    assert in_guihua == {"municipal", "water_supply"}


def test_community_staff_read_their_places_and_every_department() -> None:
    cell = REGISTRY.cells["ls-01"]
    assert registry.in_communities("cells", cell, ["hx-liushu"])
    assert not registry.in_communities("cells", cell, ["hx-qingyuan"])
    assert registry.in_communities("departments", REGISTRY.departments["police"], [])


def test_a_seed_file_with_an_unknown_field_stops_the_service(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "registry.yaml").read_text())
    raw["communities"][0]["cells"][0]["colour"] = "blue"
    broken = tmp_path / "registry.yaml"
    broken.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ValueError, match="colour"):
        load_seed(broken, HERE / "categories.yaml")


def test_a_seed_file_with_a_dangling_reference_names_the_entry(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "registry.yaml").read_text())
    raw["grid_workers"][0]["cells"] = ["qy-99"]
    broken = tmp_path / "registry.yaml"
    broken.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ValueError, match=r"grid_workers\.gw-qy-001\.cells"):
        load_seed(broken, HERE / "categories.yaml")
