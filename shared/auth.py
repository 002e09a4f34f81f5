"""Identity: bearer JWTs carrying a subject, roles and scope claims.

Besides roles, a token may declare a ``purpose`` (one of ``PURPOSES``): why
the holder is reading. Services use it to decide who sees sensitive records
in detail (the grid's sensitive categories, for example), so access to them
is tied to a stated reason that an audit can check, not to a role alone.

Development signs HS256 tokens with a secret generated per data directory
(``shequ token`` mints them); the production identity provider's RS256 keys
come in with the security work. Verification checks signature, expiry,
not-before (with a small clock skew), issuer and audience, and that every
role is one the platform knows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt

from shequ.errors import Unauthorized

ROLES = frozenset(
    {
        "resident",
        "grid_worker",
        "community_staff",
        "department",
        "mediator",
        "volunteer",
        "bureau",
        "auditor",
        "admin",
    }
)
#: Declared purposes a token may carry; unknown ones are refused like unknown roles.
PURPOSES = frozenset({"casework"})
DEFAULT_ISSUER = "shequ-dev"
DEFAULT_AUDIENCE = "shequ"
CLOCK_SKEW = timedelta(seconds=30)


@dataclass(frozen=True)
class Identity:
    """Who is calling, as the token says."""

    sub: str
    roles: frozenset[str]
    communities: tuple[str, ...] = field(default=())
    department: str | None = None
    purpose: str | None = None

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def new_secret() -> str:
    """A fresh HS256 secret for a development data directory."""
    return secrets.token_urlsafe(48)


def mint_token(
    secret: str,
    *,
    roles: Iterable[str],
    sub: str,
    communities: Iterable[str] = (),
    department: str | None = None,
    purpose: str | None = None,
    ttl: timedelta = timedelta(hours=12),
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    """Sign a development token; unknown roles and purposes are refused here, not at use."""
    roles = sorted(set(roles))
    unknown = set(roles) - ROLES
    if not roles or unknown:
        raise ValueError(
            f"unknown role(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"choose from {', '.join(sorted(ROLES))}"
        )
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; choose from {', '.join(sorted(PURPOSES))}")
    now = datetime.now(UTC)
    claims = {
        "sub": sub,
        "roles": roles,
        "communities": sorted(set(communities)),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "iss": issuer,
        "aud": audience,
    }
    if department:
        claims["department"] = department
    if purpose:
        claims["purpose"] = purpose
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(
    token: str,
    *,
    secret: str,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> Identity:
    """Check a bearer token and return the identity it carries."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            leeway=CLOCK_SKEW,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid bearer token: {exc}") from exc
    roles = claims.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
        raise Unauthorized("the token's roles claim is missing or names an unknown role")
    communities = claims.get("communities") or []
    if not isinstance(communities, list) or not all(isinstance(c, str) for c in communities):
        raise Unauthorized("the token's communities claim must be a list of ids")
    purpose = claims.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise Unauthorized("the token's purpose claim names an unknown purpose")
    return Identity(
        sub=str(claims["sub"]),
        roles=frozenset(roles),
        communities=tuple(communities),
        department=claims.get("department"),
        purpose=purpose,
    )
