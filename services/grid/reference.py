"""Reference data provider: categories and grid cells loaded from YAML at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from nameko.extensions import DependencyProvider

from shequ_services.grid.deadlines import Policy, parse_policy
from shequ_services.grid.domain import Category, GridCell, parse_categories, parse_cells
from shequ_services.grid.open311 import Attribute, cell_centroids, parse_questions

HERE = Path(__file__).parent


@dataclass(frozen=True)
class ReferenceData:
    categories: dict[str, Category]
    cells: dict[str, GridCell]
    policy: Policy
    questions: dict[str, list[Attribute]] = field(default_factory=dict)
    centroids: dict[str, tuple[float, float]] = field(default_factory=dict)


class Reference(DependencyProvider):
    """Reads the categories, registry and time-limit policy files once per process."""

    def setup(self) -> None:
        config = self.container.config
        categories_file = Path(config.get("GRID_CATEGORIES_FILE") or HERE / "categories.yaml")
        registry_file = Path(config.get("GRID_REGISTRY_FILE") or HERE / "registry.yaml")
        policy_file = Path(config.get("GRID_POLICY_FILE") or HERE / "policy.yaml")
        questions_file = Path(config.get("GRID_QUESTIONS_FILE") or HERE / "questions.yaml")
        registry = _read(registry_file)
        self.data = ReferenceData(
            categories=parse_categories(_read(categories_file)),
            cells=parse_cells(registry),
            policy=parse_policy(_read(policy_file)),
            questions=parse_questions(_read(questions_file)),
            centroids=cell_centroids(registry),
        )

    def get_dependency(self, worker_ctx: Any) -> ReferenceData:
        return self.data


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)
