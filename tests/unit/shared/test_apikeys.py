"""Bureau clients' API keys: the configured list, issuing, and telling keys apart."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest

from shequ import apikeys
from shequ.apikeys import ApiKeys, api_keys_from_config, issue, parse_api_keys
from shequ.cli import main
from shequ.config import ConfigError, interpolate
from shequ.errors import Unauthorized
from shequ.http import Route

KEY = "shequ_bk_" + "k" * 43
ENTRY = {
    "client": "civil-affairs",
    "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
    "scopes": ["notify.subscriptions"],
}


def test_a_configured_key_is_the_identity_a_client_credential_token_would_give() -> None:
    found = parse_api_keys([ENTRY]).identify(KEY)
    assert found.sub == "bureau:civil-affairs"
    assert found.roles == frozenset({"bureau"})
    assert found.scopes == frozenset({"notify.subscriptions"})


def test_the_list_may_come_as_json_text() -> None:
    assert parse_api_keys(json.dumps([ENTRY])).identify(KEY).sub == "bureau:civil-affairs"
    assert parse_api_keys("").entries == ()


@pytest.mark.parametrize(
    "key",
    [
        KEY[:-1],  # one character short
        KEY[:-1] + "j",  # one character changed
        KEY + "k",  # one character more
        ENTRY["key_sha256"],  # the hash itself is not the key
        "",
        "shequ_bk_" + "k" * 300,
    ],
)
def test_any_other_string_is_refused(key: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        parse_api_keys([ENTRY]).identify(key)
    assert KEY not in refused.value.detail and (not key or key not in refused.value.detail)


def test_no_configured_keys_accept_nothing() -> None:
    with pytest.raises(Unauthorized):
        ApiKeys().identify(KEY)


def test_of_several_keys_each_maps_to_its_own_client() -> None:
    other, entry = issue("water-bureau", ["grid.incidents"])
    keys = parse_api_keys([ENTRY, entry])
    assert keys.identify(other).sub == "bureau:water-bureau"
    assert keys.identify(other).scopes == frozenset({"grid.incidents"})
    assert keys.identify(KEY).sub == "bureau:civil-affairs"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[{", "not valid JSON"),
        ({"client": "x"}, "expected a JSON list"),
        (["x"], "expected an object"),
        ([{"client": "civil-affairs", "scopes": ["a.b"]}], "missing key_sha256"),
        ([{**ENTRY, "key": KEY}], "unknown field(s) key"),
        ([{**ENTRY, "client": "Civil Affairs"}], "client is 2 to 31"),
        ([{**ENTRY, "key_sha256": "abc"}], "64 lower-case hex digits"),
        ([{**ENTRY, "scopes": []}], "scopes is a non-empty list"),
        ([{**ENTRY, "scopes": ["two words"]}], "scopes is a non-empty list"),
        ([ENTRY, {**ENTRY, "key_sha256": "0" * 64}], "two entries share a client"),
        ([ENTRY, {**ENTRY, "client": "other"}], "two entries share a key_sha256"),
    ],
)
def test_a_broken_list_is_refused_saying_where(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_api_keys(raw)
    assert message in str(refused.value)
    assert ENTRY["key_sha256"] not in str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_api_keys([{**ENTRY, "client": "X"}, {"client": "ok-name"}])
    assert "[0]" in str(refused.value) and "[1] (ok-name)" in str(refused.value)


def test_issued_keys_are_fresh_and_the_entry_holds_only_their_hash() -> None:
    first, entry = issue("civil-affairs", ["notify.subscriptions", "grid.incidents"])
    second, _ = issue("civil-affairs", ["notify.subscriptions"])
    assert first != second and first.startswith(apikeys.KEY_PREFIX)
    assert first not in json.dumps(entry)
    assert entry["scopes"] == ["grid.incidents", "notify.subscriptions"]
    assert parse_api_keys([entry]).identify(first).sub == "bureau:civil-affairs"


@pytest.mark.parametrize(("client", "scopes"), [("Bad Name", ["a.b"]), ("ok-name", [])])
def test_issue_refuses_a_bad_name_or_no_scope(client: str, scopes: list[str]) -> None:
    with pytest.raises(ValueError):
        issue(client, scopes)


def test_the_setting_is_read_from_the_environment_as_a_service_would() -> None:
    raw = interpolate({"API_KEYS": "${SHEQU_API_KEYS:[]}"}, {"SHEQU_API_KEYS": json.dumps([ENTRY])})
    assert api_keys_from_config(raw).identify(KEY).sub == "bureau:civil-affairs"
    assert api_keys_from_config(interpolate({"API_KEYS": "${SHEQU_API_KEYS:[]}"}, {})).entries == ()


def test_a_setting_that_does_not_parse_names_the_variable_not_its_value() -> None:
    with pytest.raises(ConfigError, match="SHEQU_API_KEYS does not parse") as refused:
        interpolate({"API_KEYS": "${SHEQU_API_KEYS:[]}"}, {"SHEQU_API_KEYS": '[{"a": "s3cret'})
    assert "s3cret" not in str(refused.value)


def test_a_service_with_a_broken_key_list_does_not_start() -> None:
    from shequ_services.disclosure.service import DisclosureService

    route = Route("GET", "/api/v1/disclosure/x", action="disclosure.entry.publish", summary="s")
    route.container = SimpleNamespace(  # type: ignore[assignment]
        config={"API_KEYS": [{"client": "civil-affairs"}]},
        service_name="disclosure",
        service_cls=DisclosureService,
    )
    with pytest.raises(ConfigError, match="missing key_sha256, scopes"):
        route.setup()


def test_the_cli_prints_the_key_once_and_the_entry_that_accepts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["bureau", "key", "civil-affairs", "--scope", "notify.subscriptions"])
    out, err = capsys.readouterr()
    assert code == 0, err
    key, line = out.strip().splitlines()
    entry = json.loads(line)
    assert entry["scopes"] == ["notify.subscriptions"]
    assert parse_api_keys([entry]).identify(key).sub == "bureau:civil-affairs"
    assert "only this once" in err and key not in err


def test_the_cli_refuses_a_scope_no_action_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bureau", "key", "civil-affairs", "--scope", "notify.everything"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "notify.everything" in err and "notify.subscriptions" in err
