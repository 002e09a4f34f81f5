"""Events produced by the mediation service."""

import marshmallow
from marshmallow import fields

from shequ.contracts.registry import register

SERVICE = "mediation"

CASE_OPENED = "case.opened"


class CaseOpenedV1(marshmallow.Schema):
    case_id = fields.String(required=True)
    incident_id = fields.String(load_default=None, dump_default=None, allow_none=True)
    community = fields.String(required=True)
    dispute_type = fields.String(required=True)


CASE_OPENED_V1 = register(
    SERVICE,
    CASE_OPENED,
    1,
    CaseOpenedV1,
    "A people's mediation case was opened (from an incident or a walk-in).",
)
