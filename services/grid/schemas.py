"""The grid's HTTP schemas: what a report may contain and what the API returns."""

from datetime import UTC
from typing import Any, NamedTuple

import marshmallow
from marshmallow import fields, post_load, validate, validates_schema

from shequ.http import QueryList
from shequ.pagination import MAX_CURSOR_LENGTH
from shequ_services.grid.domain import CHANNELS, NATIVE_CHANNELS, URGENCY_TIERS
from shequ_services.grid.rates import GROUPINGS
from shequ_services.grid.rating import MAX_COMMENT
from shequ_services.grid.registry import ID_PATTERN
from shequ_services.grid.sla import MAX_PAGE
from shequ_services.grid.workflow import RULES, STATES

MAX_DESCRIPTION = 2000
MAX_CO_DEPARTMENTS = 10


class LocationSchema(marshmallow.Schema):
    lat = fields.Float(required=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(required=True, validate=validate.Range(min=-180, max=180))


class IncidentReportSchema(marshmallow.Schema):
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, load_default=None)
    channel = fields.String(load_default=None, validate=validate.OneOf(NATIVE_CHANNELS))


class EscalationSchema(marshmallow.Schema):
    level = fields.Integer()
    at = fields.AwareDateTime(metadata={"description": "when the level falls due"})
    to = fields.String(metadata={"description": "where the case goes up to"})
    raised_at = fields.AwareDateTime(allow_none=True)


class ClockSchema(marshmallow.Schema):
    """One time limit of the incident: when it runs out and which alerts it raised."""

    name = fields.String(metadata={"description": "acknowledge, dispatch, sign_for, ..."})
    department = fields.String(allow_none=True, metadata={"description": "co-handler clocks"})
    started = fields.AwareDateTime()
    deadline = fields.AwareDateTime()
    warn_at = fields.AwareDateTime()
    stopped_at = fields.AwareDateTime(allow_none=True)
    warned_at = fields.AwareDateTime(allow_none=True)
    overdue_at = fields.AwareDateTime(allow_none=True)
    escalations = fields.List(fields.Nested(EscalationSchema))


class SubtaskSchema(marshmallow.Schema):
    """A co-handling department's part of a case (吹哨报到)."""

    department = fields.String()
    status = fields.String()
    dispatched_at = fields.AwareDateTime()
    handled_at = fields.AwareDateTime(allow_none=True)


class ExtensionSchema(marshmallow.Schema):
    """The latest extension request (延期) and its decision."""

    status = fields.String()
    department = fields.String(allow_none=True)
    target_date = fields.String()
    requested_at = fields.AwareDateTime()
    decided_at = fields.AwareDateTime(allow_none=True)


class IncidentSchema(marshmallow.Schema):
    id = fields.String()
    category = fields.String()
    grid_cell = fields.String()
    community = fields.String()
    description = fields.String(metadata={"description": "absent from a redacted view"})
    location = fields.Nested(
        LocationSchema, allow_none=True, metadata={"description": "absent from a redacted view"}
    )
    channel = fields.String()
    urgency = fields.String()
    status = fields.String()
    reported_at = fields.AwareDateTime()
    version = fields.Integer()
    department = fields.String(allow_none=True)
    subtasks = fields.List(fields.Nested(SubtaskSchema))
    extension = fields.Nested(ExtensionSchema, allow_none=True)
    ratings = fields.List(fields.Nested(lambda: RatingSchema()))
    clocks = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ClockSchema),
        metadata={"description": "the incident's time limits, by key"},
    )
    possible_duplicates = fields.List(fields.String())
    merged_into = fields.String(allow_none=True)
    mediation = fields.Dict(
        allow_none=True,
        metadata={"description": "the closed mediation case: case_id, outcome, at, step_taken"},
    )


#: Roles that see duplicate hints: a resident must not learn the ids of other people's reports.
DUPLICATE_HINT_ROLES = frozenset({"community_staff", "grid_worker", "admin", "auditor"})


def incident_schema(
    roles: frozenset[str], *, many: bool = False, exclude: tuple[str, ...] = ()
) -> IncidentSchema:
    """The incident schema for a caller: duplicate hints only for staff."""
    if not roles & DUPLICATE_HINT_ROLES:
        exclude = (*exclude, "possible_duplicates")
    return IncidentSchema(many=many, exclude=exclude)


class IncidentListQuerySchema(marshmallow.Schema):
    """Listing filters (all must hold) and the page: ``limit`` and the previous page's cursor."""

    community = fields.String(validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(min=1, max=64))
    status = QueryList(
        fields.String(validate=validate.OneOf(STATES)),
        validate=validate.Length(min=1, max=len(STATES)),
        metadata={"description": "one or more states, repeated or comma-separated"},
    )
    department = fields.String(validate=validate.Length(min=1, max=64))
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    urgency = fields.String(validate=validate.OneOf(URGENCY_TIERS))
    reported_from = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "inclusive; UTC if no offset is given"}
    )
    reported_to = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "exclusive; UTC if no offset is given"}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH),
        metadata={"description": "next_cursor of the previous page, with the same filters"},
    )

    @validates_schema
    def _period_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("reported_from"), data.get("reported_to")
        if start is not None and end is not None and start >= end:
            raise marshmallow.ValidationError("must be after reported_from", "reported_to")


class IncidentPageSchema(marshmallow.Schema):
    items = fields.List(fields.Nested(IncidentSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "null on the last page"})


class CategorySchema(marshmallow.Schema):
    code = fields.String()
    name_zh = fields.String()
    name_en = fields.String()
    urgency = fields.String()
    department = fields.String()
    opens_mediation = fields.Boolean()
    volunteer_task = fields.Boolean()
    sensitive = fields.Boolean()


class TransitionRequestSchema(marshmallow.Schema):
    """One lifecycle step; which of the optional fields are needed depends on the action."""

    action = fields.String(required=True, validate=validate.OneOf(sorted(RULES)))
    expected_version = fields.Integer(required=True, validate=validate.Range(min=1))
    reason = fields.String(validate=validate.Length(min=1, max=1000))
    department = fields.String(validate=validate.Length(min=1, max=64))
    feedback = fields.String(validate=validate.Length(min=1, max=2000))
    outcome = fields.String(validate=validate.Length(min=1, max=32))
    target_date = fields.Date()
    note = fields.String(validate=validate.Length(min=1, max=1000))
    duplicate_of = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "merge: the open incident this one repeats"},
    )
    co_departments = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=MAX_CO_DEPARTMENTS),
    )


#: What the redacted view of a history leaves out: who acted (the first actor is the
#: reporter) and the steps' free-text fields (reasons, feedback, notes).
REDACTED_HISTORY_FIELDS = ("actor", "fields_")


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_state = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


class RatingSchema(marshmallow.Schema):
    score = fields.Integer()
    comment = fields.String(allow_none=True)
    at = fields.AwareDateTime()
    closure = fields.Integer()


class RatingRequestSchema(marshmallow.Schema):
    """The reporter's rating of the current closure; not a lifecycle step."""

    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_COMMENT)
    )
    expected_version = fields.Integer(required=True, validate=validate.Range(min=1))


class RatesQuerySchema(marshmallow.Schema):
    """Filters of ``GET rates``; ``from``/``to`` are local calendar days, both included."""

    community = fields.String(validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(min=1, max=64))
    department = fields.String(validate=validate.Length(min=1, max=64))
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    group_by = fields.String(validate=validate.OneOf(GROUPINGS))


class RatioSchema(marshmallow.Schema):
    numerator = fields.Integer()
    denominator = fields.Integer()
    value = fields.Float(allow_none=True)


class SpreadSchema(marshmallow.Schema):
    count = fields.Integer()
    median = fields.Float(allow_none=True)
    p90 = fields.Float(allow_none=True)


class RatesGroupSchema(marshmallow.Schema):
    key = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))
    incidents = fields.Integer()
    response_rate = fields.Nested(RatioSchema)
    resolution_rate = fields.Nested(RatioSchema)
    satisfaction_rate = fields.Nested(RatioSchema)
    stage_seconds = fields.Dict(keys=fields.String(), values=fields.Nested(SpreadSchema))


class PeriodSchema(marshmallow.Schema):
    from_ = fields.Date(data_key="from", attribute="first")
    to = fields.Date(attribute="last")
    timezone = fields.Function(lambda period: period.tz.key)


class RatesSchema(marshmallow.Schema):
    period = fields.Nested(PeriodSchema)
    filters = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))
    group_by = fields.String(allow_none=True)
    definitions = fields.Dict(keys=fields.String(), values=fields.String())
    groups = fields.List(fields.Nested(RatesGroupSchema))


class HistorySchema(marshmallow.Schema):
    items = fields.List(fields.Nested(HistoryEntrySchema))


# Open311 GeoReport v2. ``open311.py`` renders these answers (JSON, or XML with the
# same fields by the path's ``.{fmt}``); the schemas below document the JSON form
# in the OpenAPI document and mirror the specification's field names.


class Open311ServiceSchema(marshmallow.Schema):
    service_code = fields.String()
    service_name = fields.String()
    description = fields.String()
    metadata = fields.Boolean()
    type = fields.String()
    keywords = fields.String()
    group = fields.String()


class Open311ValueSchema(marshmallow.Schema):
    key = fields.String()
    name = fields.String()


class Open311AttributeSchema(marshmallow.Schema):
    variable = fields.Boolean()
    code = fields.String()
    datatype = fields.String()
    required = fields.Boolean()
    datatype_description = fields.String()
    order = fields.Integer()
    description = fields.String()
    values = fields.List(fields.Nested(Open311ValueSchema))


class Open311DefinitionSchema(marshmallow.Schema):
    service_code = fields.String()
    attributes = fields.List(fields.Nested(Open311AttributeSchema))


class Open311PostFormSchema(marshmallow.Schema):
    """The form fields of ``POST requests``; ``attribute[CODE]`` answers come besides."""

    api_key = fields.String(required=True)
    service_code = fields.String(required=True)
    lat = fields.Float()
    long = fields.Float()
    address_string = fields.String()
    address_id = fields.String()
    description = fields.String()
    media_url = fields.String()
    email = fields.String()
    device_id = fields.String()
    account_id = fields.String()
    first_name = fields.String()
    last_name = fields.String()
    phone = fields.String()


class Open311PostedSchema(marshmallow.Schema):
    service_request_id = fields.String()
    token = fields.String()
    service_notice = fields.String()
    account_id = fields.String(allow_none=True)


class Open311TokenSchema(marshmallow.Schema):
    service_request_id = fields.String()
    token = fields.String()


class Open311RequestSchema(marshmallow.Schema):
    service_request_id = fields.String()
    status = fields.String()
    status_notes = fields.String(allow_none=True)
    service_name = fields.String()
    service_code = fields.String()
    description = fields.String(allow_none=True)
    agency_responsible = fields.String(allow_none=True)
    service_notice = fields.String(allow_none=True)
    requested_datetime = fields.String()
    updated_datetime = fields.String()
    expected_datetime = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    lat = fields.Float(allow_none=True)
    long = fields.Float(allow_none=True)
    media_url = fields.String(allow_none=True)


#: Open311 errors are the specification's ``[{code, description}]`` list, not problem+json.
OPEN311_ERRORS = {
    400: "the spec's error list: a required field is missing or a value is invalid",
    403: "the spec's error list: api_key is missing or not valid",
    404: "the spec's error list: no such service, request or token",
}


# -- registry (seed file and admin API) -----------------------------------------------
#
# Create schemas load a whole entry; change schemas load a partial one for
# PATCH, without defaults (a missing field is left as it is) and without the
# fields that may not change (the id; a cell's community: re-drawing the map
# is a new cell). ``post_load`` turns points and lists into the tuples the
# domain's frozen dataclasses hold.


ID_RULE = "use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"


def _id(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Regexp(ID_PATTERN, error=ID_RULE), **kwargs)


def _ids(**kwargs: Any) -> fields.List:
    kwargs.setdefault("validate", validate.Length(max=500))
    return fields.List(_id(), **kwargs)


def _name(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=100), **kwargs)


def _point(value: dict[str, float]) -> tuple[float, float]:
    return (value["lat"], value["lon"])


class _ToDomain(marshmallow.Schema):
    @post_load
    def as_domain(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for key, value in data.items():
            if key == "centroid":
                data[key] = None if value is None else _point(value)
            elif key == "polygon":
                data[key] = tuple(_point(p) for p in value)
            elif isinstance(value, list):
                data[key] = tuple(value)
        return data


def _polygon(**kwargs: Any) -> fields.List:
    return fields.List(fields.Nested(LocationSchema), validate=validate.Length(max=200), **kwargs)


class CommunityCreateSchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)


class CommunityChangeSchema(_ToDomain):
    name = _name()


class CellCreateSchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)
    community = _id(required=True)
    centroid = fields.Nested(LocationSchema, allow_none=True, load_default=None)
    polygon = _polygon(load_default=list)
    adjacent = _ids(load_default=list)


class CellChangeSchema(_ToDomain):
    name = _name()
    centroid = fields.Nested(LocationSchema, allow_none=True)
    polygon = _polygon()
    adjacent = _ids()


class BuildingCreateSchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)
    cell = _id(required=True)


class BuildingChangeSchema(_ToDomain):
    name = _name()
    cell = _id()


class DepartmentCreateSchema(_ToDomain):
    id = _id(required=True)
    name_zh = _name(required=True)
    name_en = _name(required=True)
    categories = _ids(load_default=list)
    communities = _ids(load_default=list)
    cells = _ids(load_default=list)


class DepartmentChangeSchema(_ToDomain):
    name_zh = _name()
    name_en = _name()
    categories = _ids()
    communities = _ids()
    cells = _ids()


class GridWorkerCreateSchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)
    cells = _ids(required=True, validate=validate.Length(min=1, max=100))


class GridWorkerChangeSchema(_ToDomain):
    name = _name()
    cells = _ids(validate=validate.Length(min=1, max=100))


class CategoryCreateSchema(_ToDomain):
    code = _id(required=True)
    name_zh = _name(required=True)
    name_en = _name(required=True)
    urgency = fields.String(required=True, validate=validate.OneOf(URGENCY_TIERS))
    department = _id(required=True)
    opens_mediation = fields.Boolean(load_default=False)
    volunteer_task = fields.Boolean(load_default=False)
    sensitive = fields.Boolean(load_default=False)
    active = fields.Boolean(load_default=True)


class CategoryChangeSchema(_ToDomain):
    name_zh = _name()
    name_en = _name()
    urgency = fields.String(validate=validate.OneOf(URGENCY_TIERS))
    department = _id()
    opens_mediation = fields.Boolean()
    volunteer_task = fields.Boolean()
    sensitive = fields.Boolean()
    active = fields.Boolean()


class SeedBuildingSchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)


class SeedCellSchema(CellCreateSchema):
    community = _id(load_default="")
    buildings = fields.List(fields.Nested(SeedBuildingSchema), load_default=list)


class SeedCommunitySchema(_ToDomain):
    id = _id(required=True)
    name = _name(required=True)
    cells = fields.List(fields.Nested(SeedCellSchema), load_default=list)


class SeedSubdistrictSchema(marshmallow.Schema):
    id = _id(required=True)
    name = _name(required=True)


class RegistrySeedSchema(marshmallow.Schema):
    """``registry.yaml``: communities hold their cells, cells their buildings."""

    subdistrict = fields.Nested(SeedSubdistrictSchema, required=True)
    communities = fields.List(fields.Nested(SeedCommunitySchema), load_default=list)
    departments = fields.List(fields.Nested(DepartmentCreateSchema), load_default=list)
    grid_workers = fields.List(fields.Nested(GridWorkerCreateSchema), load_default=list)


def _location(point: tuple[float, float] | None) -> dict[str, float] | None:
    return None if point is None else {"lat": point[0], "lon": point[1]}


class SubdistrictSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()


class CommunityOutSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()
    subdistrict = fields.String()


class CellOutSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()
    community = fields.String()
    centroid = fields.Function(lambda cell: _location(cell.centroid))
    polygon = fields.Function(lambda cell: [_location(p) for p in cell.polygon])
    adjacent = fields.List(fields.String())


class BuildingOutSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()
    cell = fields.String()
    community = fields.String()


class DepartmentOutSchema(marshmallow.Schema):
    id = fields.String()
    name_zh = fields.String()
    name_en = fields.String()
    categories = fields.List(fields.String())
    communities = fields.List(fields.String())
    cells = fields.List(fields.String())


class GridWorkerOutSchema(marshmallow.Schema):
    id = fields.String()
    name = fields.String()
    cells = fields.List(fields.String())
    communities = fields.List(fields.String())


class RegistryCategorySchema(CategorySchema):
    active = fields.Boolean()


class RegistryListQuerySchema(marshmallow.Schema):
    """Lists are ordered by id; ``after`` is the last id of the previous page."""

    community = _id()
    cell = _id()
    after = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=200, validate=validate.Range(min=1, max=1000))


class RegistrySchemas(NamedTuple):
    """The schemas of one registry kind: POST body, PATCH body, and what the API returns."""

    create: type[marshmallow.Schema]
    change: type[marshmallow.Schema]
    out: type[marshmallow.Schema]


REGISTRY_SCHEMAS: dict[str, RegistrySchemas] = {
    "communities": RegistrySchemas(
        CommunityCreateSchema, CommunityChangeSchema, CommunityOutSchema
    ),
    "cells": RegistrySchemas(CellCreateSchema, CellChangeSchema, CellOutSchema),
    "buildings": RegistrySchemas(BuildingCreateSchema, BuildingChangeSchema, BuildingOutSchema),
    "departments": RegistrySchemas(
        DepartmentCreateSchema, DepartmentChangeSchema, DepartmentOutSchema
    ),
    "grid-workers": RegistrySchemas(
        GridWorkerCreateSchema, GridWorkerChangeSchema, GridWorkerOutSchema
    ),
    "categories": RegistrySchemas(
        CategoryCreateSchema, CategoryChangeSchema, RegistryCategorySchema
    ),
}


class RegistryOverviewSchema(marshmallow.Schema):
    subdistrict = fields.Nested(SubdistrictSchema)
    kinds = fields.List(fields.String())


def _one_of(part: str) -> dict[str, Any]:
    """A JSON Schema admitting any kind's schema: registry routes serve every kind by path."""
    return {"oneOf": [getattr(schemas, part) for schemas in REGISTRY_SCHEMAS.values()]}


#: OpenAPI shapes of the registry routes, whose ``{kind}`` path picks the schema.
REGISTRY_ENTRY_DOC = _one_of("out")
REGISTRY_CREATE_DOC = _one_of("create")
REGISTRY_CHANGE_DOC = _one_of("change")
REGISTRY_PAGE_DOC = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": REGISTRY_ENTRY_DOC},
        "next": {"type": "string", "nullable": True},
    },
}


# -- the ops SLA board (/sla/): HTML forms, loaded like the API's bodies and queries --------


class SlaQuerySchema(marshmallow.Schema):
    """The board's filters (a community, a department) and the page of the ordered list."""

    community = fields.String(validate=validate.Regexp(ID_PATTERN))
    department = fields.String(validate=validate.Regexp(ID_PATTERN))
    page = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE), load_default=1)

    @marshmallow.pre_load
    def blank_is_absent(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """An empty select ("全部社区") sends ``community=``: that means no filter."""
        return {key: value for key, value in data.items() if value != ""}


class SlaSignInSchema(marshmallow.Schema):
    """The sign-in form: a bearer token pasted by the member of staff, and the form's token."""

    token = fields.String(required=True, validate=validate.Length(min=1, max=8192))
    csrf = fields.String(required=True, validate=validate.Length(min=1, max=128))


class SlaSignOutSchema(marshmallow.Schema):
    csrf = fields.String(required=True, validate=validate.Length(min=1, max=128))


#: The board's pages are HTML: documented as a string, like the public board's.
SLA_PAGE_DOC = {"type": "string", "description": "an HTML page"}
