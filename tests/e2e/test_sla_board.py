"""The ops SLA board (/sla/) through the front door: sign-in, scope, order, no personal data.

The board reads a grid of its own (a grid-only stack with a database prefix
of its own), so the counts here are exactly the incidents these tests
reported. Its policy is the drill one: the acknowledge clock runs out in two
seconds, so an unanswered report is overdue almost at once, while a
dispatched one has days on its resolve clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from shequ.http import PAGE_HEADERS
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for
from tests.support.personal_data import card, resident_id, traces

pytestmark = pytest.mark.e2e

FAST_POLICY = Path(__file__).resolve().parent.parent / "support" / "fast_policy.yaml"
INCIDENTS = "/api/v1/grid/incidents"
QINGYUAN, LIUSHU = "hx-qingyuan", "hx-liushu"
#: Personal data a report may carry in its free text; none of it may reach the board.
ID_NUMBER = resident_id("330106", "19800229", "123")
CARD = card("622202100011234567")
MOBILE = "138-1234-5678"
REPORTER = f"res-{uuid.uuid4().hex[:8]}"


class Board(HTMLParser):
    """What the tests read of a board page: rows in order, forms' csrf, tallies, charts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.overdue: list[bool] = []
        self.deadlines: list[str] = []
        self.csrf = ""
        self.refresh = ""
        self.charts: list[str] = []
        self.scripts = 0
        self._row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-incident"):
            self.rows.append(found["data-incident"] or "")
            self.overdue.append("overdue" in (found.get("class") or ""))
            self._row = True
        if tag == "time" and self._row and found.get("datetime"):
            self.deadlines.append(found["datetime"] or "")
            self._row = False
        if tag == "input" and found.get("name") == "csrf":
            self.csrf = found.get("value") or ""
        if tag == "meta" and found.get("http-equiv") == "refresh":
            self.refresh = found.get("content") or ""
        if tag == "svg" and found.get("role") == "img":
            self.charts.append(found.get("aria-labelledby") or "")
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = False


def board(html: str) -> Board:
    parsed = Board()
    parsed.feed(html)
    return parsed


@pytest.fixture(scope="module")
def grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("sla"),
        services=["grid"],
        env={
            "SHEQU_GRID_POLICY_FILE": str(FAST_POLICY),
            "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "0.5",
            "SHEQU_GRID_SLA_REFRESH_SECONDS": "30",
        },
    )
    stack.start()
    yield stack
    stack.stop()


def token(stack: Stack, *roles: str, ttl: timedelta = timedelta(hours=1), **claims: Any) -> str:
    claims.setdefault("sub", f"s-{uuid.uuid4().hex[:6]}")
    return mint_token(stack.jwt_secret(), roles=roles, ttl=ttl, **claims)


def bearer(stack: Stack, *roles: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(stack, *roles, **claims)}"}


def report(stack: Stack, cell: str, category: str = "facility_damaged", text: str = "") -> str:
    response = requests.post(
        f"{stack.url}{INCIDENTS}",
        json={"category": category, "grid_cell": cell, "description": text or "路灯不亮",
              "location": {"lat": 30.27513, "lon": 120.15077}},
        headers=bearer(stack, "resident", sub=REPORTER),
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def step(stack: Stack, incident_id: str, **body: Any) -> None:
    admin = bearer(stack, "admin")
    current = requests.get(f"{stack.url}{INCIDENTS}/{incident_id}", headers=admin, timeout=10)
    response = requests.post(
        f"{stack.url}{INCIDENTS}/{incident_id}/transitions",
        json={**body, "expected_version": current.json()["version"]},
        headers=admin,
        timeout=10,
    )
    assert response.status_code == 200, response.text


def read(stack: Stack, *roles: str, params: dict[str, Any] | None = None, **claims: Any) -> Board:
    response = requests.get(
        f"{stack.url}/sla/", params=params, headers=bearer(stack, *roles, **claims), timeout=10
    )
    assert response.status_code == 200, response.text
    return board(response.text)


@pytest.fixture(scope="module")
def world(grid: Stack) -> dict[str, Any]:
    """Qingyuan: two unanswered (soon overdue) and one dispatched; Liushu: one unanswered,
    one sensitive. The first report carries personal data in its description."""
    personal = f"{ID_NUMBER}，电话{MOBILE}，卡号{CARD}"
    first = report(grid, "qy-01", text=f"路灯坏了，{personal}")
    second = report(grid, "qy-02")
    dispatched = report(grid, "qy-03", category="alley_unclean")
    step(grid, dispatched, action="accept")
    step(grid, dispatched, action="dispatch", department="city_management")
    liushu = report(grid, "ls-01")
    sensitive = report(grid, "ls-02", category="new_pregnancy")
    ids = {"first": first, "second": second, "dispatched": dispatched, "liushu": liushu,
           "sensitive": sensitive}  # fmt: skip

    def all_overdue() -> bool:
        shown = read(grid, "admin")
        late = {i for i, late in zip(shown.rows, shown.overdue, strict=True) if late}
        return {first, second, liushu, sensitive} <= late

    wait_for(all_overdue, what="the unanswered reports to be overdue on the board")
    return {"ids": ids, "personal": personal}


def test_without_credentials_the_board_asks_for_a_sign_in_and_shows_nothing(
    grid: Stack, world: dict[str, Any]
) -> None:
    response = requests.get(f"{grid.url}/sla/", timeout=10)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in PAGE_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["Cache-Control"] == "no-store"
    assert "访问令牌" in response.text
    assert not board(response.text).rows
    assert all(incident not in response.text for incident in world["ids"].values())


def test_a_bad_or_expired_token_is_refused_in_the_header_the_cookie_and_the_form(
    grid: Stack, world: dict[str, Any]
) -> None:
    header = requests.get(
        f"{grid.url}/sla/", headers={"Authorization": "Bearer not-a-token"}, timeout=10
    )
    assert header.status_code == 401
    assert header.headers["Content-Type"].startswith("application/problem+json")

    expired = token(grid, "admin", ttl=timedelta(minutes=-5))
    forged = mint_token("another-secret-" * 4, roles=["admin"], sub="x")
    for bad in (expired, forged, "garbage"):
        response = requests.get(f"{grid.url}/sla/", cookies={"shequ_sla": bad}, timeout=10)
        assert response.status_code == 401
        assert "登录已失效" in response.text
        assert not board(response.text).rows
        assert 'shequ_sla=""' in response.headers.get("Set-Cookie", "") or re.search(
            r"shequ_sla=;", response.headers.get("Set-Cookie", "")
        )

    session = requests.Session()
    csrf = board(session.get(f"{grid.url}/sla/", timeout=10).text).csrf
    for bad in (expired, forged):
        response = session.post(
            f"{grid.url}/sla/session", data={"token": bad, "csrf": csrf}, timeout=10,
            allow_redirects=False,
        )  # fmt: skip
        assert response.status_code == 401
        assert "shequ_sla" not in session.cookies


def test_sign_in_sets_a_strict_http_only_cookie_for_the_board_and_sign_out_clears_it(
    grid: Stack, world: dict[str, Any]
) -> None:
    session = requests.Session()
    first = session.get(f"{grid.url}/sla/", timeout=10)
    csrf = board(first.text).csrf
    assert csrf and session.cookies.get("shequ_sla_csrf") == csrf

    signed = session.post(
        f"{grid.url}/sla/session",
        data={"token": token(grid, "community_staff", communities=[QINGYUAN]), "csrf": csrf},
        timeout=10,
        allow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["Location"] == "/sla/"
    cookie = signed.headers["Set-Cookie"]
    assert "shequ_sla=" in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/sla/", "Expires="):
        assert attribute in cookie

    page = session.get(f"{grid.url}/sla/", timeout=10)
    assert page.status_code == 200
    assert world["ids"]["first"] in board(page.text).rows
    assert board(page.text).scripts == 0

    out = session.post(
        f"{grid.url}/sla/session/end", data={"csrf": csrf}, timeout=10, allow_redirects=False
    )
    assert out.status_code == 303
    assert session.get(f"{grid.url}/sla/", timeout=10).status_code == 401


def test_a_sign_in_from_another_site_or_without_the_forms_token_is_refused(
    grid: Stack, world: dict[str, Any]
) -> None:
    session = requests.Session()
    csrf = board(session.get(f"{grid.url}/sla/", timeout=10).text).csrf
    admin = token(grid, "admin")
    attempts = [
        ({"token": admin, "csrf": "not-the-one-the-page-gave"}, {}),
        ({"token": admin}, {}),
        ({"token": admin, "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for data, headers in attempts:
        response = session.post(
            f"{grid.url}/sla/session", data=data, headers=headers, timeout=10,
            allow_redirects=False,
        )  # fmt: skip
        assert response.status_code in (403, 422), response.text
        assert "shequ_sla" not in session.cookies
    stranger = requests.post(
        f"{grid.url}/sla/session", data={"token": admin, "csrf": csrf}, timeout=10,
        allow_redirects=False,
    )  # fmt: skip
    assert stranger.status_code == 403, "a csrf value without its cookie is not accepted"


def test_roles_that_do_not_read_the_board_are_refused(grid: Stack, world: dict[str, Any]) -> None:
    for role in ("resident", "volunteer", "mediator"):
        response = requests.get(f"{grid.url}/sla/", headers=bearer(grid, role), timeout=10)
        assert response.status_code == 403
        assert not board(response.text).rows
        assert world["ids"]["first"] not in response.text
    session = requests.Session()
    csrf = board(session.get(f"{grid.url}/sla/", timeout=10).text).csrf
    refused = session.post(
        f"{grid.url}/sla/session", data={"token": token(grid, "resident"), "csrf": csrf},
        timeout=10, allow_redirects=False,
    )  # fmt: skip
    assert refused.status_code == 403
    assert "shequ_sla" not in session.cookies


def test_another_communitys_incidents_never_appear(grid: Stack, world: dict[str, Any]) -> None:
    ids = world["ids"]
    qingyuan = read(grid, "community_staff", communities=[QINGYUAN])
    assert set(qingyuan.rows) == {ids["first"], ids["second"], ids["dispatched"]}
    liushu = read(grid, "grid_worker", communities=[LIUSHU])
    assert set(liushu.rows) == {ids["liushu"]}, "the sensitive report stays hidden"
    asked = read(grid, "community_staff", communities=[LIUSHU], params={"community": QINGYUAN})
    assert asked.rows == [], "a filter narrows the scope, never widens it"
    with_purpose = read(grid, "community_staff", communities=[LIUSHU], purpose="casework")
    assert set(with_purpose.rows) == {ids["liushu"], ids["sensitive"]}
    department = read(grid, "department", department="city_management")
    assert department.rows == [ids["dispatched"]]


def test_admins_see_every_community_and_sensitive_ones_marked(
    grid: Stack, world: dict[str, Any]
) -> None:
    response = requests.get(f"{grid.url}/sla/", headers=bearer(grid, "admin"), timeout=10)
    assert set(board(response.text).rows) == set(world["ids"].values())
    row = re.search(rf'data-incident="{world["ids"]["sensitive"]}".*?</tr>', response.text, re.S)
    assert row is not None and "敏感" in row.group(0)


def test_overdue_come_first_then_by_time_remaining(grid: Stack, world: dict[str, Any]) -> None:
    ids = world["ids"]
    shown = read(grid, "auditor")
    assert shown.overdue == sorted(shown.overdue, reverse=True), "overdue rows first"
    assert shown.deadlines == sorted(shown.deadlines), "then by deadline"
    assert shown.rows[-1] == ids["dispatched"], "days left on its resolve clock"
    assert shown.rows.index(ids["first"]) < shown.rows.index(ids["second"])


def test_filters_and_counts_per_community_and_department(
    grid: Stack, world: dict[str, Any]
) -> None:
    ids = world["ids"]
    filtered = read(grid, "admin", params={"community": QINGYUAN, "department": ""})
    assert set(filtered.rows) == {ids["first"], ids["second"], ids["dispatched"]}
    by_department = read(grid, "admin", params={"department": "city_management"})
    assert by_department.rows == [ids["dispatched"]]

    html = requests.get(
        f"{grid.url}/sla/", headers=bearer(grid, "community_staff", communities=[QINGYUAN]),
        timeout=10,
    ).text  # fmt: skip
    table = re.search(r'<table class="tally" id="by-community">.*?</table>', html, re.S)
    assert table is not None
    counts = re.findall(
        r"<td data-open>(\d+)</td><td data-overdue>(\d+)</td><td data-due-soon>(\d+)</td>",
        table.group(0),
    )
    assert counts == [("3", "2", "0")], "two overdue; the dispatched one has days left"


def test_the_page_refreshes_itself_and_says_as_of_when(grid: Stack, world: dict[str, Any]) -> None:
    response = requests.get(f"{grid.url}/sla/", headers=bearer(grid, "admin"), timeout=10)
    assert board(response.text).refresh == "30"
    assert re.search(
        r"数据截至 <time datetime=\"[^\"]+Z\" data-as-of>\d{4}-\d\d-\d\d \d\d:\d\d", response.text
    )
    assert "北京时间" in response.text


def test_the_charts_of_the_last_30_days_count_todays_reports(
    grid: Stack, world: dict[str, Any]
) -> None:
    response = requests.get(f"{grid.url}/sla/", headers=bearer(grid, "admin"), timeout=10)
    shown = board(response.text)
    assert shown.charts == [
        "flow-title flow-desc",
        "overdue-title overdue-desc",
        "rates-title rates-desc",
    ]
    assert f"报告共{len(world['ids'])}件" in response.text


def test_no_personal_data_reaches_the_page(grid: Stack, world: dict[str, Any]) -> None:
    for roles in (("admin",), ("auditor",)):
        html = requests.get(f"{grid.url}/sla/", headers=bearer(grid, *roles), timeout=10).text
        assert world["ids"]["first"] in html
        for datum in (ID_NUMBER, MOBILE, CARD):
            for trace in traces(datum):
                assert trace not in html, f"{trace} of the description is on the board"
        for leaked in ("路灯坏了", REPORTER, "30.27513", "120.15077"):
            assert leaked not in html


def test_bad_filters_get_an_html_page_naming_the_field(grid: Stack, world: dict[str, Any]) -> None:
    for params, field in (({"page": "0"}, "page"), ({"community": "<x>"}, "community"),
                          ({"colour": "red"}, "colour")):  # fmt: skip
        response = requests.get(
            f"{grid.url}/sla/", params=params, headers=bearer(grid, "admin"), timeout=10
        )
        assert response.status_code == 422
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert f"<strong>{field}</strong>" in response.text
        assert "<x>" not in response.text


def test_the_style_sheet_is_served_and_nothing_else(grid: Stack) -> None:
    css = requests.get(f"{grid.url}/sla/static/sla.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"] == "text/css; charset=utf-8"
    assert requests.get(f"{grid.url}/sla/static/..%2Fsla.py", timeout=10).status_code == 404
