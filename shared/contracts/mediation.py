"""Events produced by the mediation service.

Payloads carry ids, codes and times only: never a party's name, phone, ID
number or address, never the facts, notes or agreement text. A consumer that
needs more (notify sending a session notice) asks mediation with its own
credentials; the event only says that something happened to which case.
"""

import marshmallow
from marshmallow import fields, validate

from shequ.contracts.registry import register

SERVICE = "mediation"

OUTCOMES = ("agreed", "failed", "referred", "withdrawn")


class CaseRefV1(marshmallow.Schema):
    """Which case, from which incident, where and of what type: shared by every case event."""

    case_id = fields.String(required=True)
    incident_id = fields.String(load_default=None, dump_default=None, allow_none=True)
    community = fields.String(required=True)
    dispute_type = fields.String(required=True)


CASE_OPENED = "case.opened"


class CaseOpenedV1(CaseRefV1):
    pass


CASE_OPENED_V1 = register(
    SERVICE,
    CASE_OPENED,
    1,
    CaseOpenedV1,
    "A people's mediation case was opened (from an incident or a walk-in).",
)

CASE_CLOSED = "case.closed"


class CaseClosedV1(CaseRefV1):
    """A case ended: agreed, failed, referred to court or withdrawn. Ids and codes only.

    ``opened_at`` was added within v1 (optional) so consumers can measure case
    duration without asking mediation.
    """

    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    at = fields.AwareDateTime(required=True)
    opened_at = fields.AwareDateTime(load_default=None, dump_default=None, allow_none=True)


CASE_CLOSED_V1 = register(
    SERVICE,
    CASE_CLOSED,
    1,
    CaseClosedV1,
    "A people's mediation case was closed with its outcome; disclosure counts these monthly.",
)

CASE_ASSIGNED = "case.assigned"


class CaseAssignedV1(CaseRefV1):
    """A mediator was assigned; ``method`` says whether by the roster rule or by hand."""

    mediator_id = fields.String(required=True)
    method = fields.String(required=True, validate=validate.OneOf(["auto", "manual", "override"]))
    at = fields.AwareDateTime(required=True)


CASE_ASSIGNED_V1 = register(
    SERVICE,
    CASE_ASSIGNED,
    1,
    CaseAssignedV1,
    "A mediator of the community's committee was assigned to a case (after the recusal check).",
)

CASE_SESSION_SCHEDULED = "case.session_scheduled"


class CaseSessionScheduledV1(CaseRefV1):
    """A session was scheduled; notify tells the parties (it reads contacts from mediation)."""

    session_id = fields.String(required=True)
    session_at = fields.AwareDateTime(required=True)
    parties = fields.Integer(required=True, metadata={"description": "how many parties to notify"})
    at = fields.AwareDateTime(required=True)


CASE_SESSION_SCHEDULED_V1 = register(
    SERVICE,
    CASE_SESSION_SCHEDULED,
    1,
    CaseSessionScheduledV1,
    "A mediation session was scheduled; the parties are to be notified. No place, no names.",
)


class CaseStepV1(CaseRefV1):
    at = fields.AwareDateTime(required=True)


CASE_AGREED = "case.agreed"


class CaseAgreedV1(CaseStepV1):
    """An agreement was signed; ``confirmation_deadline`` ends the 30-day window to apply
    for judicial confirmation."""

    effective_on = fields.Date(required=True)
    confirmation_deadline = fields.Date(required=True)


CASE_AGREED_V1 = register(
    SERVICE,
    CASE_AGREED,
    1,
    CaseAgreedV1,
    "The parties signed a mediation agreement (调解协议); the text stays in mediation.",
)

CASE_FAILED = "case.failed"
CASE_FAILED_V1 = register(
    SERVICE,
    CASE_FAILED,
    1,
    CaseStepV1,
    "Mediation failed (调解不成); the reason stays in mediation.",
)

CASE_REFERRED = "case.referred"


class CaseReferredV1(CaseStepV1):
    court = fields.String(required=True, metadata={"description": "the court's code"})


CASE_REFERRED_V1 = register(
    SERVICE,
    CASE_REFERRED,
    1,
    CaseReferredV1,
    "A failed case was referred to litigation (诉非对接) with its referral packet.",
)

CASE_CONFIRMED = "case.confirmed"


class CaseConfirmedV1(CaseStepV1):
    """A step of judicial confirmation (司法确认): filed, then confirmed or rejected."""

    result = fields.String(
        required=True, validate=validate.OneOf(["filed", "confirmed", "rejected"])
    )
    court = fields.String(required=True)


CASE_CONFIRMED_V1 = register(
    SERVICE,
    CASE_CONFIRMED,
    1,
    CaseConfirmedV1,
    "Judicial confirmation of an agreement was filed with, confirmed or rejected by a court.",
)


class CaseClockAlertV1(CaseRefV1):
    deadline = fields.AwareDateTime(required=True)


CASE_WARNED = "case.warned"
CASE_OVERDUE = "case.overdue"
ALERT_SPECS = {
    kind: register(
        SERVICE,
        f"case.{kind}",
        1,
        CaseClockAlertV1,
        f"A mediation case's time limit was {kind} (one month by default, or as extended).",
    )
    for kind in ("warned", "overdue")
}
