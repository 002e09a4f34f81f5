"""Staff on duty use the SLA board in a real browser: sign in, read the order, filter, and
watch the page reload itself with a newly reported incident.

The board reads a grid of its own on the drill policy (the acknowledge clock
runs out in two seconds) and reloads every two seconds, so the test sees the
page refresh itself rather than calling reload.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for

pytestmark = pytest.mark.browser

FAST_POLICY = Path(__file__).resolve().parent.parent / "support" / "fast_policy.yaml"
INCIDENTS = "/api/v1/grid/incidents"


@pytest.fixture(scope="module")
def grid(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(
        servers,
        tmp_path_factory.mktemp("sla-browser"),
        services=["grid"],
        env={
            "SHEQU_GRID_POLICY_FILE": str(FAST_POLICY),
            "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "0.5",
            "SHEQU_GRID_SLA_REFRESH_SECONDS": "2",
        },
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def page(browser: Any) -> Any:
    """A fresh page without JavaScript that collects console errors (a CSP violation is one)."""
    context = browser.new_context(java_script_enabled=False, locale="zh-CN")
    opened = context.new_page()
    opened.console_errors = []
    opened.on(
        "console",
        lambda message: message.type == "error" and opened.console_errors.append(message.text),
    )
    yield opened
    context.close()


def policy_errors(page: Any) -> list[str]:
    """Console errors other than the sign-in page's own status (401 is what it answers)."""
    return [text for text in page.console_errors if "status of 401" not in text]


def token(stack: Stack, *roles: str, **claims: Any) -> str:
    return mint_token(stack.jwt_secret(), roles=roles, sub=f"s-{uuid.uuid4().hex[:6]}", **claims)


def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(stack, 'admin')}"}


def report(stack: Stack, cell: str) -> str:
    response = requests.post(
        f"{stack.url}{INCIDENTS}",
        json={"category": "facility_damaged", "grid_cell": cell, "description": "井盖松动"},
        headers={"Authorization": f"Bearer {token(stack, 'resident')}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def dispatch(stack: Stack, incident_id: str) -> None:
    for body in ({"action": "accept"}, {"action": "dispatch", "department": "municipal"}):
        current = requests.get(
            f"{stack.url}{INCIDENTS}/{incident_id}", headers=admin(stack), timeout=10
        )
        response = requests.post(
            f"{stack.url}{INCIDENTS}/{incident_id}/transitions",
            json={**body, "expected_version": current.json()["version"]},
            headers=admin(stack),
            timeout=10,
        )
        assert response.status_code == 200, response.text


def listed(page: Any, rows: str = "tr[data-incident]") -> list[str]:
    """The listed incidents' ids in order; none while the page is in the middle of a reload."""
    from playwright.sync_api import Error

    try:
        found = page.locator(rows).evaluate_all("rows => rows.map(row => row.dataset.incident)")
    except Error:
        return []
    return [str(incident) for incident in found]


def test_staff_sign_in_read_the_order_filter_and_see_the_board_refresh(
    grid: Stack, page: Any
) -> None:
    late = report(grid, "qy-01")
    dispatched = report(grid, "qy-02")
    dispatch(grid, dispatched)
    elsewhere = report(grid, "ls-01")

    page.goto(f"{grid.url}/sla/")
    assert page.locator("h1").inner_text() == "登录时限看板"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.get_by_label("访问令牌").fill(token(grid, "admin"))
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/sla/$"))
    assert page.locator("h1").inner_text() == "时限看板"

    # The page reloads itself every two seconds; the unanswered reports become overdue.
    wait_for(
        lambda: {late, elsewhere} <= set(listed(page, "tr.overdue[data-incident]")),
        what="the unanswered reports marked overdue",
    )
    rows = listed(page)
    assert rows.index(late) < rows.index(dispatched) and rows.index(elsewhere) < rows.index(
        dispatched
    ), "overdue first"
    overdue_row = page.locator(f'tr[data-incident="{late}"]')
    assert overdue_row.locator("[data-remaining]").inner_text().startswith("已超时")
    background = overdue_row.evaluate("row => getComputedStyle(row).backgroundColor")
    assert background == "rgb(253, 231, 231)", "the style sheet applies under the policy"
    remaining = page.locator(f'tr[data-incident="{dispatched}"] [data-remaining]').inner_text()
    assert remaining.startswith("剩余")

    # One click, not a form filled in two steps that a reload could interrupt.
    page.locator("#by-community").get_by_role("link", name="柳树社区").click()
    page.wait_for_url(re.compile(r"community=hx-liushu"))
    assert page.get_by_label("社区", exact=True).input_value() == "hx-liushu"
    assert listed(page) == [elsewhere]
    assert page.get_by_role("img", name="每日报告与结案").is_visible()

    newcomer = report(grid, "ls-02")
    wait_for(
        lambda: newcomer in listed(page), what="the page to refresh itself with the new report"
    )
    assert late not in listed(page), "the filter survives the refresh"

    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(re.compile(r"/sla/"))
    assert page.locator("h1").inner_text() == "登录时限看板"
    assert policy_errors(page) == []
