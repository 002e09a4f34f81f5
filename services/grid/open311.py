"""Translation between the grid domain and the Open311 GeoReport v2 interface.

Open311 lets third-party apps (a district's WeChat mini-program, a citizen
app, a city 12345 hub) file and follow reports without knowing our internals.
This module only translates: categories become GeoReport *services*, a
form-encoded POST becomes a checked ``Open311Request`` and then a new incident
placed in a grid cell, an incident becomes a public *request* view, and any of
those becomes the XML or JSON the spec describes; it also mints and hashes
clients' API keys. It is plain Python so every rule is tested without a
server; the HTTP routes call it and decide what to store, publish and
authorise.

Two rules shape it beyond the spec:

* a reporter's personal details (name, phone, e-mail, device and account ids)
  are split off into ``Open311Request.private`` (then ``Incident.private``) so
  the caller cannot publish them by accident, and the public view leaves out
  the resident's own words (description, typed address) as well;
* sensitive and retired categories are not offered: GeoReport is a public,
  anonymous interface, and sensitive categories concern residents' private
  circumstances that are reported through staff channels.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from shequ_services.grid import deadlines, domain
from shequ_services.grid.domain import Category, GridCell

DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
LIST_DATATYPES = ("singlevaluelist", "multivaluelist")
LANGUAGES = ("zh", "en")
STATUSES = ("open", "closed")

DESCRIPTION_MAX = 4000
"""The spec limits a request's free-text description to 4,000 characters."""

LIST_SPAN = timedelta(days=90)
"""GET requests: a date range may not span more than 90 days, and defaults to the last 90."""

LIST_LIMIT = 1000
"""GET requests: at most the first 1000 requests are returned."""

PRIVATE_FIELDS = ("email", "device_id", "account_id", "first_name", "last_name", "phone")
"""Fields that identify the reporter; they never appear in a public view."""

_ATTRIBUTE_FIELD = re.compile(r"^attribute\[([^\[\]]+)\](\[\])?$")
# Characters XML 1.0 cannot carry at all; replaced so output is always well-formed.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CHILD_TAGS = {"attributes": "attribute", "values": "value", "services": "service"}


class Open311Error(Exception):
    """A request the interface refuses, carrying the spec's error list.

    ``status`` is the HTTP status (400 bad input, 403 missing or wrong
    api_key, 404 unknown resource); ``errors`` holds every problem found as
    ``(code, description)`` so a client can fix them all in one round trip.
    """

    def __init__(self, status: int, errors: list[tuple[str, str]]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(f"{code}: {text}" for code, text in self.errors)


@dataclass(frozen=True)
class Attribute:
    """One extra question a service asks (a GeoReport service-definition attribute).

    ``values`` holds ``(key, name)`` pairs and is only meaningful for the two
    list datatypes; ``variable=False`` marks text shown to the user that takes
    no answer.
    """

    code: str
    datatype: str
    description: str
    order: int
    required: bool = False
    variable: bool = True
    datatype_description: str | None = None
    values: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.code or _ATTRIBUTE_FIELD.match(f"attribute[{self.code}]") is None:
            raise ValueError(f"attribute code {self.code!r} cannot be sent in a form")
        if self.datatype not in DATATYPES:
            raise ValueError(f"attribute {self.code}: unknown datatype {self.datatype!r}")
        if self.order < 1:
            raise ValueError(f"attribute {self.code}: order must be a positive integer")
        if (self.datatype in LIST_DATATYPES) != bool(self.values):
            raise ValueError(f"attribute {self.code}: values go with, and only with, list types")
        keys = [key for key, _ in self.values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"attribute {self.code}: value keys repeat")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.values)

    def to_dict(self) -> dict[str, Any]:
        """The attribute as the spec lays it out, in the spec's field order."""
        return {
            "variable": self.variable,
            "code": self.code,
            "datatype": self.datatype,
            "required": self.required,
            "datatype_description": self.datatype_description,
            "order": self.order,
            "description": self.description,
            "values": [{"key": key, "name": name} for key, name in self.values],
        }


def parse_attributes(raw: Iterable[Mapping[str, Any]]) -> list[Attribute]:
    """Build one service's attributes from data (the shape YAML will carry).

    Refuses repeated codes and orders, since the spec makes both unique
    within a service and a client would otherwise render an ambiguous form.
    """
    attributes: list[Attribute] = []
    for item in raw:
        fields = dict(item)
        fields["values"] = tuple(
            (str(value["key"]), str(value["name"])) for value in fields.get("values", ())
        )
        attributes.append(Attribute(**fields))
    codes = [attribute.code for attribute in attributes]
    orders = [attribute.order for attribute in attributes]
    if len(set(codes)) != len(codes):
        raise ValueError("attribute codes repeat within a service")
    if len(set(orders)) != len(orders):
        raise ValueError("attribute orders repeat within a service")
    return sorted(attributes, key=lambda attribute: attribute.order)


def parse_questions(
    raw: Mapping[str, Iterable[Mapping[str, Any]]] | None,
) -> dict[str, list[Attribute]]:
    """Every category's extra questions from data (``questions.yaml``), by category code."""
    return {str(code): parse_attributes(items or ()) for code, items in (raw or {}).items()}


SHIPPED_QUESTIONS = Path(__file__).with_name("questions.yaml")

ATTRIBUTES: dict[str, list[Attribute]] = parse_questions(
    yaml.safe_load(SHIPPED_QUESTIONS.read_text(encoding="utf-8"))
)
"""The shipped extra questions; a district's own file replaces them through ``Reference``."""


def attributes_for(
    code: str, registry: Mapping[str, Sequence[Attribute]] | None = None
) -> list[Attribute]:
    """The attributes of one service, in presentation order (none if it has none)."""
    registry = ATTRIBUTES if registry is None else registry
    return sorted(registry.get(code, ()), key=lambda attribute: attribute.order)


def is_offered(category: Category, *, include_sensitive: bool = False) -> bool:
    """Whether the category is open to Open311 clients.

    Retired categories take no new reports; sensitive ones are left to staff
    channels unless the caller serves an authenticated staff client.
    """
    return category.active and (include_sensitive or not category.sensitive)


def service_list(
    categories: Iterable[Category],
    lang: str = "zh",
    *,
    include_sensitive: bool = False,
    registry: Mapping[str, Sequence[Attribute]] | None = None,
) -> list[dict[str, Any]]:
    """GET services: one entry per offered category, in the order given.

    The name follows ``lang``; the other language's name and the code go into
    ``keywords`` so a search in either language finds the service, and the
    responsible department is the ``group``. Every service is ``realtime``
    because the grid assigns an incident id as soon as a report is accepted.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGUAGES}")
    services = []
    for category in categories:
        if not is_offered(category, include_sensitive=include_sensitive):
            continue
        name, other = (
            (category.name_zh, category.name_en)
            if lang == "zh"
            else (category.name_en, category.name_zh)
        )
        services.append(
            {
                "service_code": category.code,
                "service_name": name,
                "description": other,
                "metadata": bool(attributes_for(category.code, registry)),
                "type": "realtime",
                "keywords": f"{other}, {category.code}",
                "group": category.department,
            }
        )
    return services


def service_definition(
    category: Category, *, registry: Mapping[str, Sequence[Attribute]] | None = None
) -> dict[str, Any]:
    """GET service definition: the category's extra questions (an empty list if none)."""
    return {
        "service_code": category.code,
        "attributes": [
            attribute.to_dict() for attribute in attributes_for(category.code, registry)
        ],
    }


@dataclass(frozen=True)
class Open311Request:
    """A checked POST requests form, ready for ``report_incident``.

    ``private`` holds the reporter's personal fields: store them with the
    incident's access controls, never in anything published. ``api_key`` is
    kept out of ``repr`` so it does not leak into logs.
    """

    service_code: str
    api_key: str = field(repr=False)
    lat: float | None = None
    long: float | None = None
    address_string: str | None = None
    address_id: str | None = None
    description: str | None = None
    media_url: str | None = None
    attributes: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    private: dict[str, str] = field(default_factory=dict)

    @property
    def location(self) -> dict[str, float] | None:
        """The point in the shape ``Incident.location`` keeps, if one was sent."""
        if self.lat is None or self.long is None:
            return None
        return {"lat": self.lat, "lon": self.long}


def parse_request(
    form: Mapping[str, list[str]],
    categories: Mapping[str, Category],
    *,
    include_sensitive: bool = False,
    registry: Mapping[str, Sequence[Attribute]] | None = None,
) -> Open311Request:
    """POST requests: check a form-encoded service request and collect every problem.

    A missing ``api_key`` stops at once with 403, as the spec files it under
    authorisation; whether a *given* key is valid is the caller's decision.
    Everything else is checked in full and reported together: 404 when the
    service_code names no offered service (the spec's status for it), else 400.
    Empty fields count as absent, as the spec defines optional arguments.
    """
    errors: list[tuple[str, str]] = []

    def single(name: str) -> str | None:
        present = [value for value in form.get(name, []) if value != ""]
        if len(present) > 1:
            errors.append(("repeated_field", f"{name} was sent more than once"))
        return present[0] if present else None

    api_key = single("api_key")
    if api_key is None:
        raise Open311Error(403, [("missing_api_key", "api_key was not provided")])

    status = 400
    service_code = single("service_code")
    category = categories.get(service_code) if service_code else None
    if service_code is None:
        errors.append(("missing_service_code", "service_code was not provided"))
    elif category is None or not is_offered(category, include_sensitive=include_sensitive):
        errors.append(("unknown_service_code", f"service_code {service_code!r} was not found"))
        category = None

    lat = _coordinate(single("lat"), "lat", 90.0, errors)
    long = _coordinate(single("long"), "long", 180.0, errors)
    address_string = single("address_string")
    address_id = single("address_id")
    sent_lat, sent_long = "lat" in _sent(form), "long" in _sent(form)
    if sent_lat != sent_long:
        errors.append(("incomplete_location", "lat and long must be sent together"))
    elif not sent_lat and address_string is None and address_id is None:
        errors.append(
            ("missing_location", "one of lat & long, address_string or address_id is required")
        )

    description = single("description")
    if description is not None and len(description) > DESCRIPTION_MAX:
        errors.append(
            ("description_too_long", f"description is limited to {DESCRIPTION_MAX} characters")
        )
    media_url = single("media_url")
    if media_url is not None and not _is_web_url(media_url):
        errors.append(("invalid_media_url", "media_url must be an http or https URL"))

    private = {name: value for name in PRIVATE_FIELDS if (value := single(name)) is not None}
    attributes: dict[str, str | tuple[str, ...]] = {}
    if category is not None:
        attributes = _check_attributes(form, attributes_for(category.code, registry), errors)

    if errors:
        if service_code is not None and category is None:
            status = 404
        raise Open311Error(status, errors)
    assert service_code is not None
    return Open311Request(
        service_code=service_code,
        api_key=api_key,
        lat=lat,
        long=long,
        address_string=address_string,
        address_id=address_id,
        description=description,
        media_url=media_url,
        attributes=attributes,
        private=private,
    )


def _sent(form: Mapping[str, list[str]]) -> set[str]:
    return {name for name, values in form.items() if any(value != "" for value in values)}


def _coordinate(
    raw: str | None, name: str, bound: float, errors: list[tuple[str, str]]
) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not -bound <= value <= bound:
        errors.append(
            (f"invalid_{name}", f"{name} must be a WGS84 number from -{bound:g} to {bound:g}")
        )
        return None
    return value


def _is_web_url(raw: str) -> bool:
    """Only web links are republished: anything else (javascript:, file:) is refused."""
    parts = urlsplit(raw)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_attributes(
    form: Mapping[str, list[str]],
    definition: Sequence[Attribute],
    errors: list[tuple[str, str]],
) -> dict[str, str | tuple[str, ...]]:
    """Read ``attribute[code]`` / ``attribute[code][]`` fields against the definition."""
    sent: dict[str, list[str]] = {}
    bracketed: set[str] = set()
    for name, values in form.items():
        match = _ATTRIBUTE_FIELD.match(name)
        if match is None:
            continue
        present = [value for value in values if value != ""]
        if not present:
            continue
        code = match.group(1)
        sent.setdefault(code, []).extend(present)
        if match.group(2):
            bracketed.add(code)

    by_code = {attribute.code: attribute for attribute in definition}
    for code in sorted(set(sent) - set(by_code)):
        errors.append(("unknown_attribute", f"attribute {code!r} is not asked by this service"))

    answers: dict[str, str | tuple[str, ...]] = {}
    for attribute in definition:
        values = sent.get(attribute.code)
        if not attribute.variable:
            if values:
                errors.append(
                    ("invalid_attribute", f"attribute {attribute.code!r} takes no answer")
                )
            continue
        if not values:
            if attribute.required:
                errors.append(("missing_attribute", f"attribute {attribute.code!r} is required"))
            continue
        answer = _check_answer(attribute, values, attribute.code in bracketed, errors)
        if answer is not None:
            answers[attribute.code] = answer
    return answers


def _check_answer(
    attribute: Attribute, values: list[str], bracketed: bool, errors: list[tuple[str, str]]
) -> str | tuple[str, ...] | None:
    code = attribute.code
    if attribute.datatype == "multivaluelist":
        wrong = [value for value in values if value not in attribute.keys]
        if wrong:
            errors.append(
                (
                    "invalid_attribute",
                    f"attribute {code!r}: {', '.join(wrong)} not among its values",
                )
            )
            return None
        return tuple(dict.fromkeys(values))
    if bracketed or len(values) > 1:
        errors.append(("invalid_attribute", f"attribute {code!r} takes a single value"))
        return None
    value = values[0]
    problem = _datatype_problem(attribute, value)
    if problem is not None:
        errors.append(("invalid_attribute", f"attribute {code!r}: {problem}"))
        return None
    return value


def _datatype_problem(attribute: Attribute, value: str) -> str | None:
    if attribute.datatype == "singlevaluelist" and value not in attribute.keys:
        return f"{value} is not among its values"
    if attribute.datatype == "string" and ("\n" in value or "\r" in value):
        return "a string takes no line breaks"
    if attribute.datatype == "number":
        try:
            if not math.isfinite(float(value)):
                raise ValueError(value)
        except ValueError:
            return "expected a number"
    if attribute.datatype == "datetime" and _parse_w3(value) is None:
        return "expected an ISO 8601 date-time with a time zone"
    if attribute.datatype in ("string", "text") and len(value) > DESCRIPTION_MAX:
        return f"limited to {DESCRIPTION_MAX} characters"
    return None


def w3_datetime(value: datetime) -> str:
    """A date-time in the W3 profile of ISO 8601 the spec requires, offset included.

    A naive date-time is refused: the spec makes the time zone mandatory and
    guessing one would shift every deadline a client shows.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Open311 date-times must carry a time zone")
    return value.replace(microsecond=0).isoformat()


def _parse_w3(raw: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None or "T" not in raw:
        return None
    return value


def request_view(
    *,
    service_request_id: str,
    status_open: bool,
    status_notes: str | None,
    service_name: str,
    service_code: str,
    description: str | None,
    agency_responsible: str | None,
    service_notice: str | None,
    requested_datetime: datetime,
    updated_datetime: datetime,
    expected_datetime: datetime | None,
    address: str | None,
    lat: float | None,
    long: float | None,
    media_url: str | None = None,
) -> dict[str, Any]:
    """GET requests: one request in the spec's field order, ready for JSON or ``to_xml``.

    Keyword-only so the caller states each public field on purpose; nothing
    personal is accepted here at all.
    """
    return {
        "service_request_id": service_request_id,
        "status": "open" if status_open else "closed",
        "status_notes": status_notes,
        "service_name": service_name,
        "service_code": service_code,
        "description": description,
        "agency_responsible": agency_responsible,
        "service_notice": service_notice,
        "requested_datetime": w3_datetime(requested_datetime),
        "updated_datetime": w3_datetime(updated_datetime),
        "expected_datetime": None if expected_datetime is None else w3_datetime(expected_datetime),
        "address": address,
        "lat": lat,
        "long": long,
        "media_url": media_url,
    }


def errors_body(errors: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """The spec's error list in its JSON form: ``[{code, description}, ...]``."""
    return [{"code": code, "description": description} for code, description in errors]


def xml_text(value: Any) -> str:
    """How a scalar is written in XML; JSON keeps the value itself.

    Booleans are ``true``/``false`` as the spec spells them, None is an empty
    element, date-times are W3 format.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return w3_datetime(value)
    if isinstance(value, int | float | str):
        return _XML_ILLEGAL.sub("\ufffd", str(value))
    raise TypeError(f"cannot write {type(value).__name__} as Open311 XML")


def to_xml(root: str, item_tag: str, items: Sequence[Mapping[str, Any]]) -> bytes:
    """A list response as the spec's XML: ``<root><item_tag>…</item_tag>…</root>``.

    Used for ``services/service``, ``service_requests/request`` and
    ``errors/error``.
    """
    element = ET.Element(root)
    for item in items:
        _fill(ET.SubElement(element, item_tag), item)
    return _document(element)


def object_to_xml(root: str, fields: Mapping[str, Any]) -> bytes:
    """A single-object response (the service definition) with ``root`` as its element."""
    element = ET.Element(root)
    _fill(element, fields)
    return _document(element)


def _document(element: ET.Element) -> bytes:
    # Written by hand so the declaration uses the spec's double-quoted encoding="UTF-8".
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def _fill(element: ET.Element, fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        child = ET.SubElement(element, key)
        _write(child, key, value)


def _write(element: ET.Element, key: str, value: Any) -> None:
    """Nested mappings become child elements; a list under ``xs`` becomes ``<x>`` items."""
    if isinstance(value, Mapping):
        _fill(element, value)
    elif isinstance(value, list | tuple):
        tag = _CHILD_TAGS.get(key) or (key[:-1] if key.endswith("s") and len(key) > 1 else "item")
        for entry in value:
            _write(ET.SubElement(element, tag), tag, entry)
    else:
        element.text = xml_text(value) or None


@dataclass(frozen=True)
class ListQuery:
    """A checked GET requests query.

    When ``service_request_ids`` is set it overrides every other filter, as
    the spec says, and the date range is ``None``. Empty ``service_codes`` or
    ``statuses`` mean all of them.
    """

    service_request_ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    limit: int = LIST_LIMIT


def parse_list_query(args: Mapping[str, str], now: datetime) -> ListQuery:
    """GET requests: read the filters and apply the spec's default volume.

    Without dates the range is the 90 days up to ``now``; with only one date
    the other is 90 days away from it, so a client paging through history by
    start_date alone is never refused. A range ending before it starts or
    spanning more than 90 days is a 400, listing every problem found.
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    ids = _csv(args.get("service_request_id"))
    if ids:
        return ListQuery(service_request_ids=ids)

    errors: list[tuple[str, str]] = []
    statuses = _csv(args.get("status"))
    for status in statuses:
        if status not in STATUSES:
            errors.append(("invalid_status", f"status {status!r} is not one of open, closed"))
    start = _date_arg(args, "start_date", errors)
    end = _date_arg(args, "end_date", errors)
    if start is None and end is None:
        start, end = now - LIST_SPAN, now
    elif end is None:
        assert start is not None
        end = start + LIST_SPAN
    elif start is None:
        start = end - LIST_SPAN
    if end < start:
        errors.append(("end_before_start", "end_date is before start_date"))
    elif end - start > LIST_SPAN:
        errors.append(("span_too_long", "start_date to end_date may not span more than 90 days"))
    if errors:
        raise Open311Error(400, errors)
    return ListQuery(
        service_codes=_csv(args.get("service_code")), statuses=statuses, start=start, end=end
    )


def _csv(raw: str | None) -> tuple[str, ...]:
    """Comma-delimited values, trimmed, blanks and repeats dropped, order kept."""
    if not raw:
        return ()
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def _date_arg(args: Mapping[str, str], name: str, errors: list[tuple[str, str]]) -> datetime | None:
    raw = args.get(name)
    if not raw:
        return None
    value = _parse_w3(raw)
    if value is None:
        errors.append(
            (
                f"invalid_{name}",
                f"{name} must be W3 format with a time zone, eg 2010-01-01T00:00:00Z",
            )
        )
    return value


# --- from a checked request to an incident, and back to a public view ---------------------

CHANNEL = "open311"
CLOSED_STATES = domain.NOT_OPEN_STATES
"""Grid states an Open311 client sees as ``closed``; every other state is ``open``."""

PLACE_WITHIN_M = 1500.0
"""A point farther than this from every cell centre is outside the sub-district."""

_EARTH_RADIUS_M = 6_371_000.0

STATUS_NOTES = {
    "reported": "已收到，等待社区受理",
    "accepted": "社区已受理，正在派遣",
    "rejected": "经核实不予受理",
    "merged": "与已受理的同一事项重复，已合并办理",
    "dispatched": "已派遣至责任部门",
    "in_progress": "责任部门正在处置",
    "handled": "已处置，等待网格员现场核查",
    "deferred": "已挂账，待条件具备后办理",
    "reopened": "已重新办理",
    "closed_resolved": "已办结，问题已解决",
    "closed_unresolved": "已结案，问题未能解决",
}
"""A fixed note per grid state: staff free text (reasons, feedback) is never republished."""

_UNIT_ZH = {
    "seconds": "秒",
    "minutes": "分钟",
    "hours": "小时",
    "calendar_days": "天",
    "working_days": "个工作日",
}


def place(
    request: Open311Request,
    cells: Mapping[str, GridCell],
    centroids: Mapping[str, tuple[float, float]],
) -> GridCell:
    """The grid cell a request belongs to, or a 400 saying how to send one that can be placed.

    ``address_id`` is the jurisdiction's own address id in the spec; ours is the
    grid cell, so a client that knows the cell names it there and that wins.
    Otherwise the nearest cell centre to ``lat``/``long`` within
    ``PLACE_WITHIN_M``. An ``address_string`` alone cannot be placed: the grid
    does no geocoding.
    """
    if request.address_id is not None:
        cell = cells.get(request.address_id)
        if cell is None:
            raise Open311Error(
                400,
                [("unknown_address_id", f"address_id {request.address_id!r} is no grid cell here")],
            )
        return cell
    if request.lat is None or request.long is None:
        raise Open311Error(
            400,
            [
                (
                    "unplaceable_request",
                    "send lat & long, or a grid cell id as address_id; "
                    "address_string alone cannot be placed",
                )
            ],
        )
    distances = [
        (_metres(request.lat, request.long, *centre), cell_id)
        for cell_id, centre in centroids.items()
        if cell_id in cells
    ]
    if not distances or min(distances)[0] > PLACE_WITHIN_M:
        raise Open311Error(
            400,
            [("outside_area", "lat & long are not within any grid cell of this sub-district")],
        )
    return cells[min(distances)[1]]


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; plenty for picking the nearest of a few cell centres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(a))


def open_incident(
    request: Open311Request,
    *,
    client: str,
    categories: dict[str, Category],
    cells: dict[str, GridCell],
    centroids: Mapping[str, tuple[float, float]],
    now: datetime,
    policy: deadlines.Policy,
) -> domain.Incident:
    """A new incident from a checked request, through the same rules as a native report.

    The reporter is the client (``open311:<name>``): the person behind it is
    known only by the personal fields they chose to send, which go to
    ``Incident.private`` and nowhere else.
    """
    cell = place(request, cells, centroids)
    incident = domain.report_incident(
        categories=categories,
        cells=cells,
        category=request.service_code,
        grid_cell=cell.id,
        description=request.description or "",
        location=request.location,
        reporter=f"{CHANNEL}:{client}",
        channel=CHANNEL,
        now=now,
        policy=policy,
    )
    incident.private = dict(request.private)
    incident.open311 = {
        "client": client,
        "token": secrets.token_urlsafe(16),
        "attributes": {
            k: list(v) if isinstance(v, tuple) else v for k, v in request.attributes.items()
        },
        "address_string": request.address_string,
        "address_id": request.address_id,
        "media_url": request.media_url,
    }
    return incident


def service_notice(category: Category, policy: deadlines.Policy) -> str:
    """What the client may tell the resident about the time limit this service works to."""
    rule = next((rule for rule in policy.clocks if rule.name == "resolve"), None)
    if rule is None:
        return ""
    limit = policy.limit_for(rule, category.urgency)
    return f"派遣责任部门后 {limit.amount} {_UNIT_ZH[limit.unit]}内办结"


def incident_view(
    incident: domain.Incident,
    *,
    category: Category,
    cells: Mapping[str, GridCell],
    policy: deadlines.Policy,
) -> dict[str, Any]:
    """GET requests: an incident as a public service request.

    The description, the address as typed and everything in ``private`` are
    the resident's words and stay inside; the address shown is the grid
    cell's name and the status note is a fixed text per state.
    """
    resolve = incident.clocks.get("resolve")
    cell = cells.get(incident.grid_cell)
    location = incident.location or {}
    details = incident.open311 or {}
    return request_view(
        service_request_id=incident.id,
        status_open=incident.status not in CLOSED_STATES,
        status_notes=STATUS_NOTES.get(incident.status),
        service_name=category.name_zh,
        service_code=category.code,
        description=None,
        agency_responsible=incident.department or category.department,
        service_notice=service_notice(category, policy) or None,
        requested_datetime=incident.reported_at,
        updated_datetime=max([incident.reported_at, *(entry["at"] for entry in incident.history)]),
        expected_datetime=resolve.deadline if resolve is not None else None,
        address=cell.name if cell is not None else None,
        lat=location.get("lat"),
        long=location.get("lon"),
        media_url=details.get("media_url"),
    )


def posted_view(incident: domain.Incident, notice: str | None) -> dict[str, Any]:
    """POST requests: the id (the grid is realtime), a token to look it up by, the notice."""
    details = incident.open311 or {}
    return {
        "service_request_id": incident.id,
        "token": details.get("token"),
        "service_notice": notice or None,
        "account_id": None,
    }


# --- API keys -------------------------------------------------------------------------------

API_KEY_BYTES = 32
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_api_key() -> str:
    """A key for one Open311 client: random, shown once, stored only as its hash."""
    return secrets.token_urlsafe(API_KEY_BYTES)


def hash_api_key(key: str) -> str:
    """SHA-256 is enough here: the key is 256 random bits, nothing to guess or stretch."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_client_name(name: str) -> str:
    """A client's name is a label in ids (``open311:<name>``) and logs: short and plain."""
    if not CLIENT_NAME.match(name):
        raise ValueError(
            "a client name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def api_key_of(form: Mapping[str, list[str]]) -> str:
    """The api_key a POST carries; its absence is the spec's 403 before anything else."""
    present = [value for value in form.get("api_key", []) if value != ""]
    if not present:
        raise Open311Error(403, [("missing_api_key", "api_key was not provided")])
    return present[0]
