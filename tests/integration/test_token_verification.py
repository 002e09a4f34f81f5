"""Bearer-token attacks against the production verifier and a real JWKS endpoint.

The identity provider is played by ``tests.support.idp``: an HTTP server on
loopback serving a JWKS document the test controls (so it can rotate keys)
and counting how often it is asked. Every token is signed for real with RSA
keys made there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from shequ.auth import AuthSettings, TokenVerifier
from shequ.errors import Unauthorized
from tests.support.idp import AUDIENCE, ISSUER, Provider, claims, serving

pytestmark = pytest.mark.integration


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    idp = Provider()
    idp.add_key("k1")
    with serving(idp) as url:
        yield idp, url


def verifier(url: str, **settings: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, **settings))


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return ".".join(_b64(json.dumps(part, default=str).encode()) for part in (header, payload))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _numeric(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in payload.items()}


def test_a_token_signed_by_the_provider_verifies(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    identity = verifier(url).verify(idp.sign("k1"))
    assert identity.sub == "staff-17"
    assert identity.roles == frozenset({"community_staff"})
    assert identity.communities == ("hx-qingyuan",)


def test_the_key_set_is_fetched_once_for_many_tokens(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    check = verifier(url)
    for _ in range(5):
        check.verify(idp.sign("k1"))
    assert idp.fetches == 1


def test_a_tampered_payload_is_refused(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    header, _, signature = idp.sign("k1").split(".")
    forged = _b64(json.dumps(_numeric(claims(roles=["admin"]))).encode())
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        verifier(url).verify(f"{header}.{forged}.{signature}")


def test_a_token_signed_by_a_key_the_provider_never_published_is_refused(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    idp.add_key("rogue", publish=False)
    with pytest.raises(Unauthorized, match="rogue"):
        verifier(url, jwks_refetch_seconds=0).verify(idp.sign("rogue"))


def test_a_token_naming_a_published_kid_but_signed_by_another_key_is_refused(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    idp.add_key("rogue", publish=False)
    token = jwt.encode(claims(), idp.keys["rogue"], algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        verifier(url).verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_token_is_refused(provider: tuple[Provider, str], alg: str) -> None:
    _, url = provider
    token = unsigned({"alg": alg, "typ": "JWT", "kid": "k1"}, _numeric(claims())) + "."
    with pytest.raises(Unauthorized, match="not accepted"):
        verifier(url).verify(token)


def test_an_hs256_token_keyed_with_the_providers_public_key_is_refused(
    provider: tuple[Provider, str],
) -> None:
    """The HS/RS confusion attack: the public key is public, so it must never be an HMAC key."""
    idp, url = provider
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": "k1"}, _numeric(claims()))
    mac = hmac.new(idp.public_pem("k1"), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(mac)}"
    with pytest.raises(Unauthorized, match="'HS256' is not accepted"):
        verifier(url).verify(token)


def test_the_confusion_attack_fails_even_where_hs256_is_also_accepted(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": "k1"}, _numeric(claims()))
    mac = hmac.new(idp.public_pem("k1"), signing_input.encode(), hashlib.sha256).digest()
    check = verifier(url, algorithms=("RS256", "HS256"), secret="s" * 48)
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        check.verify(f"{signing_input}.{_b64(mac)}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://evil.example/"}, "(?i)issuer"),
        ({"aud": "another-app"}, "(?i)audience"),
        # Times as offsets from when the test runs, not from when it was collected.
        ({"exp": timedelta(minutes=-5)}, "expired"),
        ({"nbf": timedelta(minutes=5)}, "not yet valid"),
        ({"iat": timedelta(minutes=5)}, "not yet valid"),
        ({"exp": None}, '"exp"'),
        ({"aud": None}, '"aud"'),
        ({"roles": ["root"]}, "unknown role"),
        ({"scope": ["not", "a", "string"]}, "scope"),
    ],
)
def test_a_token_with_wrong_claims_is_refused(
    provider: tuple[Provider, str], overrides: dict[str, Any], message: str
) -> None:
    idp, url = provider
    now = datetime.now(UTC)
    claims = {k: now + v if isinstance(v, timedelta) else v for k, v in overrides.items()}
    with pytest.raises(Unauthorized, match=message):
        verifier(url).verify(idp.sign("k1", **claims))


def test_times_within_the_clock_skew_are_accepted(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    now = datetime.now(UTC)
    token = idp.sign("k1", nbf=now + timedelta(seconds=10), exp=now - timedelta(seconds=10))
    assert verifier(url).verify(token).sub == "staff-17"


def test_a_rotated_key_is_fetched_when_a_token_names_it(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    check = verifier(url, jwks_refetch_seconds=0)
    check.verify(idp.sign("k1"))
    idp.add_key("k2")
    idp.published = ["k2"]
    assert check.verify(idp.sign("k2")).sub == "staff-17"
    assert idp.fetches == 2


def test_unknown_kids_do_not_refetch_the_key_set_more_than_the_limit_allows(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    check = verifier(url, jwks_refetch_seconds=3600)
    check.verify(idp.sign("k1"))
    idp.add_key("rogue", publish=False)
    for _ in range(20):
        with pytest.raises(Unauthorized):
            check.verify(idp.sign("rogue"))
    assert idp.fetches == 1


def test_a_provider_that_cannot_be_reached_means_401_not_an_error() -> None:
    check = verifier("http://127.0.0.1:9/certs", jwks_timeout_seconds=2)
    idp = Provider()
    idp.add_key("k1")
    with pytest.raises(Unauthorized, match="cannot be fetched"):
        check.verify(idp.sign("k1"))


def test_a_bureau_client_credential_token_carries_its_scopes(
    provider: tuple[Provider, str],
) -> None:
    idp, url = provider
    token = idp.sign("k1", sub="client:12345-hub", roles=["bureau"], scope="open311.read grid.read")
    identity = verifier(url).verify(token)
    assert identity.has_role("bureau")
    assert identity.scopes == frozenset({"open311.read", "grid.read"})
    assert not identity.has_scope("grid.write")


def test_an_hmac_token_is_refused_by_a_production_verifier(provider: tuple[Provider, str]) -> None:
    _, url = provider
    token = jwt.encode(_numeric(claims()), "s" * 48, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not accepted"):
        verifier(url).verify(token)
