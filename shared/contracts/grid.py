"""Events produced by the grid service.

Payloads carry ids, codes and coarse places (community, grid cell), never the
reporter, the description or anything else a resident wrote: those stay in
the grid's own database.
"""

import marshmallow
from marshmallow import fields, validate

from shequ.contracts.registry import register

SERVICE = "grid"

INCIDENT_REPORTED = "incident.reported"


class CategoryRefV1(marshmallow.Schema):
    """What consumers need to know about a category without asking grid."""

    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name_zh = fields.String(required=True)
    opens_mediation = fields.Boolean(required=True)
    volunteer_task = fields.Boolean(required=True)
    sensitive = fields.Boolean(required=True)


class IncidentReportedV1(marshmallow.Schema):
    incident_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.Nested(CategoryRefV1, required=True)
    community = fields.String(required=True)
    grid_cell = fields.String(required=True)
    channel = fields.String(required=True)
    urgency = fields.String(required=True)
    reported_at = fields.AwareDateTime(required=True)


INCIDENT_REPORTED_V1 = register(
    SERVICE,
    INCIDENT_REPORTED,
    1,
    IncidentReportedV1,
    "A grid worker or resident reported an incident; emitted once the report is stored.",
)
