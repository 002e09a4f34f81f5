"""Event contracts: the only place event type strings and payload schemas live.

One module per producing service (``grid``, ``mediation``, ...). Producers
dump payloads through these schemas; consumers load them with unknown fields
excluded and read only what they use. A breaking change is a new schema
version registered beside the old one, never an edit of it.
"""

from shequ.contracts.envelope import CloudEvent, EnvelopeError, new_event, parse_event
from shequ.contracts.registry import REGISTRY, EventSpec, SchemaRegistry

__all__ = [
    "REGISTRY",
    "CloudEvent",
    "EnvelopeError",
    "EventSpec",
    "SchemaRegistry",
    "new_event",
    "parse_event",
]

# Importing the contract modules registers every event type, so any process
# that can parse an event knows every schema.
from shequ.contracts import disclosure, grid, mediation, notify, volunteer  # noqa: E402

__all__ += ["disclosure", "grid", "mediation", "notify", "volunteer"]
