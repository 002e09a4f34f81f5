from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shequ.auth import AuthSettings, mint_token, verify_token
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


def test_development_settings_accept_hs256_only() -> None:
    assert AuthSettings(secret=SECRET).algorithms == ("HS256",)


def test_a_jwks_url_makes_rs256_the_only_algorithm_unless_told_otherwise() -> None:
    settings = AuthSettings.from_config({"JWT_JWKS_URL": "https://idp.example/certs"})
    assert settings.algorithms == ("RS256",)


def test_algorithms_can_be_configured_as_comma_separated_text() -> None:
    settings = AuthSettings.from_config(
        {"JWT_JWKS_URL": "https://idp.example/certs", "JWT_ALGORITHMS": "RS256, ES256"}
    )
    assert settings.algorithms == ("RS256", "ES256")


@pytest.mark.parametrize("algorithms", [("none",), ("RS256",), ("HS256", "XX1")])
def test_an_algorithm_that_cannot_be_checked_is_a_configuration_error(
    algorithms: tuple[str, ...],
) -> None:
    with pytest.raises(ValueError, match="JWT_ALGORITHMS"):
        AuthSettings(secret=SECRET, algorithms=algorithms)


def test_a_token_in_an_algorithm_not_configured_is_refused() -> None:
    token = jwt.encode(
        {"sub": "m", "roles": ["admin"], "iss": "shequ-dev", "aud": "shequ", "exp": 2**40},
        SECRET,
        algorithm="HS512",
    )
    with pytest.raises(Unauthorized, match="'HS512' is not accepted"):
        verify_token(token, secret=SECRET)


def test_scopes_travel_as_one_space_separated_claim() -> None:
    token = mint_token(SECRET, roles=["bureau"], sub="client:hub", scopes=["b.read", "a.read"])
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "a.read b.read"
    assert verify_token(token, secret=SECRET).scopes == frozenset({"a.read", "b.read"})


def test_a_token_over_the_size_limit_is_refused_unread() -> None:
    with pytest.raises(Unauthorized, match="longer"):
        verify_token("x" * 10_000, secret=SECRET)


def test_garbage_is_refused_as_an_invalid_token() -> None:
    with pytest.raises(Unauthorized, match="invalid bearer token"):
        verify_token("not.a.token", secret=SECRET)
