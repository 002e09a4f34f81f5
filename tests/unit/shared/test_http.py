import json

import marshmallow
import pytest
from marshmallow import fields
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shequ.errors import InvalidInput
from shequ.http import MalformedBody, load_body, problem


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
