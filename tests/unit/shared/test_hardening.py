"""Input hardening in the HTTP runtime: operator keys, sizes, depth, rate limits."""

from __future__ import annotations

import marshmallow
import pytest
from marshmallow import fields
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shequ.errors import InvalidInput
from shequ.http import (
    MAX_JSON_DEPTH,
    MAX_STRING_CHARS,
    RateLimiter,
    check_form_body,
    check_query,
    client_key,
    load_body,
    load_query,
    unsafe_json,
)


class Filter(marshmallow.Schema):
    name = fields.Raw()


def post(data: bytes) -> Request:
    return Request(
        EnvironBuilder(method="POST", data=data, content_type="application/json").get_environ()
    )


def get(query: str, **environ: str) -> Request:
    builder = EnvironBuilder(method="GET", query_string=query, environ_overrides=environ)
    return Request(builder.get_environ())


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"$where": "sleep(1000)"}, "$where"),
        ({"name": {"$ne": None}}, "name.$ne"),
        ({"name": {"profile.phone": 1}}, "name.profile.phone"),
        ({"name": [{"ok": 1}, {"$gt": ""}]}, "name[1].$gt"),
    ],
)
def test_operator_and_dotted_keys_are_refused_with_their_path(
    document: dict[str, object], path: str
) -> None:
    problems = unsafe_json(document)
    assert list(problems) == [path]


def test_a_body_with_an_operator_key_is_422_before_its_schema_sees_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_body(post(b'{"name": {"$ne": ""}}'), Filter())
    assert caught.value.errors == {"name.$ne": ["a key may not begin with '$'"]}


def test_ordinary_keys_and_values_pass() -> None:
    assert unsafe_json({"name": "a.b $c", "tags": ["x.y", "$z"], "n": {"k": 1}}) == {}


def test_an_over_long_string_is_refused() -> None:
    assert unsafe_json({"text": "x" * (MAX_STRING_CHARS + 1)}) == {
        "text": [f"longer than {MAX_STRING_CHARS} characters"]
    }


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    document: object = "leaf"
    for _ in range(MAX_JSON_DEPTH + 2):
        document = {"a": document}
    assert any("nested deeper" in m[0] for m in unsafe_json(document).values())


@pytest.mark.parametrize("query", ["$where=1", "status.name=x", "a=1&filter.$ne=2", "s[$ne]=x"])
def test_operator_and_dotted_query_keys_are_refused(query: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_query(get(query))
    assert all("key may not" in messages[0] for messages in caught.value.errors.values())


def test_an_over_long_query_value_is_refused() -> None:
    with pytest.raises(InvalidInput, match="query"):
        check_query(get("q=" + "x" * 3000))


def test_ordinary_query_values_with_dots_and_dollars_pass() -> None:
    check_query(get("q=a.b&r=$5"))


def form(body: str) -> Request:
    builder = EnvironBuilder(
        method="POST", data=body, content_type="application/x-www-form-urlencoded"
    )
    return Request(builder.get_environ())


@pytest.mark.parametrize("body", ["$where=1", "email.x=a", "attribute[$ne]=x"])
def test_operator_and_dotted_form_keys_are_refused(body: str) -> None:
    """Open311 posts a form: its field names are keys like a query's, refused alike."""
    with pytest.raises(InvalidInput) as caught:
        check_form_body(form(body))
    assert all("key may not" in messages[0] for messages in caught.value.errors.values())


def test_an_open311_form_with_brackets_dots_in_values_and_long_text_passes() -> None:
    check_form_body(form("attribute[facility_type]=manhole&lat=30.27&description=" + "x" * 3000))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_and_then_waits_for_a_token() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)
    clock.now = 1.0
    assert limiter.take("a") == 0.0


def test_clients_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_the_bucket_table_forgets_the_least_recent_clients_beyond_its_bound() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, max_clients=2, clock=Clock())
    for key in ("a", "b", "c"):
        limiter.take(key)
    assert limiter.take("a") == 0.0  # forgotten, so full again


def test_a_zero_rate_turns_the_limit_off() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.take("a") == 0.0 for _ in range(100))


def test_the_client_is_the_address_our_nearest_proxy_recorded() -> None:
    spoofed = Request(
        EnvironBuilder(
            headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.7"},
            environ_overrides={"REMOTE_ADDR": "10.0.0.9"},
        ).get_environ()
    )
    assert client_key(spoofed, trusted_hops=1) == "203.0.113.7"
    assert client_key(spoofed, trusted_hops=0) == "10.0.0.9"
    assert client_key(get("", REMOTE_ADDR="10.0.0.9"), trusted_hops=1) == "10.0.0.9"


def test_an_integer_beyond_64_bits_is_refused_in_a_body() -> None:
    assert unsafe_json({"after": 2**70}) == {"after": ["a number outside the 64-bit range"]}
    assert unsafe_json({"after": 2**62, "flag": True}) == {}


class Paging(marshmallow.Schema):
    after = fields.Integer()


def test_an_integer_beyond_64_bits_is_refused_in_a_query() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_query(get("after=146683246102347723638308864"), Paging())
    assert caught.value.errors == {"after": ["a number outside the 64-bit range"]}
