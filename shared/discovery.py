"""Finding services and their configuration.

Services are found through the ``shequ.services`` entry-point group, so a
bureau's own package that registers a service there is run by ``shequ up``
beside the built-in ones.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from shequ.config import load_config

SERVICES_GROUP = "shequ.services"
DEFAULTS = Path(__file__).with_name("defaults.yaml")


def discover_services() -> dict[str, EntryPoint]:
    """The registered services' entry points, by service name."""
    return {ep.name: ep for ep in entry_points(group=SERVICES_GROUP)}


def load_service(name: str) -> type:
    """A service class by entry-point name, or by ``module:Class`` (tests, tools)."""
    services = discover_services()
    if name in services:
        return services[name].load()  # type: ignore[no-any-return]
    if ":" in name:
        return EntryPoint(name=name, value=name, group=SERVICES_GROUP).load()  # type: ignore[no-any-return]
    raise LookupError(f"unknown service {name!r}; known: {', '.join(sorted(services))}")


def service_config(service_cls: type) -> dict[str, Any]:
    """Platform defaults, then the service's own ``config.yaml`` if it has one."""
    config = load_config(DEFAULTS)
    own = Path(inspect.getfile(service_cls)).with_name("config.yaml")
    if own.exists():
        config.update(load_config(own))
    return config
