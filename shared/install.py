"""``shequ init``: what must exist before the services roll out, created idempotently.

In Kubernetes a Job runs this at install and at every upgrade, before the new
pods start: every handler queue, delay queue and dead-letter queue of every
registered service (an event published before its consumer's queue exists is
dropped), and every service's indexes (so a large index build happens before
a rollout, not inside a pod's start-up probe). The names and arguments are
the ones the services declare themselves, so running it twice, or after the
services, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymongo

from shequ.config import interpolate, load_config
from shequ.discovery import DEFAULTS, discover_services, load_service
from shequ.events import retry_delays
from shequ.store import Store, database_name, ensure_indexes
from shequ.topology import declare_topology


@dataclass(frozen=True)
class InitResult:
    services: tuple[str, ...]
    queues: int
    databases: tuple[str, ...]


def stores_of(service_cls: type) -> list[Store]:
    """The ``Store`` providers a service class declares."""
    return [value for value in vars(service_cls).values() if isinstance(value, Store)]


def prepare(
    amqp_uri: str,
    mongo_uri: str | None,
    *,
    database_prefix: str = "",
    services: Iterable[str] | None = None,
    environ: dict[str, str] | None = None,
) -> InitResult:
    """Declare the broker topology and create the indexes of the given (default: all) services.

    Without ``mongo_uri`` only the topology is declared: each pod's init
    container does that, so a producer never starts before its consumers'
    queues exist, even when the install job has not run yet.
    """
    classes = [load_service(name) for name in (services or sorted(discover_services()))]
    defaults: dict[str, Any] = interpolate(load_config(DEFAULTS, environ), environ)
    queues = declare_topology(amqp_uri, classes, retry_delays(defaults), defaults)
    databases: list[str] = []
    if mongo_uri is None:
        return InitResult(tuple(c.name for c in classes), queues, ())
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri, tz_aware=True)
    try:
        for service_cls in classes:
            db = client[database_name(service_cls.name, database_prefix)]
            for store in stores_of(service_cls):
                ensure_indexes(db, store.repository_cls)
            databases.append(db.name)
    finally:
        client.close()
    return InitResult(tuple(c.name for c in classes), queues, tuple(databases))
