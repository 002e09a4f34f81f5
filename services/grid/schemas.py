"""The grid's HTTP schemas: what a report may contain and what the API returns."""

from typing import Any, NamedTuple

import marshmallow
from marshmallow import fields, post_load, validate

from shequ_services.grid.domain import CHANNELS, URGENCY_TIERS
from shequ_services.grid.registry import ID_PATTERN
from shequ_services.grid.workflow import RULES

MAX_DESCRIPTION = 2000


class LocationSchema(marshmallow.Schema):
    lat = fields.Float(required=True, validate=validate.Range(min=-90, max=90))
    lon = fields.Float(required=True, validate=validate.Range(min=-180, max=180))


class IncidentReportSchema(marshmallow.Schema):
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    grid_cell = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, load_default=None)
    channel = fields.String(load_default=None, validate=validate.OneOf(CHANNELS))


class IncidentSchema(marshmallow.Schema):
    id = fields.String()
    category = fields.String()
    grid_cell = fields.String()
    community = fields.String()
    description = fields.String()
    location = fields.Nested(LocationSchema, allow_none=True)
    channel = fields.String()
    urgency = fields.String()
    status = fields.String()
    reported_at = fields.AwareDateTime()
    version = fields.Integer()
    department = fields.String(allow_none=True)
    possible_duplicates = fields.List(fields.String())


#: Roles that see duplicate hints: a resident must not learn the ids of other people's reports.
DUPLICATE_HINT_ROLES = frozenset({"community_staff", "grid_worker", "admin", "auditor"})


def incident_schema(roles: frozenset[str], *, many: bool = False) -> IncidentSchema:
    """The incident schema for a caller: duplicate hints only for staff."""
    if roles & DUPLICATE_HINT_ROLES:
        return IncidentSchema(many=many)
    return IncidentSchema(many=many, exclude=("possible_duplicates",))


class IncidentListQuerySchema(marshmallow.Schema):
    community = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


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


class HistoryEntrySchema(marshmallow.Schema):
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    from_state = fields.String(data_key="from", attribute="from")
    to = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields")


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
