import base64
import json

import pytest

from shequ.pagination import (
    MAX_CURSOR_LENGTH,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    query_scope,
)

KEY = b"k" * 32
SCOPE = query_scope({"community": "hx-liushu", "status": ["reported", "accepted"]})
POSITION = ["2026-11-23T09:30:00+00:00", "INC-20261123-abc"]


def forge(position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def test_a_cursor_decodes_to_the_position_it_was_made_from() -> None:
    token = encode_cursor(POSITION, key=KEY, scope=SCOPE)
    assert decode_cursor(token, key=KEY, scope=SCOPE) == POSITION


def test_a_cursor_is_url_safe_text() -> None:
    token = encode_cursor(["é/+?&=", 1], key=KEY, scope=SCOPE)
    assert all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b", ".", "%%%.%%%", "x" * (MAX_CURSOR_LENGTH + 1)],
)
def test_garbage_is_an_invalid_cursor(token: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(token, key=KEY, scope=SCOPE)


def test_a_changed_position_with_the_old_signature_is_refused() -> None:
    _, mac = encode_cursor(POSITION, key=KEY, scope=SCOPE).split(".")
    tampered = f"{forge(['2030-01-01T00:00:00+00:00', 'INC-x'])}.{mac}"
    with pytest.raises(InvalidCursor):
        decode_cursor(tampered, key=KEY, scope=SCOPE)


def test_a_changed_signature_is_refused() -> None:
    token = encode_cursor(POSITION, key=KEY, scope=SCOPE)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(InvalidCursor):
        decode_cursor(flipped, key=KEY, scope=SCOPE)


def test_a_cursor_from_another_query_is_refused() -> None:
    token = encode_cursor(POSITION, key=KEY, scope=SCOPE)
    with pytest.raises(InvalidCursor):
        decode_cursor(token, key=KEY, scope=query_scope({"community": "hx-qingyuan"}))


def test_a_cursor_signed_with_another_key_is_refused() -> None:
    token = encode_cursor(POSITION, key=b"o" * 32, scope=SCOPE)
    with pytest.raises(InvalidCursor):
        decode_cursor(token, key=KEY, scope=SCOPE)


def test_an_invalid_cursor_is_a_422_on_the_cursor_field() -> None:
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor("garbage", key=KEY, scope=SCOPE)
    assert caught.value.status == 422
    assert list(caught.value.errors) == ["cursor"]


def test_the_scope_ignores_list_order_and_absent_values() -> None:
    assert query_scope({"status": ["a", "b"], "x": None}) == query_scope({"status": ["b", "a"]})
    assert query_scope({"community": "a"}) != query_scope({"community": "b"})
