"""The registry of event types and their versioned payload schemas.

Each producing service's contract module registers its event types here at
import. The registry is what the outbox validates against before anything is
written, what consumers load with, and what the AsyncAPI export reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import marshmallow


@dataclass(frozen=True)
class EventSpec:
    """One event type at one payload version.

    ``service`` is the producing service (the exchange is
    ``<service>.events``), ``name`` is ``<entity>.<verb>`` (the routing key).
    """

    service: str
    name: str
    version: int
    schema: type[marshmallow.Schema]
    description: str

    @property
    def type(self) -> str:
        """The CloudEvents ``type``: ``shequ.<service>.<entity>.<verb>``."""
        return f"shequ.{self.service}.{self.name}"

    @property
    def dataschema(self) -> str:
        return f"urn:shequ:schema:{self.service}.{self.name}:v{self.version}"

    @property
    def exchange(self) -> str:
        return f"{self.service}.events"


class SchemaRegistry:
    """Event specs by (service, name, version)."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str, int], EventSpec] = {}

    def register(self, spec: EventSpec) -> EventSpec:
        key = (spec.service, spec.name, spec.version)
        if key in self._specs and self._specs[key] != spec:
            raise ValueError(f"event {spec.type} v{spec.version} is registered twice")
        self._specs[key] = spec
        return spec

    def get(self, service: str, name: str, version: int | None = None) -> EventSpec:
        """The spec for an event, its latest version when none is given."""
        if version is None:
            versions = [key[2] for key in self._specs if key[:2] == (service, name)]
            if not versions:
                raise KeyError(f"no event shequ.{service}.{name} is registered")
            version = max(versions)
        try:
            return self._specs[(service, name, version)]
        except KeyError:
            raise KeyError(f"no event shequ.{service}.{name} v{version} is registered") from None

    def by_dataschema(self, dataschema: str) -> EventSpec:
        for spec in self._specs.values():
            if spec.dataschema == dataschema:
                return spec
        raise KeyError(f"no event schema {dataschema} is registered")

    def all(self) -> list[EventSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.service, s.name, s.version))

    def published(self) -> list[EventSpec]:
        """The platform's own events: those of the contract modules in ``shequ.contracts``.

        A test's or a plugin's registrations share this registry in their
        process but are not part of the catalogue bureaus are offered.
        """
        return [spec for spec in self.all() if spec.schema.__module__.startswith(__package__ + ".")]


REGISTRY = SchemaRegistry()


def register(
    service: str, name: str, version: int, schema: type[marshmallow.Schema], description: str
) -> EventSpec:
    """Register an event type in the global registry (used by contract modules)."""
    return REGISTRY.register(EventSpec(service, name, version, schema, description))
