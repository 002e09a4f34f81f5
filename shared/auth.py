"""Identity: bearer JWTs carrying a subject, roles, scopes and purpose claims.

Besides roles, a token may declare a ``purpose`` (one of ``PURPOSES``): why
the holder is reading. Services use it to decide who sees sensitive records
in detail (the grid's sensitive categories, for example), so access to them
is tied to a stated reason that an audit can check, not to a role alone.

Two ways to sign, chosen by configuration (``AuthSettings``):

* development: HS256 with a secret generated per data directory
  (``shequ token`` mints such tokens);
* production: the district identity provider signs with its private key
  (RS256 by default) and publishes the public keys as a JWKS document;
  ``TokenVerifier`` fetches it through PyJWT's ``PyJWKClient``, keeps it for
  ``JWT_JWKS_CACHE_SECONDS``, and fetches again when a token names a key id
  it does not know (the provider rotated its keys), at most once per
  ``JWT_JWKS_REFETCH_SECONDS`` so a stream of made-up key ids cannot turn
  every request into a call to the provider.

The verification key is chosen by the token's algorithm family, never by
the token alone: an HMAC algorithm is checked only against the configured
secret and an asymmetric one only against the provider's keys, and only the
algorithms in ``JWT_ALGORITHMS`` are accepted. So ``alg: none`` and the
HS/RS confusion attack (an HS256 token "signed" with the provider's public
key as the secret) are refused. Verification checks the signature, expiry,
not-before (with ``CLOCK_SKEW``), issuer and audience, and that every role
is one the platform knows.

Bureau machine clients (a district bureau's system calling the API) get
client-credential tokens from the same provider: role ``bureau`` and a
``scope`` claim (OAuth 2.0: space-separated) that ends up in
``Identity.scopes``. Or they send an API key configured for the deployment
(``shequ.apikeys``), which maps to the same kind of identity. Either way
the scopes limit what the ``bureau`` role's rules allow (``shequ.policy``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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

#: Algorithms checked against the configured shared secret.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: Algorithms checked against the identity provider's published public keys.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: OAuth 2.0 scope tokens (RFC 6749 section 3.3), without the space that separates them.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
MAX_TOKEN_LENGTH = 8192


def valid_scope(name: str) -> bool:
    """Whether ``name`` is one OAuth 2.0 scope token (RFC 6749 section 3.3)."""
    return bool(_SCOPE.match(name))


@dataclass(frozen=True)
class Identity:
    """Who is calling, as the token says."""

    sub: str
    roles: frozenset[str]
    communities: tuple[str, ...] = field(default=())
    department: str | None = None
    purpose: str | None = None
    #: What a machine client may do (``scope`` claim); empty for people's tokens.
    scopes: frozenset[str] = field(default=frozenset())
    #: The grid cells a grid worker covers (``cells`` claim): the ``cell`` object scope.
    cells: tuple[str, ...] = field(default=())

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class AuthSettings:
    """How a service checks bearer tokens (``JWT_*`` keys of the configuration).

    ``jwks_url`` set means production: tokens are signed by the identity
    provider and ``algorithms`` defaults to RS256 only. Without it,
    development: HS256 with ``secret``. Listing an HMAC algorithm beside a
    JWKS URL is allowed (a secret is then required) but weakens the model:
    every holder of the shared secret can mint tokens.
    """

    secret: str = ""
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    jwks_url: str = ""
    algorithms: tuple[str, ...] = ()
    jwks_cache_seconds: float = 300.0
    jwks_refetch_seconds: float = 30.0
    jwks_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        algorithms = self.algorithms or (("RS256",) if self.jwks_url else ("HS256",))
        object.__setattr__(self, "algorithms", tuple(algorithms))
        unknown = set(algorithms) - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"JWT_ALGORITHMS: not accepted: {', '.join(sorted(unknown))}")
        if set(algorithms) & ASYMMETRIC_ALGORITHMS and not self.jwks_url:
            raise ValueError("JWT_ALGORITHMS names an asymmetric algorithm but no JWT_JWKS_URL")
        if not self.issuer or not self.audience:
            raise ValueError("JWT_ISSUER and JWT_AUDIENCE must not be empty")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthSettings:
        """Settings from a service's nameko configuration (``shared/defaults.yaml``)."""
        raw = config.get("JWT_ALGORITHMS") or ()
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        return cls(
            secret=str(config.get("JWT_SECRET") or ""),
            issuer=str(config.get("JWT_ISSUER") or DEFAULT_ISSUER),
            audience=str(config.get("JWT_AUDIENCE") or DEFAULT_AUDIENCE),
            jwks_url=str(config.get("JWT_JWKS_URL") or ""),
            algorithms=tuple(raw),
            jwks_cache_seconds=float(config.get("JWT_JWKS_CACHE_SECONDS") or 300),
            jwks_refetch_seconds=float(config.get("JWT_JWKS_REFETCH_SECONDS") or 30),
            jwks_timeout_seconds=float(config.get("JWT_JWKS_TIMEOUT_SECONDS") or 5),
        )


class TokenVerifier:
    """Checks bearer tokens against ``AuthSettings``; one per service process.

    It holds the JWKS client, so the provider's key set is cached across
    requests; create it once (the HTTP entrypoint does, in ``setup``).
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.jwks: jwt.PyJWKClient | None = None
        if settings.jwks_url:
            self.jwks = jwt.PyJWKClient(
                settings.jwks_url,
                cache_jwk_set=True,
                lifespan=settings.jwks_cache_seconds,
                cooldown_duration=settings.jwks_refetch_seconds,
                timeout=settings.jwks_timeout_seconds,
            )

    def verify(self, token: str) -> Identity:
        """The identity a valid token carries; ``Unauthorized`` for anything else."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("invalid bearer token: longer than any token we issue")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.settings.algorithms:
            raise Unauthorized(
                f"invalid bearer token: algorithm {algorithm!r} is not accepted here; "
                f"accepted: {', '.join(self.settings.algorithms)}"
            )
        key = self._key_for(algorithm, token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from exc
        return identity_of(claims)

    def _key_for(self, algorithm: str, token: str) -> Any:
        if algorithm in HMAC_ALGORITHMS:
            if not self.settings.secret:
                raise Unauthorized("this service has no JWT_SECRET configured")
            return self.settings.secret
        if self.jwks is None:
            raise Unauthorized("this service has no JWT_JWKS_URL configured")
        try:
            return self.jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthorized(
                "invalid bearer token: the identity provider's keys cannot be fetched"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from exc


def identity_of(claims: Mapping[str, Any]) -> Identity:
    """An ``Identity`` from verified claims; a claim of the wrong shape is ``Unauthorized``."""
    roles = claims.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
        raise Unauthorized("the token's roles claim is missing or names an unknown role")
    communities = claims.get("communities") or []
    if not isinstance(communities, list) or not all(isinstance(c, str) for c in communities):
        raise Unauthorized("the token's communities claim must be a list of ids")
    purpose = claims.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise Unauthorized("the token's purpose claim names an unknown purpose")
    cells = claims.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
        raise Unauthorized("the token's cells claim must be a list of ids")
    department = claims.get("department")
    if department is not None and not isinstance(department, str):
        raise Unauthorized("the token's department claim must be a string")
    scope = claims.get("scope") or ""
    scopes = scope.split(" ") if isinstance(scope, str) else None
    if scopes is None or not all(_SCOPE.match(item) for item in scopes if item):
        raise Unauthorized("the token's scope claim must be space-separated scope names")
    return Identity(
        sub=str(claims["sub"]),
        roles=frozenset(roles),
        communities=tuple(communities),
        department=department,
        purpose=purpose,
        scopes=frozenset(item for item in scopes if item),
        cells=tuple(cells),
    )


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
    scopes: Iterable[str] = (),
    cells: Iterable[str] = (),
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
    scopes = sorted(set(scopes))
    if not all(_SCOPE.match(item) for item in scopes):
        raise ValueError("a scope is a non-empty name without spaces or quotes")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
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
    if scopes:
        claims["scope"] = " ".join(scopes)
    cells = sorted(set(cells))
    if cells:
        claims["cells"] = cells
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(
    token: str,
    *,
    secret: str,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> Identity:
    """Check a development (HS256) token and return the identity it carries."""
    return TokenVerifier(AuthSettings(secret=secret, issuer=issuer, audience=audience)).verify(
        token
    )
