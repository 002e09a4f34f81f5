"""Mediation's HTTP schemas: what the routes load and dump (and the OpenAPI document shows)."""

from __future__ import annotations

import marshmallow
from marshmallow import fields, validate

from shequ_services.mediation import domain, workflow

_TEXT = validate.Length(min=1, max=2000)
_ID = validate.Length(min=1, max=64)


class CaseQuerySchema(marshmallow.Schema):
    incident_id = fields.String(validate=_ID)
    community = fields.String(validate=_ID)
    status = fields.String(validate=validate.OneOf(workflow.STATES))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class PartyInputSchema(marshmallow.Schema):
    role = fields.String(required=True, validate=validate.OneOf(domain.PARTY_ROLES))
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=24))
    id_number = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(equal=18)
    )
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    building = fields.String(
        load_default=None,
        allow_none=True,
        validate=_ID,
        metadata={"description": "registry building id, for the recusal check"},
    )


class CaseOpenSchema(marshmallow.Schema):
    """A walk-in case (来访), or one staff open by hand for an incident."""

    community = fields.String(required=True, validate=_ID)
    dispute_type = fields.String(required=True, validate=_ID)
    facts = fields.String(required=True, validate=_TEXT)
    incident_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    parties = fields.List(
        fields.Nested(PartyInputSchema), load_default=list, validate=validate.Length(max=20)
    )


class PartiesAddSchema(marshmallow.Schema):
    expected_version = fields.Integer(required=True, strict=True)
    facts = fields.String(load_default=None, allow_none=True, validate=_TEXT)
    parties = fields.List(
        fields.Nested(PartyInputSchema), required=True, validate=validate.Length(min=1, max=20)
    )


class AssignmentRequestSchema(marshmallow.Schema):
    expected_version = fields.Integer(required=True, strict=True)
    mediator_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=_ID,
        metadata={"description": "omit to let the roster rule choose"},
    )
    override_reason = fields.String(load_default=None, allow_none=True, validate=_TEXT)


class ObligationSchema(marshmallow.Schema):
    party_id = fields.String(required=True, validate=_ID)
    obligation = fields.String(required=True, validate=_TEXT)
    manner = fields.String(required=True, validate=_TEXT)
    due_on = fields.Date(required=True)


class SignatureSchema(marshmallow.Schema):
    party_id = fields.String(required=True, validate=_ID)
    signed = fields.Boolean(required=True)


class AgreementSchema(marshmallow.Schema):
    """The statutory contents (人民调解法 art. 29) and the signatures."""

    facts = fields.String(required=True, validate=_TEXT)
    issues = fields.String(required=True, validate=_TEXT)
    responsibilities = fields.String(load_default=None, allow_none=True, validate=_TEXT)
    obligations = fields.List(
        fields.Nested(ObligationSchema), required=True, validate=validate.Length(min=1, max=50)
    )
    signatures = fields.List(fields.Nested(SignatureSchema), required=True)
    mediator_signed = fields.Boolean(required=True)
    signed_on = fields.Date(required=True)


class TransitionRequestSchema(marshmallow.Schema):
    """One step; which fields each action needs is ``workflow.RULES``."""

    action = fields.String(
        required=True, validate=validate.OneOf([a for a in workflow.RULES if a != "assign"])
    )
    expected_version = fields.Integer(required=True, strict=True)
    session_at = fields.AwareDateTime()
    place = fields.String(validate=validate.Length(min=1, max=200))
    session_id = fields.String(validate=_ID)
    attendance = fields.List(fields.String(validate=_ID))
    notes = fields.String(validate=_TEXT)
    days = fields.Integer(strict=True)
    reason = fields.String(validate=_TEXT)
    parties_consent = fields.Boolean()
    agreement = fields.Nested(AgreementSchema)
    court = fields.String(validate=_ID)
    filed_on = fields.Date()
    decision = fields.String(validate=validate.OneOf(workflow.DECISIONS))
    performance = fields.String(validate=validate.OneOf(workflow.PERFORMANCE))


class PartySchema(marshmallow.Schema):
    id = fields.String()
    role = fields.String()
    name = fields.String()
    phone = fields.String(allow_none=True)
    id_number = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    building = fields.String(allow_none=True)
    masked = fields.Boolean()


class ClockSchema(marshmallow.Schema):
    deadline = fields.AwareDateTime()
    warn_at = fields.AwareDateTime()
    warned_at = fields.AwareDateTime(allow_none=True)
    overdue_at = fields.AwareDateTime(allow_none=True)
    stopped_at = fields.AwareDateTime(allow_none=True)


class SessionSchema(marshmallow.Schema):
    id = fields.String()
    session_at = fields.AwareDateTime()
    place = fields.String()
    held = fields.Boolean()
    attendance = fields.List(fields.String())
    notes = fields.String(allow_none=True)


class FollowUpSchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    performance = fields.String()
    notes = fields.String(allow_none=True)


class ExtensionSchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    days = fields.Integer()
    reason = fields.String(allow_none=True)
    parties_consent = fields.Boolean()


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


class CaseSummarySchema(marshmallow.Schema):
    """A case in a listing: no parties and nothing typed (facts, notes, agreement)."""

    id = fields.String()
    incident_id = fields.String(allow_none=True)
    community = fields.String()
    dispute_type = fields.String()
    status = fields.String()
    version = fields.Integer()
    source = fields.String()
    opened_at = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)
    outcome = fields.String(allow_none=True)
    mediator_id = fields.String(allow_none=True)
    clock = fields.Nested(ClockSchema)


class CaseSchema(CaseSummarySchema):
    """A case as the caller may see it: parties masked unless assigned mediator or admin."""

    allowed_actions = fields.List(fields.String())
    facts = fields.String(allow_none=True)
    parties = fields.List(fields.Nested(PartySchema))
    recusal = fields.Dict(allow_none=True)
    sessions = fields.List(fields.Nested(SessionSchema))
    agreement = fields.Dict(allow_none=True)
    follow_ups = fields.List(fields.Nested(FollowUpSchema))
    confirmation = fields.Dict(allow_none=True)
    referral = fields.Dict(allow_none=True)
    extensions = fields.List(fields.Nested(ExtensionSchema))
    history = fields.List(fields.Nested(HistoryEntrySchema))


class CaseListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(CaseSummarySchema))


class MediatorInputSchema(marshmallow.Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    community = fields.String(required=True, validate=_ID)
    expertise = fields.List(fields.String(validate=_ID), load_default=list)
    available = fields.Boolean(load_default=True)
    max_load = fields.Integer(load_default=10, validate=validate.Range(min=0, max=100))
    building = fields.String(load_default=None, allow_none=True, validate=_ID)
    relatives = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=list,
        metadata={"description": "declared relatives' names; stored only as blind indexes"},
    )


class MediatorSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()
    community = fields.String()
    expertise = fields.List(fields.String())
    available = fields.Boolean()
    max_load = fields.Integer()
    load = fields.Integer()


class MediatorQuerySchema(marshmallow.Schema):
    community = fields.String(required=True, validate=_ID)


class MediatorListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(MediatorSchema))


class ReferralPacketSchema(marshmallow.Schema):
    case_id = fields.String()
    community = fields.String()
    dispute_type = fields.String()
    facts = fields.String(allow_none=True)
    parties = fields.List(fields.Dict())
    mediation_opened_at = fields.AwareDateTime()
    mediation_failed_at = fields.AwareDateTime(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    sessions_held = fields.Integer()
    mediator_id = fields.String(allow_none=True)
    court = fields.String(allow_none=True)


class RatesQuerySchema(marshmallow.Schema):
    community = fields.String(load_default=None, validate=_ID)
    from_ = fields.AwareDateTime(required=True, data_key="from")
    to = fields.AwareDateTime(required=True)


class RatesSchema(marshmallow.Schema):
    community = fields.String(allow_none=True)
    from_ = fields.AwareDateTime(data_key="from", attribute="from")
    to = fields.AwareDateTime()
    closed = fields.Integer()
    by_outcome = fields.Dict(keys=fields.String(), values=fields.Integer())
    agreement_rate = fields.Float(
        allow_none=True, metadata={"description": "agreed / closed; null when none closed"}
    )
