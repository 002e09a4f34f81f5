from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shequ.auth import mint_token, verify_token
from shequ.errors import Unauthorized

SECRET = "s" * 48


def test_a_minted_token_verifies_to_its_identity() -> None:
    token = mint_token(SECRET, roles=["grid_worker"], sub="gw-1", communities=["c1"])
    identity = verify_token(token, secret=SECRET)
    assert identity.sub == "gw-1"
    assert identity.roles == frozenset({"grid_worker"})
    assert identity.communities == ("c1",)


def test_an_expired_token_is_refused() -> None:
    token = mint_token(SECRET, roles=["resident"], sub="r", ttl=timedelta(minutes=-5))
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(token, secret=SECRET)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token("x" * 48, roles=["admin"], sub="m")
    with pytest.raises(Unauthorized, match="Signature"):
        verify_token(token, secret=SECRET)


def test_a_token_for_another_audience_is_refused() -> None:
    token = mint_token(SECRET, roles=["admin"], sub="m", audience="elsewhere")
    with pytest.raises(Unauthorized, match="(?i)audience"):
        verify_token(token, secret=SECRET)


def test_minting_an_unknown_role_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown role.*superuser.*choose from"):
        mint_token(SECRET, roles=["superuser"], sub="x")


def test_a_declared_purpose_travels_in_the_token() -> None:
    token = mint_token(SECRET, roles=["community_staff"], sub="s", purpose="casework")
    assert verify_token(token, secret=SECRET).purpose == "casework"


def test_a_token_without_a_purpose_has_none() -> None:
    token = mint_token(SECRET, roles=["community_staff"], sub="s")
    assert verify_token(token, secret=SECRET).purpose is None


def test_minting_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown purpose 'curiosity'"):
        mint_token(SECRET, roles=["admin"], sub="m", purpose="curiosity")


def test_a_token_claiming_an_unknown_purpose_is_refused() -> None:
    claims = {"sub": "m", "roles": ["admin"], "purpose": "curiosity", "iss": "shequ-dev"}
    claims |= {"aud": "shequ", "exp": datetime.now(UTC) + timedelta(minutes=5)}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="purpose"):
        verify_token(token, secret=SECRET)
