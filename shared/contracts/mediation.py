"""Events produced by the mediation service."""

import marshmallow
from marshmallow import fields, validate

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

CASE_CLOSED = "case.closed"


class CaseClosedV1(marshmallow.Schema):
    """A case ended: agreed, failed, referred to court or withdrawn. Ids and codes only."""

    case_id = fields.String(required=True)
    incident_id = fields.String(load_default=None, dump_default=None, allow_none=True)
    community = fields.String(required=True)
    dispute_type = fields.String(required=True)
    outcome = fields.String(
        required=True, validate=validate.OneOf(["agreed", "failed", "referred", "withdrawn"])
    )
    at = fields.AwareDateTime(required=True)


CASE_CLOSED_V1 = register(
    SERVICE,
    CASE_CLOSED,
    1,
    CaseClosedV1,
    "A people's mediation case was closed with its outcome; disclosure counts these monthly.",
)
