"""The mediation policy (time limits) as a provider: read once, in ``setup()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from nameko.extensions import DependencyProvider

from shequ_services.mediation.domain import Policy

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


def load_policy(path: Path | str | None = None) -> Policy:
    with open(path or DEFAULT_POLICY, encoding="utf-8") as handle:
        return Policy.from_mapping(yaml.safe_load(handle) or {})


class PolicyProvider(DependencyProvider):
    def setup(self) -> None:
        self.policy = load_policy(self.container.config.get("MEDIATION_POLICY_FILE") or None)

    def get_dependency(self, worker_ctx: Any) -> Policy:
        return self.policy
