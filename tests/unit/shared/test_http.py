import json

import marshmallow
import pytest
from marshmallow import fields
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shequ.errors import InvalidInput
from shequ.http import (
    PAGE_HEADERS,
    MalformedBody,
    QueryList,
    Route,
    load_body,
    load_query,
    page_response,
    problem,
)


class Body(marshmallow.Schema):
    name = fields.String(required=True)


def request(data: bytes, content_type: str = "application/json") -> Request:
    return Request(
        EnvironBuilder(method="POST", data=data, content_type=content_type).get_environ()
    )


def test_a_problem_is_rfc9457_json_with_field_errors() -> None:
    response = problem(422, "Invalid input", "bad", errors={"name": ["required"]})
    assert response.mimetype == "application/problem+json"
    assert json.loads(response.get_data()) == {
        "type": "about:blank",
        "title": "Invalid input",
        "status": 422,
        "detail": "bad",
        "errors": {"name": ["required"]},
    }


def test_a_valid_body_loads() -> None:
    assert load_body(request(b'{"name": "x"}'), Body()) == {"name": "x"}


def test_malformed_json_is_a_malformed_body() -> None:
    with pytest.raises(MalformedBody, match="not valid JSON"):
        load_body(request(b"{"), Body())


def test_another_content_type_is_a_malformed_body() -> None:
    with pytest.raises(MalformedBody, match="text/plain"):
        load_body(request(b"name=x", "text/plain"), Body())


def test_unknown_and_missing_fields_are_reported_per_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_body(request(b'{"nam": "x"}'), Body())
    assert caught.value.errors == {
        "nam": ["Unknown field."],
        "name": ["Missing data for required field."],
    }


def test_a_json_array_is_not_a_body_object() -> None:
    with pytest.raises(InvalidInput, match="object"):
        load_body(request(b"[]"), Body())


class Filters(marshmallow.Schema):
    status = QueryList(fields.String())
    community = fields.String()


def query(url_query: str) -> Request:
    return Request(EnvironBuilder(method="GET", query_string=url_query).get_environ())


@pytest.mark.parametrize(
    "url_query", ["status=a&status=b&status=c", "status=a,b,c", "status=a,b&status=c"]
)
def test_a_list_parameter_may_be_repeated_or_comma_separated(url_query: str) -> None:
    assert load_query(query(url_query), Filters()) == {"status": ["a", "b", "c"]}


def test_a_repeated_single_valued_parameter_is_invalid() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_query(query("community=a&community=b"), Filters())
    assert "more than once" in caught.value.errors["community"][0]


def test_an_unknown_query_parameter_is_invalid() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_query(query("offset=10"), Filters())
    assert caught.value.errors == {"offset": ["Unknown field."]}


def test_a_route_without_description_metadata_still_constructs() -> None:
    plain = Route("GET", "/x")
    assert (plain.summary, plain.body, plain.query, plain.response) == (None, None, None, None)
    assert plain.status == 200 and not plain.public


def test_a_route_url_may_name_the_service() -> None:
    assert Route("GET", "/api/v1/{service}/openapi.json").rule_for("grid") == (
        "/api/v1/grid/openapi.json"
    )


def test_a_page_carries_the_browser_security_headers() -> None:
    response = page_response("<p>页</p>", status=404)
    assert response.status_code == 404
    assert response.content_type == "text/html; charset=utf-8"
    for name, value in PAGE_HEADERS.items():
        assert response.headers[name] == value
    policy = response.headers["Content-Security-Policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy


def test_a_page_may_add_headers_and_take_another_content_type() -> None:
    response = page_response(b"body{}", content_type="text/css", headers={"Cache-Control": "x"})
    assert response.mimetype == "text/css"
    assert response.headers["Cache-Control"] == "x"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_store_that_cannot_be_reached_is_a_503_to_come_back_to() -> None:
    outage = ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] ECONNREFUSED")
    response = Route("POST", "/x").response_from_exception(outage)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = json.loads(response.get_data())
    assert body["title"] == "Service unavailable"
    assert "nothing was changed" in body["detail"] and "27017" not in body["detail"]


def test_another_store_error_is_still_an_internal_error() -> None:
    response = Route("POST", "/x").response_from_exception(OperationFailure("bad $op"))
    assert response.status_code == 500 and "Retry-After" not in response.headers
