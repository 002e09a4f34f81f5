import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from shequ_services.grid import deadlines, domain, open311, workflow
from shequ_services.grid.open311 import Attribute, Open311Error
from shequ_services.grid.reference import load_seed

HERE = Path(domain.__file__).parent
CATEGORIES = domain.parse_categories(yaml.safe_load((HERE / "categories.yaml").read_text()))
CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=CST)


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    """A multi-dict as a form parser gives it; ``attribute__x`` spells ``attribute[x]``."""
    base: dict[str, str | list[str]] = {
        "api_key": "key-1",
        "service_code": "alley_unclean",
        "lat": "30.27",
        "long": "120.15",
    }
    base.update(fields)
    return {
        name.replace("attribute__", "attribute[").replace("__", "]"): (
            value if isinstance(value, list) else [value]
        )
        for name, value in base.items()
    }


def problems(raw: dict[str, list[str]], **kwargs: object) -> Open311Error:
    with pytest.raises(Open311Error) as caught:
        open311.parse_request(raw, CATEGORIES, **kwargs)  # type: ignore[arg-type]
    return caught.value


def codes(error: Open311Error) -> list[str]:
    return [code for code, _ in error.errors]


def a_request(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "service_request_id": "INC-20261123-0123456789ab",
        "status_open": False,
        "status_notes": "已修复",
        "service_name": "公共设施损坏",
        "service_code": "facility_damaged",
        "description": None,
        "agency_responsible": "municipal",
        "service_notice": None,
        "requested_datetime": datetime(2026, 11, 20, 8, 15, 30, 123456, tzinfo=CST),
        "updated_datetime": datetime(2026, 11, 21, 1, 0, tzinfo=UTC),
        "expected_datetime": None,
        "address": "柳树社区 3 号楼",
        "lat": 30.27,
        "long": 120.15,
        "media_url": None,
    }
    args.update(overrides)
    return open311.request_view(**args)  # type: ignore[arg-type]


# --- service list -------------------------------------------------------------------------


def test_a_service_carries_exactly_the_spec_fields() -> None:
    service = open311.service_list([CATEGORIES["alley_unclean"]])[0]
    assert list(service) == [
        "service_code", "service_name", "description", "metadata", "type", "keywords", "group",
    ]  # fmt: skip
    assert service["type"] == "realtime"
    assert service["group"] == "city_management"


def test_the_service_name_follows_the_requested_language() -> None:
    zh = open311.service_list([CATEGORIES["safety_hazard"]], "zh")[0]
    en = open311.service_list([CATEGORIES["safety_hazard"]], "en")[0]
    assert zh["service_name"] == "有不安全隐患"
    assert en["service_name"] == "Safety hazard"
    assert "Safety hazard" in zh["keywords"] and "有不安全隐患" in en["keywords"]


def test_an_unsupported_language_is_refused() -> None:
    with pytest.raises(ValueError):
        open311.service_list(CATEGORIES.values(), "fr")


def test_metadata_is_true_only_for_categories_with_extra_questions() -> None:
    flags = {s["service_code"]: s["metadata"] for s in open311.service_list(CATEGORIES.values())}
    assert flags["facility_damaged"] is True
    assert flags["safety_hazard"] is True
    assert flags["alley_unclean"] is False


def test_sensitive_categories_are_not_offered_by_default() -> None:
    offered = {s["service_code"] for s in open311.service_list(CATEGORIES.values())}
    sensitive = {code for code, category in CATEGORIES.items() if category.sensitive}
    assert sensitive and not offered & sensitive
    assert offered == set(CATEGORIES) - sensitive


def test_sensitive_categories_are_offered_when_the_caller_asks() -> None:
    listed = open311.service_list(CATEGORIES.values(), include_sensitive=True)
    assert {s["service_code"] for s in listed} == set(CATEGORIES)


def test_retired_categories_are_not_offered() -> None:
    retired = domain.Category("old", "旧", "Old", "simple", "municipal", active=False)
    assert open311.service_list([retired], include_sensitive=True) == []


def test_the_service_list_xml_has_the_spec_shape() -> None:
    body = open311.to_xml("services", "service", open311.service_list(CATEGORIES.values()))
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)  # noqa: S314 - our own output
    assert root.tag == "services"
    first = root.find("service")
    assert first is not None
    assert [child.tag for child in first] == [
        "service_code", "service_name", "description", "metadata", "type", "keywords", "group",
    ]  # fmt: skip
    assert root.findtext("service/service_name") == "公共设施损坏"
    assert root.findtext("service/metadata") == "true"


# --- service definition -------------------------------------------------------------------


def test_every_attribute_registry_entry_names_a_shipped_category() -> None:
    assert set(open311.ATTRIBUTES) <= set(CATEGORIES)


def test_the_facility_definition_asks_for_the_facility_type_from_a_list() -> None:
    definition = open311.service_definition(CATEGORIES["facility_damaged"])
    assert definition["service_code"] == "facility_damaged"
    (attribute,) = definition["attributes"]
    assert attribute["code"] == "facility_type"
    assert attribute["datatype"] == "singlevaluelist"
    assert attribute["required"] is True and attribute["variable"] is True
    assert [v["key"] for v in attribute["values"]] == ["streetlight", "manhole", "bench", "other"]
    assert [v["name"] for v in attribute["values"]] == ["路灯", "井盖", "座椅", "其他"]


def test_an_attribute_has_the_spec_fields_in_the_spec_order() -> None:
    attribute = open311.service_definition(CATEGORIES["safety_hazard"])["attributes"][1]
    assert list(attribute) == [
        "variable", "code", "datatype", "required", "datatype_description", "order",
        "description", "values",
    ]  # fmt: skip
    assert attribute["code"] == "hazard_detail" and attribute["values"] == []


def test_attributes_are_listed_in_their_presentation_order() -> None:
    registry = {"alley_unclean": [Attribute("b", "string", "B", 2), Attribute("a", "text", "A", 1)]}
    definition = open311.service_definition(CATEGORIES["alley_unclean"], registry=registry)
    assert [a["order"] for a in definition["attributes"]] == [1, 2]


def test_a_category_without_questions_has_an_empty_definition() -> None:
    definition = open311.service_definition(CATEGORIES["alley_unclean"])
    assert definition == {"service_code": "alley_unclean", "attributes": []}


def test_the_service_definition_xml_has_the_spec_shape() -> None:
    body = open311.object_to_xml(
        "service_definition", open311.service_definition(CATEGORIES["facility_damaged"])
    )
    root = ET.fromstring(body)  # noqa: S314 - our own output
    assert root.tag == "service_definition"
    assert root.findtext("service_code") == "facility_damaged"
    assert root.findtext("attributes/attribute/code") == "facility_type"
    assert root.findtext("attributes/attribute/required") == "true"
    assert root.findtext("attributes/attribute/datatype_description") == ""
    keys = [v.findtext("key") for v in root.findall("attributes/attribute/values/value")]
    assert keys == ["streetlight", "manhole", "bench", "other"]
    assert root.findtext("attributes/attribute/values/value/name") == "路灯"


def test_an_attribute_with_an_unknown_datatype_is_refused() -> None:
    with pytest.raises(ValueError, match="datatype"):
        Attribute("x", "boolean", "X", 1)


def test_a_list_attribute_without_values_is_refused() -> None:
    with pytest.raises(ValueError, match="values"):
        Attribute("x", "singlevaluelist", "X", 1)


def test_a_plain_attribute_with_values_is_refused() -> None:
    with pytest.raises(ValueError, match="values"):
        Attribute("x", "string", "X", 1, values=(("a", "A"),))


def test_an_attribute_order_must_be_positive() -> None:
    with pytest.raises(ValueError, match="order"):
        Attribute("x", "string", "X", 0)


def test_an_attribute_code_with_brackets_is_refused() -> None:
    with pytest.raises(ValueError, match="form"):
        Attribute("x]", "string", "X", 1)


def test_repeated_attribute_codes_in_one_service_are_refused() -> None:
    raw = [
        {"code": "x", "datatype": "string", "description": "X", "order": 1},
        {"code": "x", "datatype": "string", "description": "X", "order": 2},
    ]
    with pytest.raises(ValueError, match="codes"):
        open311.parse_attributes(raw)


def test_repeated_attribute_orders_in_one_service_are_refused() -> None:
    raw = [
        {"code": "x", "datatype": "string", "description": "X", "order": 1},
        {"code": "y", "datatype": "string", "description": "Y", "order": 1},
    ]
    with pytest.raises(ValueError, match="orders"):
        open311.parse_attributes(raw)


# --- POST requests ------------------------------------------------------------------------


def test_a_minimal_request_with_a_point_is_accepted() -> None:
    request = open311.parse_request(form(), CATEGORIES)
    assert request.service_code == "alley_unclean"
    assert request.location == {"lat": 30.27, "lon": 120.15}
    assert request.api_key == "key-1"
    assert request.private == {} and request.attributes == {}


def test_an_address_string_alone_is_a_location() -> None:
    request = open311.parse_request(
        form(lat="", long="", address_string="柳树社区 3 号楼"), CATEGORIES
    )
    assert request.address_string == "柳树社区 3 号楼"
    assert request.location is None


def test_an_address_id_alone_is_a_location() -> None:
    request = open311.parse_request(form(lat=[], long=[], address_id="A-17"), CATEGORIES)
    assert request.address_id == "A-17"


def test_the_spec_example_request_is_accepted_with_personal_fields_kept_private() -> None:
    raw = form(
        jurisdiction_id="city.gov",
        address_string="1234 5th street",
        email="smit333@sfgov.edu",
        device_id="tt222111",
        account_id="123456",
        first_name="john",
        last_name="smith",
        phone="111111111",
        description="A large sinkhole is destroying the street",
        media_url="http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg",
    )
    request = open311.parse_request(raw, CATEGORIES)
    assert request.private == {
        "email": "smit333@sfgov.edu",
        "device_id": "tt222111",
        "account_id": "123456",
        "first_name": "john",
        "last_name": "smith",
        "phone": "111111111",
    }
    assert request.description == "A large sinkhole is destroying the street"
    assert request.media_url is not None and request.media_url.startswith("http://farm3")


def test_personal_fields_appear_nowhere_but_private() -> None:
    request = open311.parse_request(form(phone="13800000000", first_name="张"), CATEGORIES)
    public = {name: value for name, value in vars(request).items() if name != "private"}
    assert "13800000000" not in repr(public) and "张" not in repr(public)


def test_the_api_key_is_kept_out_of_the_repr() -> None:
    assert "key-1" not in repr(open311.parse_request(form(), CATEGORIES))


def test_a_missing_api_key_is_a_403_before_anything_else() -> None:
    raw = form(service_code="")
    del raw["api_key"]
    error = problems(raw)
    assert error.status == 403
    assert codes(error) == ["missing_api_key"]


def test_an_empty_api_key_counts_as_missing() -> None:
    assert problems(form(api_key="")).status == 403


def test_a_missing_service_code_is_a_400() -> None:
    error = problems(form(service_code=""))
    assert error.status == 400
    assert codes(error) == ["missing_service_code"]


def test_an_unknown_service_code_is_a_404() -> None:
    error = problems(form(service_code="flying_saucer"))
    assert error.status == 404
    assert codes(error) == ["unknown_service_code"]


def test_a_sensitive_service_code_is_not_found_by_default() -> None:
    error = problems(form(service_code="new_pregnancy"))
    assert (error.status, codes(error)) == (404, ["unknown_service_code"])


def test_a_sensitive_service_code_is_accepted_when_the_caller_allows_it() -> None:
    request = open311.parse_request(
        form(service_code="new_pregnancy"), CATEGORIES, include_sensitive=True
    )
    assert request.service_code == "new_pregnancy"


def test_a_request_without_any_location_is_refused() -> None:
    assert codes(problems(form(lat="", long=""))) == ["missing_location"]


def test_lat_without_long_is_refused_even_with_an_address() -> None:
    assert codes(problems(form(long="", address_string="x"))) == ["incomplete_location"]


def test_long_without_lat_is_refused() -> None:
    assert codes(problems(form(lat=""))) == ["incomplete_location"]


@pytest.mark.parametrize("lat", ["90.5", "-91", "north", "nan", "inf"])
def test_a_latitude_outside_wgs84_is_refused(lat: str) -> None:
    assert codes(problems(form(lat=lat))) == ["invalid_lat"]


@pytest.mark.parametrize("long", ["180.01", "-200", "east"])
def test_a_longitude_outside_wgs84_is_refused(long: str) -> None:
    assert codes(problems(form(long=long))) == ["invalid_long"]


def test_the_coordinate_bounds_themselves_are_accepted() -> None:
    request = open311.parse_request(form(lat="-90", long="180"), CATEGORIES)
    assert request.location == {"lat": -90.0, "lon": 180.0}


def test_a_description_of_4000_characters_is_accepted() -> None:
    request = open311.parse_request(form(description="路" * 4000), CATEGORIES)
    assert request.description is not None and len(request.description) == 4000


def test_a_description_over_4000_characters_is_refused() -> None:
    assert codes(problems(form(description="路" * 4001))) == ["description_too_long"]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "photo.jpg"])
def test_a_media_url_must_be_a_web_link(url: str) -> None:
    assert codes(problems(form(media_url=url))) == ["invalid_media_url"]


def test_a_single_field_sent_twice_is_refused() -> None:
    assert codes(problems(form(description=["a", "b"]))) == ["repeated_field"]


def test_every_problem_is_reported_together() -> None:
    error = problems(
        form(service_code="", lat="95", long="", description="x" * 4001, media_url="ftp://x")
    )
    assert error.status == 400
    assert set(codes(error)) == {
        "missing_service_code", "invalid_lat", "incomplete_location",
        "description_too_long", "invalid_media_url",
    }  # fmt: skip


def test_an_unknown_service_code_with_other_problems_is_still_a_404_listing_them_all() -> None:
    error = problems(form(service_code="flying_saucer", lat="", long=""))
    assert error.status == 404
    assert codes(error) == ["unknown_service_code", "missing_location"]


# --- attributes in POST requests ----------------------------------------------------------


def test_a_required_list_answer_is_accepted() -> None:
    raw = form(service_code="facility_damaged", attribute__facility_type__="manhole")
    request = open311.parse_request(raw, CATEGORIES)
    assert request.attributes == {"facility_type": "manhole"}


def test_a_missing_required_attribute_is_refused() -> None:
    assert codes(problems(form(service_code="facility_damaged"))) == ["missing_attribute"]


def test_a_single_list_answer_outside_its_values_is_refused() -> None:
    raw = form(service_code="facility_damaged", attribute__facility_type__="tree")
    assert codes(problems(raw)) == ["invalid_attribute"]


def test_a_single_list_attribute_takes_only_one_answer() -> None:
    raw = form(service_code="facility_damaged", attribute__facility_type__=["bench", "manhole"])
    assert codes(problems(raw)) == ["invalid_attribute"]


def test_a_single_list_attribute_refuses_the_multi_value_form() -> None:
    raw = form(service_code="facility_damaged", **{"attribute__facility_type__[]": "bench"})
    assert codes(problems(raw)) == ["invalid_attribute"]


def test_a_multi_value_list_takes_repeated_bracketed_fields() -> None:
    raw = form(
        service_code="safety_hazard", **{"attribute__hazard_kind__[]": ["fire", "electrical"]}
    )
    request = open311.parse_request(raw, CATEGORIES)
    assert request.attributes == {"hazard_kind": ("fire", "electrical")}


def test_a_multi_value_list_drops_repeated_answers() -> None:
    raw = form(service_code="safety_hazard", **{"attribute__hazard_kind__[]": ["fire", "fire"]})
    assert open311.parse_request(raw, CATEGORIES).attributes == {"hazard_kind": ("fire",)}


def test_a_multi_value_answer_outside_its_values_is_refused() -> None:
    raw = form(service_code="safety_hazard", **{"attribute__hazard_kind__[]": ["fire", "flood"]})
    error = problems(raw)
    assert codes(error) == ["invalid_attribute"]
    assert "flood" in error.errors[0][1]


def test_optional_attributes_may_be_left_out() -> None:
    assert open311.parse_request(form(service_code="safety_hazard"), CATEGORIES).attributes == {}


def test_a_string_attribute_is_accepted() -> None:
    raw = form(service_code="safety_hazard", attribute__hazard_detail__="楼道堆放杂物")
    assert open311.parse_request(raw, CATEGORIES).attributes == {"hazard_detail": "楼道堆放杂物"}


def test_a_string_attribute_refuses_line_breaks() -> None:
    raw = form(service_code="safety_hazard", attribute__hazard_detail__="一\n二")
    assert codes(problems(raw)) == ["invalid_attribute"]


def test_an_attribute_the_service_does_not_ask_is_refused() -> None:
    raw = form(service_code="safety_hazard", attribute__colour__="red")
    assert codes(problems(raw)) == ["unknown_attribute"]


def test_attributes_of_an_unknown_service_are_not_judged() -> None:
    raw = form(service_code="flying_saucer", attribute__colour__="red")
    assert codes(problems(raw)) == ["unknown_service_code"]


def test_a_number_attribute_must_be_numeric() -> None:
    registry = {"alley_unclean": [Attribute("bags", "number", "袋数", 1)]}
    assert open311.parse_request(
        form(attribute__bags__="3"), CATEGORIES, registry=registry
    ).attributes == {"bags": "3"}
    error = problems(form(attribute__bags__="three"), registry=registry)
    assert codes(error) == ["invalid_attribute"]


def test_a_datetime_attribute_needs_a_time_zone() -> None:
    registry = {"alley_unclean": [Attribute("seen", "datetime", "发现时间", 1)]}
    accepted = form(attribute__seen__="2026-11-23T08:00:00+08:00")
    assert open311.parse_request(accepted, CATEGORIES, registry=registry).attributes
    error = problems(form(attribute__seen__="2026-11-23T08:00:00"), registry=registry)
    assert codes(error) == ["invalid_attribute"]


def test_an_informational_attribute_takes_no_answer() -> None:
    registry = {"alley_unclean": [Attribute("note", "text", "说明", 1, variable=False)]}
    error = problems(form(attribute__note__="hi"), registry=registry)
    assert codes(error) == ["invalid_attribute"]


def test_attribute_problems_are_listed_with_the_others() -> None:
    raw = form(service_code="facility_damaged", lat="", long="", attribute__colour__="red")
    assert set(codes(problems(raw))) == {
        "missing_location",
        "unknown_attribute",
        "missing_attribute",
    }


# --- errors -------------------------------------------------------------------------------


def test_the_json_error_body_is_a_list_of_code_and_description() -> None:
    body = open311.errors_body([("403", "Invalid api_key received")])
    assert body == [{"code": "403", "description": "Invalid api_key received"}]


def test_the_error_xml_has_the_spec_shape() -> None:
    error = problems(form(service_code="", lat="", long=""))
    root = ET.fromstring(open311.to_xml("errors", "error", open311.errors_body(error.errors)))  # noqa: S314
    assert root.tag == "errors"
    assert [e.findtext("code") for e in root.findall("error")] == [
        "missing_service_code",
        "missing_location",
    ]
    assert root.findtext("error/description") == "service_code was not provided"


def test_an_open311_error_reads_as_its_problems() -> None:
    assert str(Open311Error(400, [("a", "b"), ("c", "d")])) == "400: a: b; c: d"


# --- request view -------------------------------------------------------------------------


def test_a_request_view_has_the_spec_fields_in_the_spec_order() -> None:
    assert list(a_request()) == [
        "service_request_id", "status", "status_notes", "service_name", "service_code",
        "description", "agency_responsible", "service_notice", "requested_datetime",
        "updated_datetime", "expected_datetime", "address", "lat", "long", "media_url",
    ]  # fmt: skip


def test_the_status_is_open_or_closed() -> None:
    assert a_request(status_open=True)["status"] == "open"
    assert a_request(status_open=False)["status"] == "closed"


def test_datetimes_are_w3_format_with_their_offset() -> None:
    view = a_request(expected_datetime=datetime(2026, 11, 22, 17, 0, tzinfo=CST))
    assert view["requested_datetime"] == "2026-11-20T08:15:30+08:00"
    assert view["updated_datetime"] == "2026-11-21T01:00:00+00:00"
    assert view["expected_datetime"] == "2026-11-22T17:00:00+08:00"


def test_a_missing_expected_datetime_stays_null() -> None:
    assert a_request()["expected_datetime"] is None


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        a_request(requested_datetime=datetime(2026, 11, 20, 8, 0))


def test_the_request_list_xml_has_the_spec_shape() -> None:
    root = ET.fromstring(open311.to_xml("service_requests", "request", [a_request()]))  # noqa: S314
    assert root.tag == "service_requests"
    assert root.findtext("request/status") == "closed"
    assert root.findtext("request/lat") == "30.27"
    assert root.find("request/expected_datetime") is not None
    assert root.findtext("request/expected_datetime") == ""


def test_one_request_says_the_same_in_json_and_xml() -> None:
    view = a_request(status_open=True, description="路灯不亮\n第二行")
    decoded = json.loads(json.dumps(view, ensure_ascii=False))
    element = ET.fromstring(open311.to_xml("service_requests", "request", [view]))[0]  # noqa: S314
    assert [child.tag for child in element] == list(decoded)
    for child in element:
        value = decoded[child.tag]
        expected = "" if value is None else str(value)
        assert (child.text or "") == expected, child.tag


# --- XML writer ---------------------------------------------------------------------------


def test_booleans_are_written_true_and_false() -> None:
    root = ET.fromstring(open311.to_xml("r", "i", [{"a": True, "b": False}]))  # noqa: S314
    assert (root.findtext("i/a"), root.findtext("i/b")) == ("true", "false")


def test_a_list_under_a_plural_key_holds_singular_items() -> None:
    root = ET.fromstring(open311.to_xml("r", "i", [{"tags": ["x", "y"]}]))  # noqa: S314
    assert [t.text for t in root.findall("i/tags/tag")] == ["x", "y"]


def test_characters_xml_cannot_carry_are_replaced() -> None:
    body = open311.to_xml("r", "i", [{"description": "a\x00b\x1bc"}])
    assert ET.fromstring(body).findtext("i/description") == "a\ufffdb\ufffdc"  # noqa: S314


def test_an_unsupported_value_type_is_refused() -> None:
    with pytest.raises(TypeError):
        open311.to_xml("r", "i", [{"a": object()}])


def test_an_empty_list_is_an_empty_root() -> None:
    assert open311.to_xml("services", "service", []).endswith(b"<services />")


# --- GET requests query -------------------------------------------------------------------


def test_without_dates_the_query_covers_the_last_90_days() -> None:
    query = open311.parse_list_query({}, NOW)
    assert (query.start, query.end) == (NOW - timedelta(days=90), NOW)


def test_at_most_1000_requests_are_returned() -> None:
    assert open311.parse_list_query({}, NOW).limit == 1000


def test_the_spec_example_query_is_read() -> None:
    query = open311.parse_list_query(
        {
            "start_date": "2010-05-24T00:00:00Z",
            "end_date": "2010-06-24T00:00:00Z",
            "status": "open",
            "jurisdiction_id": "city.gov",
        },
        NOW,
    )
    assert query.start == datetime(2010, 5, 24, tzinfo=UTC)
    assert query.end == datetime(2010, 6, 24, tzinfo=UTC)
    assert query.statuses == ("open",)


def test_only_a_start_date_reaches_90_days_forward() -> None:
    query = open311.parse_list_query({"start_date": "2026-01-01T00:00:00+08:00"}, NOW)
    assert query.start is not None and query.end == query.start + timedelta(days=90)


def test_only_an_end_date_reaches_90_days_back() -> None:
    query = open311.parse_list_query({"end_date": "2026-06-01T00:00:00+08:00"}, NOW)
    assert query.end is not None and query.start == query.end - timedelta(days=90)


def test_an_end_date_before_the_start_date_is_refused() -> None:
    args = {"start_date": "2026-06-02T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}
    with pytest.raises(Open311Error) as caught:
        open311.parse_list_query(args, NOW)
    assert (caught.value.status, codes(caught.value)) == (400, ["end_before_start"])


def test_a_span_of_exactly_90_days_is_accepted() -> None:
    args = {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-04-01T00:00:00Z"}
    query = open311.parse_list_query(args, NOW)
    assert query.end is not None and query.start is not None
    assert query.end - query.start == timedelta(days=90)


def test_a_span_over_90_days_is_refused() -> None:
    args = {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-04-01T00:00:01Z"}
    with pytest.raises(Open311Error) as caught:
        open311.parse_list_query(args, NOW)
    assert codes(caught.value) == ["span_too_long"]


@pytest.mark.parametrize("raw", ["yesterday", "2026-01-01", "2026-01-01T00:00:00"])
def test_a_date_without_w3_time_and_zone_is_refused(raw: str) -> None:
    with pytest.raises(Open311Error) as caught:
        open311.parse_list_query({"start_date": raw}, NOW)
    assert codes(caught.value) == ["invalid_start_date"]


def test_statuses_are_comma_delimited() -> None:
    assert open311.parse_list_query({"status": "open, closed"}, NOW).statuses == ("open", "closed")


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.parse_list_query({"status": "open,pending"}, NOW)
    assert codes(caught.value) == ["invalid_status"]


def test_every_query_problem_is_reported_together() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.parse_list_query({"status": "pending", "end_date": "soon"}, NOW)
    assert codes(caught.value) == ["invalid_status", "invalid_end_date"]


def test_service_codes_are_comma_delimited() -> None:
    query = open311.parse_list_query({"service_code": "facility_damaged,,safety_hazard"}, NOW)
    assert query.service_codes == ("facility_damaged", "safety_hazard")


def test_service_request_ids_override_every_other_filter() -> None:
    query = open311.parse_list_query(
        {"service_request_id": "INC-1, INC-2", "status": "bogus", "start_date": "bad"}, NOW
    )
    assert query == open311.ListQuery(service_request_ids=("INC-1", "INC-2"))


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        open311.parse_list_query({}, datetime(2026, 1, 1))


# --- extra questions as data ----------------------------------------------------------------


def test_the_shipped_questions_file_is_what_the_module_offers() -> None:
    raw = yaml.safe_load((HERE / "questions.yaml").read_text(encoding="utf-8"))
    assert open311.parse_questions(raw) == open311.ATTRIBUTES


def test_a_questions_file_with_a_bad_datatype_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown datatype"):
        open311.parse_questions(
            {"x": [{"code": "a", "datatype": "colour", "description": "A", "order": 1}]}
        )


def test_an_empty_questions_file_asks_nothing() -> None:
    assert open311.parse_questions(None) == {}


# --- placing a request in a grid cell -------------------------------------------------------

CELLS = dict(load_seed(HERE / "registry.yaml", HERE / "categories.yaml").registry.cells)
CENTROIDS = {cell_id: cell.centroid for cell_id, cell in CELLS.items() if cell.centroid}
POLICY = deadlines.parse_policy(yaml.safe_load((HERE / "policy.yaml").read_text()))


def checked(**fields: str | list[str]) -> open311.Open311Request:
    return open311.parse_request(form(**fields), CATEGORIES)


def test_every_shipped_cell_has_a_centroid() -> None:
    assert set(CENTROIDS) == set(CELLS)


def test_an_address_id_naming_a_cell_wins_over_the_coordinates() -> None:
    request = checked(address_id="ls-02", lat="30.2751", long="120.1501")
    assert open311.place(request, CELLS, CENTROIDS).id == "ls-02"


def test_an_address_id_that_is_no_cell_is_a_400() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.place(checked(address_id="zz-99"), CELLS, CENTROIDS)
    assert caught.value.status == 400 and codes(caught.value) == ["unknown_address_id"]


def test_coordinates_go_to_the_nearest_cell_centre() -> None:
    request = checked(lat="30.2749", long="120.1561")
    assert open311.place(request, CELLS, CENTROIDS).id == "qy-03"


def test_coordinates_far_from_every_cell_are_outside_the_area() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.place(checked(lat="39.9042", long="116.4074"), CELLS, CENTROIDS)
    assert codes(caught.value) == ["outside_area"]


def test_coordinates_cannot_be_placed_without_any_centroid() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.place(checked(lat="30.2751", long="120.1501"), CELLS, {})
    assert codes(caught.value) == ["outside_area"]


def test_an_address_string_alone_cannot_be_placed() -> None:
    request = checked(lat="", long="", address_string="清源社区 2 号楼")
    with pytest.raises(Open311Error) as caught:
        open311.place(request, CELLS, CENTROIDS)
    assert caught.value.status == 400 and codes(caught.value) == ["unplaceable_request"]


# --- the incident and its public view -------------------------------------------------------

PERSONAL = {"email": "a@example.cn", "first_name": "伟", "last_name": "张", "phone": "139"}


def opened(**fields: str | list[str]) -> domain.Incident:
    request = checked(
        service_code="facility_damaged",
        attribute__facility_type__="manhole",
        description="井盖松动",
        media_url="https://img.example.cn/a.jpg",
        **{**PERSONAL, **fields},
    )
    return open311.open_incident(
        request,
        client="app-1",
        categories=CATEGORIES,
        cells=CELLS,
        centroids=CENTROIDS,
        now=NOW,
        policy=POLICY,
    )


def test_a_request_opens_a_reported_incident_in_its_cell() -> None:
    incident = opened(lat="30.2751", long="120.1501")
    assert incident.status == "reported" and incident.grid_cell == "qy-01"
    assert incident.community == "hx-qingyuan" and incident.channel == "open311"
    assert incident.reporter == "open311:app-1"
    assert incident.location == {"lat": 30.2751, "lon": 120.1501}


def test_the_personal_fields_go_to_private_and_the_rest_to_open311() -> None:
    incident = opened()
    assert incident.private == PERSONAL
    assert incident.open311 is not None
    assert incident.open311["client"] == "app-1"
    assert incident.open311["attributes"] == {"facility_type": "manhole"}
    assert incident.open311["token"] and incident.open311["media_url"].startswith("https://")


def test_the_public_view_leaves_out_private_fields_description_and_typed_address() -> None:
    incident = opened(address_string="张伟家楼下")
    view = open311.incident_view(
        incident, category=CATEGORIES["facility_damaged"], cells=CELLS, policy=POLICY
    )
    text = json.dumps(view, ensure_ascii=False)
    assert not [value for value in PERSONAL.values() if value in text]
    assert "井盖松动" not in text and "张伟家楼下" not in text
    assert view["description"] is None and view["address"] == "桂花二网格"
    assert view["status"] == "open" and view["status_notes"] == open311.STATUS_NOTES["reported"]
    assert view["agency_responsible"] == "municipal"
    assert view["expected_datetime"] is None


def test_the_view_expects_the_resolve_deadline_and_names_the_dispatched_department() -> None:
    incident = opened()
    later = NOW + timedelta(hours=2)
    incident.clocks, _ = deadlines.on_state(
        incident.clocks, POLICY, urgency=incident.urgency, to_state="dispatched", at=later
    )
    incident.status, incident.department = "dispatched", "city_management"
    incident.history.append({"at": later, "action": "dispatch", "to": "dispatched"})
    view = open311.incident_view(
        incident, category=CATEGORIES["facility_damaged"], cells=CELLS, policy=POLICY
    )
    assert view["expected_datetime"] == open311.w3_datetime(incident.clocks["resolve"].deadline)
    assert view["updated_datetime"] == open311.w3_datetime(later)
    assert view["agency_responsible"] == "city_management"


@pytest.mark.parametrize("state", ["closed_resolved", "closed_unresolved", "rejected"])
def test_closed_and_rejected_incidents_are_closed_requests(state: str) -> None:
    incident = opened()
    incident.status = state
    view = open311.incident_view(
        incident, category=CATEGORIES["facility_damaged"], cells=CELLS, policy=POLICY
    )
    assert view["status"] == "closed"


def test_every_grid_state_has_a_status_note() -> None:
    assert set(workflow.STATES) <= set(open311.STATUS_NOTES)


def test_the_service_notice_states_the_categorys_resolve_limit() -> None:
    assert open311.service_notice(CATEGORIES["facility_damaged"], POLICY) == (
        "派遣责任部门后 3 个工作日内办结"
    )
    assert (
        open311.service_notice(CATEGORIES["safety_hazard"], POLICY) == "派遣责任部门后 2 小时内办结"
    )


def test_the_post_answer_carries_the_id_and_a_token() -> None:
    incident = opened()
    posted = open311.posted_view(incident, "notice")
    assert posted["service_request_id"] == incident.id
    assert posted["token"] == incident.open311["token"]  # type: ignore[index]
    assert list(posted) == ["service_request_id", "token", "service_notice", "account_id"]


# --- API keys -------------------------------------------------------------------------------


def test_a_new_api_key_is_random_and_hashes_to_a_stable_hex_digest() -> None:
    first, second = open311.new_api_key(), open311.new_api_key()
    assert first != second and len(first) >= 40
    assert open311.hash_api_key(first) == open311.hash_api_key(first)
    assert len(open311.hash_api_key(first)) == 64 and first not in open311.hash_api_key(first)


@pytest.mark.parametrize("name", ["", "-x", "a b", "名字", "x" * 65, "a/b"])
def test_a_client_name_must_be_short_and_plain(name: str) -> None:
    with pytest.raises(ValueError):
        open311.check_client_name(name)


def test_a_missing_api_key_is_a_403() -> None:
    with pytest.raises(Open311Error) as caught:
        open311.api_key_of({"api_key": [""]})
    assert caught.value.status == 403
    assert open311.api_key_of({"api_key": ["k"]}) == "k"
