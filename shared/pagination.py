"""Opaque, signed cursors for keyset pagination.

A listing ordered by a unique key (for example ``(reported_at, id)`` newest
first) hands out a cursor naming the last item of a page; the next page starts
strictly after it. Unlike ``skip``/``offset`` this neither slows down with
depth nor repeats or skips items when new ones arrive meanwhile.

The cursor is signed with a key and bound to the query it came from
(``scope``): a cursor that was altered, made up, or replayed with other
filters is refused as invalid input (422) instead of silently starting
somewhere else. The position itself is not secret, only not forgeable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from nameko.extensions import DependencyProvider

from shequ.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_CURSOR_LENGTH = 512
_KEY_LABEL = b"shequ pagination cursor"


class InvalidCursor(InvalidInput):
    def __init__(self) -> None:
        super().__init__(
            "the cursor is not valid for this query",
            {"cursor": ["not a cursor issued for this query; start again without one"]},
        )


def query_scope(params: Mapping[str, Any]) -> str:
    """A stable text for a query's filters, so a cursor can be bound to them."""
    normal = {
        key: sorted(str(v) for v in value) if isinstance(value, list | tuple | set) else str(value)
        for key, value in params.items()
        if value is not None
    }
    return json.dumps(normal, sort_keys=True, ensure_ascii=False)


def encode_cursor(position: list[Any], *, key: bytes, scope: str) -> str:
    """``position`` (JSON values) as an opaque URL-safe token signed for ``scope``."""
    payload = _b64encode(json.dumps(position, separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_mac(key, scope, payload)}"


def decode_cursor(token: str, *, key: bytes, scope: str) -> list[Any]:
    """The position in ``token``, or ``InvalidCursor`` if it was not issued for ``scope``."""
    if len(token) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    payload, _, mac = token.partition(".")
    if not mac or not hmac.compare_digest(mac, _mac(key, scope, payload)):
        raise InvalidCursor()
    try:
        position = json.loads(_b64decode(payload))
    except (ValueError, binascii.Error) as exc:
        raise InvalidCursor() from exc
    if not isinstance(position, list):
        raise InvalidCursor()
    return position


class CursorCodec:
    """Encodes and decodes cursors with one service's key."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def encode(self, position: list[Any], *, scope: str) -> str:
        return encode_cursor(position, key=self.key, scope=scope)

    def decode(self, token: str, *, scope: str) -> list[Any]:
        return decode_cursor(token, key=self.key, scope=scope)


class Cursors(DependencyProvider):
    """Gives routes a ``CursorCodec`` keyed from ``CURSOR_SECRET`` (else ``JWT_SECRET``).

    Every replica must share the key, or a cursor from one is refused by
    another: without either secret the key is random per process, which is
    only good enough for a single process, so it says so in the log.
    """

    def setup(self) -> None:
        config = self.container.config
        secret = config.get("CURSOR_SECRET") or config.get("JWT_SECRET")
        if not secret:
            log.warning("no CURSOR_SECRET or JWT_SECRET: cursors only work within this process")
            secret = secrets.token_urlsafe(32)
        key = hmac.new(str(secret).encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()
        self.codec = CursorCodec(key)

    def get_dependency(self, worker_ctx: Any) -> CursorCodec:
        return self.codec


def _mac(key: bytes, scope: str, payload: str) -> str:
    digest = hmac.new(key, f"{scope}\n{payload}".encode(), hashlib.sha256).digest()
    return _b64encode(digest[:16])


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
