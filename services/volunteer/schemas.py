"""The volunteer service's HTTP and seed schemas."""

from __future__ import annotations

import re

import marshmallow
from marshmallow import fields, validate

from shequ_services.volunteer.domain import SOURCES, STATUSES
from shequ_services.volunteer.rounds import CARE_LISTS

ID = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", error="ids are 1-64 letters, digits, _ . -"
)
CODE = validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$", error="codes are lower-case letters, digits, _")
# Years 1000-2999: the calendar arithmetic of a month (its end is the next
# month's start) stays inside what Python's dates can hold.
MONTH = validate.Regexp(r"^[12]\d{3}-(0[1-9]|1[0-2])$", error="a month is YYYY-MM")
PHONE = re.compile(r"^\+?[0-9 -]{5,20}$")


def _hhmm(value: str) -> bool:
    return bool(re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", value))


class SkillSchema(marshmallow.Schema):
    code = fields.String(required=True, validate=CODE)
    confirmed_by = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "the organisation that confirmed the skill"},
    )


class WindowSchema(marshmallow.Schema):
    weekday = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(0, 6),
        metadata={"description": "0 is Monday"},
    )
    start = fields.String(required=True, metadata={"description": "local time HH:MM"})
    end = fields.String(required=True, metadata={"description": "local time HH:MM, exclusive"})

    @marshmallow.validates_schema
    def _times(self, data: dict, **kwargs: object) -> None:
        for name in ("start", "end"):
            if not _hhmm(data[name]):
                raise marshmallow.ValidationError("a local time HH:MM", name)
        if data["end"] <= data["start"]:
            raise marshmallow.ValidationError("must be after start", "end")


class VolunteerCreateSchema(marshmallow.Schema):
    id = fields.String(required=True, validate=ID)
    community = fields.String(required=True, validate=ID)
    name = fields.String(required=True, validate=validate.Length(min=1, max=50))
    phone = fields.String(
        required=True, validate=validate.Regexp(PHONE, error="a phone number, digits")
    )
    home_cell = fields.String(required=True, validate=ID)
    household_id = fields.String(load_default=None, allow_none=True, validate=ID)
    skills = fields.List(fields.Nested(SkillSchema), load_default=list)
    languages = fields.List(
        fields.String(validate=validate.Length(min=2, max=10)),
        load_default=lambda: ["zh"],
        validate=validate.Length(min=1),
    )
    windows = fields.List(fields.Nested(WindowSchema), load_default=list)
    teams = fields.List(fields.String(validate=ID), load_default=list)
    consent_to_contact = fields.Boolean(required=True)
    active = fields.Boolean(load_default=True)


class VolunteerChangeSchema(marshmallow.Schema):
    """What may change: everything but the id and the community."""

    name = fields.String(validate=validate.Length(min=1, max=50))
    phone = fields.String(validate=validate.Regexp(PHONE, error="a phone number, digits"))
    home_cell = fields.String(validate=ID)
    household_id = fields.String(allow_none=True, validate=ID)
    skills = fields.List(fields.Nested(SkillSchema))
    languages = fields.List(fields.String(validate=validate.Length(min=2, max=10)))
    windows = fields.List(fields.Nested(WindowSchema))
    teams = fields.List(fields.String(validate=ID))
    consent_to_contact = fields.Boolean()
    active = fields.Boolean()


#: The fields a volunteer may change about themself (the rest is the community's record).
SELF_SERVICE_FIELDS = frozenset({"languages", "windows", "consent_to_contact"})


class VolunteerSchema(marshmallow.Schema):
    id = fields.String()
    community = fields.String()
    name = fields.String(metadata={"description": "masked (张**) unless the caller may see it"})
    phone = fields.String(metadata={"description": "masked (138****5678) unless allowed"})
    home_cell = fields.String()
    household_id = fields.String(allow_none=True)
    skills = fields.List(fields.Nested(SkillSchema))
    languages = fields.List(fields.String())
    windows = fields.List(fields.Dict())
    teams = fields.List(fields.String())
    consent_to_contact = fields.Boolean()
    active = fields.Boolean()
    masked = fields.Boolean()


class VolunteerPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(VolunteerSchema))
    next = fields.String(allow_none=True, metadata={"description": "pass as after= for more"})


class VolunteerListQuerySchema(marshmallow.Schema):
    community = fields.String(validate=ID)
    team = fields.String(validate=ID)
    after = fields.String(validate=ID)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class TeamSchema(marshmallow.Schema):
    id = fields.String(required=True, validate=ID)
    community = fields.String(required=True, validate=ID)
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    leaders = fields.List(
        fields.String(validate=ID),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "volunteer ids of the social workers who lead it (社工带义工)"},
    )


class TeamListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(TeamSchema))
    next = fields.String(allow_none=True, metadata={"description": "pass as after= for more"})


class PageQuerySchema(marshmallow.Schema):
    """A listing in id order: a page of at most ``limit``, after the id ``after``."""

    after = fields.String(validate=ID)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class HouseholdSchema(marshmallow.Schema):
    id = fields.String(required=True, validate=ID)
    community = fields.String(required=True, validate=ID)
    grid_cell = fields.String(required=True, validate=ID)
    care_lists = fields.List(
        fields.String(validate=validate.OneOf(list(CARE_LISTS))),
        required=True,
        metadata={"description": "of: " + ", ".join(f"{k} ({v})" for k, v in CARE_LISTS.items())},
    )
    active = fields.Boolean(load_default=True)


class HouseholdChangeSchema(marshmallow.Schema):
    grid_cell = fields.String(validate=ID)
    care_lists = fields.List(fields.String(validate=validate.OneOf(list(CARE_LISTS))))
    active = fields.Boolean()


class HouseholdListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(HouseholdSchema))
    next = fields.String(allow_none=True, metadata={"description": "pass as after= for more"})


class SeedSchema(marshmallow.Schema):
    teams = fields.List(fields.Nested(TeamSchema), load_default=list)
    volunteers = fields.List(fields.Nested(VolunteerCreateSchema), load_default=list)
    households = fields.List(fields.Nested(HouseholdSchema), load_default=list)


class CellsSeedSchema(marshmallow.Schema):
    cells = fields.Dict(
        keys=fields.String(validate=ID), values=fields.List(fields.String()), required=True
    )
    communities = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


# -- tasks ----------------------------------------------------------------------------------


class TaskQuerySchema(marshmallow.Schema):
    incident_id = fields.String(validate=validate.Length(min=1, max=64))
    status = fields.String(validate=validate.OneOf(STATUSES))
    source = fields.String(validate=validate.OneOf(SOURCES))
    community = fields.String(validate=ID)
    grid_cell = fields.String(validate=ID)
    round_month = fields.String(validate=MONTH)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class OfferSchema(marshmallow.Schema):
    volunteer_id = fields.String()
    rank = fields.Integer()
    offered_at = fields.AwareDateTime()
    deadline = fields.AwareDateTime()
    status = fields.String()
    answered_at = fields.AwareDateTime(allow_none=True)


class TaskSchema(marshmallow.Schema):
    id = fields.String()
    incident_id = fields.String(allow_none=True)
    source = fields.String()
    kind = fields.String()
    community = fields.String()
    grid_cell = fields.String()
    status = fields.String()
    skills = fields.List(fields.String())
    language = fields.String(allow_none=True)
    household_id = fields.String(allow_none=True)
    round_month = fields.String(allow_none=True)
    due_at = fields.AwareDateTime(allow_none=True)
    overdue_raised = fields.Boolean()
    offers = fields.List(fields.Nested(OfferSchema))
    assignee = fields.String(allow_none=True)
    assigned_at = fields.AwareDateTime(allow_none=True)
    checked_in_at = fields.AwareDateTime(allow_none=True)
    checked_out_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    version = fields.Integer()


class TaskListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(TaskSchema))


class TaskCreateSchema(marshmallow.Schema):
    kind = fields.String(required=True, validate=CODE)
    community = fields.String(required=True, validate=ID)
    grid_cell = fields.String(required=True, validate=ID)
    skills = fields.List(fields.String(validate=CODE), load_default=None, allow_none=True)
    language = fields.String(load_default=None, allow_none=True, validate=validate.Length(2, 10))
    due_at = fields.AwareDateTime(load_default=None, allow_none=True)


class AnswerSchema(marshmallow.Schema):
    answer = fields.String(required=True, validate=validate.OneOf(["accept", "decline"]))


class AssignSchema(marshmallow.Schema):
    volunteer_id = fields.String(required=True, validate=ID)


class CheckOutSchema(marshmallow.Schema):
    """Nothing to send; the times are the server's."""


class RoundResultSchema(marshmallow.Schema):
    month = fields.String(required=True, validate=MONTH)
    created = fields.Integer(required=True, metadata={"description": "visit tasks created now"})


# -- hours ----------------------------------------------------------------------------------


class EntrySchema(marshmallow.Schema):
    id = fields.String()
    kind = fields.String()
    volunteer_id = fields.String()
    community = fields.String()
    teams = fields.List(fields.String())
    minutes = fields.Integer(metadata={"description": "signed for a correction"})
    served_at = fields.AwareDateTime()
    recorded_at = fields.AwareDateTime()
    recorded_by = fields.String()
    task_id = fields.String(allow_none=True)
    corrects = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    status = fields.String()
    approved_by = fields.String(allow_none=True)
    approved_at = fields.AwareDateTime(allow_none=True)


class EntryListSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(EntrySchema))
    next = fields.String(allow_none=True, metadata={"description": "pass as after= for more"})


class CheckOutResultSchema(marshmallow.Schema):
    task = fields.Nested(TaskSchema)
    entry = fields.Nested(EntrySchema)


class HoursQuerySchema(marshmallow.Schema):
    volunteer_id = fields.String(validate=ID)
    community = fields.String(validate=ID)
    month = fields.String(validate=MONTH)


class HoursPageQuerySchema(HoursQuerySchema):
    """The ledger listing: in service-time order, a page of at most ``limit`` after the
    entry ``after`` (the CSV export takes the same filters and no page)."""

    after = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=500, validate=validate.Range(1, 1000))


class CorrectionSchema(marshmallow.Schema):
    minutes_delta = fields.Integer(
        required=True, strict=True, validate=validate.Range(-24 * 60, 24 * 60)
    )
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TotalsQuerySchema(marshmallow.Schema):
    by = fields.String(
        load_default="volunteer", validate=validate.OneOf(["volunteer", "team", "community"])
    )
    month = fields.String(validate=MONTH)
    community = fields.String(validate=ID)


class TotalSchema(marshmallow.Schema):
    group = fields.String()
    month = fields.String()
    minutes = fields.Integer()
    hours = fields.String(metadata={"description": "the same in Chinese: 1小时35分钟"})


class TotalsSchema(marshmallow.Schema):
    by = fields.String()
    items = fields.List(fields.Nested(TotalSchema))


class CertificateQuerySchema(marshmallow.Schema):
    year = fields.Integer(strict=False, validate=validate.Range(2000, 2100))
