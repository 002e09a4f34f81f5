"""Errors the runtime maps to HTTP problems and to delivery decisions.

Domain modules raise their own subclasses of these; the HTTP layer turns them
into ``application/problem+json`` and the event layer decides from them
whether a failed delivery is worth another attempt.
"""

from __future__ import annotations

from typing import Any


class ShequError(Exception):
    """Base of the errors that carry an HTTP status and a safe message."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ShequError):
    status = 404
    title = "Not found"


class Conflict(ShequError):
    status = 409
    title = "Conflict"


class Forbidden(ShequError):
    status = 403
    title = "Forbidden"


class Unauthorized(ShequError):
    status = 401
    title = "Unauthorized"


class Unavailable(ShequError):
    """Something the request needs is away for now (the database, reference data loading)."""

    status = 503
    title = "Service unavailable"
    retry_after = 5


class InvalidInput(ShequError):
    """Input that is well-formed but breaks a rule; ``errors`` maps fields to messages."""

    status = 422
    title = "Invalid input"

    def __init__(self, detail: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or {}


class PoisonMessage(Exception):
    """A delivery that can never succeed (malformed, unknown schema): no retries."""
