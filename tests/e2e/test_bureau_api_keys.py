"""Bureau clients' API keys on a running grid: accepted, refused, and limited by their scopes.

The grid runs alone on a stack of its own whose ``SHEQU_API_KEYS`` lists two
keys issued as an operator would (``shequ.apikeys.issue``, what ``shequ bureau
key`` prints): one with the grid's incident scope, one with another scope only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from shequ.apikeys import issue
from shequ.stack import StackError
from tests.conftest import Servers, stack_on

pytestmark = pytest.mark.e2e

INCIDENTS = "/api/v1/grid/incidents"


@dataclass
class KeyedGrid:
    stack: Any
    #: A key with the scope the grid's bureau rules need, and one with another scope only.
    reader: str
    outsider: str

    def get(self, path: str, key: str) -> requests.Response:
        return requests.get(
            f"{self.stack.url}{path}", headers={"Authorization": f"ApiKey {key}"}, timeout=10
        )


@pytest.fixture(scope="module")
def keyed_grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedGrid]:
    reader, reader_entry = issue("water-bureau", ["grid.incidents"])
    outsider, outsider_entry = issue("civil-affairs", ["notify.subscriptions"])
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("keyed"),
        services=["grid"],
        env={"SHEQU_API_KEYS": json.dumps([reader_entry, outsider_entry])},
    )
    stack.start()
    try:
        yield KeyedGrid(stack, reader, outsider)
    finally:
        stack.stop()


def problem_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    return dict(response.json())


def test_a_key_with_the_actions_scope_is_admitted(keyed_grid: KeyedGrid) -> None:
    response = keyed_grid.get(INCIDENTS, keyed_grid.reader)
    assert response.status_code == 200, response.text
    # Its reach is the bureau rule's, own: nothing this client reported.
    assert response.json()["items"] == []


def test_a_key_without_the_actions_scope_is_refused_naming_it(keyed_grid: KeyedGrid) -> None:
    body = problem_of(keyed_grid.get(INCIDENTS, keyed_grid.outsider), 403)
    assert body["action"] == "grid.incident.read"
    assert body["missing_scopes"] == ["grid.incidents"]
    assert "grid.incidents" in body["detail"]


def test_a_key_reaches_only_what_the_bureau_role_may(keyed_grid: KeyedGrid) -> None:
    body = problem_of(keyed_grid.get("/api/v1/grid/rates", keyed_grid.reader), 403)
    assert body["action"] == "grid.rates.read"
    assert "missing_scopes" not in body


@pytest.mark.parametrize(
    "which",
    ["tampered", "truncated", "unknown", "empty", "hash"],
)
def test_a_wrong_key_is_401_like_a_bad_token_and_the_key_is_not_logged(
    keyed_grid: KeyedGrid, which: str
) -> None:
    key = keyed_grid.reader
    wrong = {
        "tampered": key[:-1] + ("A" if key[-1] != "A" else "B"),
        "truncated": key[:-4],
        "unknown": issue("water-bureau", ["grid.incidents"])[0],
        "empty": "",
        "hash": json.loads(keyed_grid.stack.extra_env["SHEQU_API_KEYS"])[0]["key_sha256"],
    }[which]
    # A route with an action, and a public one, where a bad key is refused as a bad token is
    # (an empty one is no credential at all: a public route serves it).
    for path in (INCIDENTS, *(("/api/v1/grid/categories",) if wrong else ())):
        response = keyed_grid.get(path, wrong)
        body = problem_of(response, 401)
        assert "API key" in body["detail"] or "needs a bearer token" in body["detail"]
        assert response.headers["WWW-Authenticate"]
    logs = "".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in (keyed_grid.stack.data_dir / "logs").glob("*.log")
    )
    assert key not in logs and (not wrong or wrong not in logs)


def test_a_malformed_key_list_stops_the_service_saying_why(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("badkeys"),
        services=["grid"],
        env={"SHEQU_API_KEYS": json.dumps([{"client": "water-bureau", "scopes": ["x.y"]}])},
    )
    try:
        with pytest.raises(StackError) as refused:
            stack.start()
    finally:
        stack.stop()
    assert "missing key_sha256" in str(refused.value)
