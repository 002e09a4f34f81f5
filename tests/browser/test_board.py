"""A resident reads the board in a real browser: loads it, filters, follows a proof link."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import Platform
from tests.support.disclosure import fresh_community, publish, rate_by_event, rated, sign

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any) -> Any:
    """A fresh page that collects console errors (a CSP violation is one)."""
    context = browser.new_context(java_script_enabled=False, locale="zh-CN")
    opened = context.new_page()
    opened.console_errors = []
    opened.on(
        "console",
        lambda message: message.type == "error" and opened.console_errors.append(message.text),
    )
    yield opened
    context.close()


def test_a_resident_filters_the_board_and_checks_an_entrys_proof(
    platform: Platform, page: Any
) -> None:
    community = fresh_community()
    notice = publish(platform, community, title="楼道清理通知", body={"summary": "周六上午"})
    finance = publish(
        platform, community, kind="finance", cadence="quarterly", title="一季度收支公开",
        body={"amount": 5600}, references=["FIN-7"],
    )  # fmt: skip
    checkpoint = sign(platform, community)

    page.goto(f"{platform.url}/board/")
    assert page.locator("h1").inner_text() == "居务公开"
    assert page.locator("html").get_attribute("lang") == "zh-CN"

    page.get_by_label("社区").select_option(community)
    page.get_by_label("类别").select_option("finance")
    page.get_by_role("button", name="筛选").click()
    page.wait_for_url(re.compile(r"kind=finance"))

    titles = page.locator("article.entry h3").all_inner_texts()
    assert titles == ["一季度收支公开"]
    assert notice["title"] not in page.content()
    assert "财务公开" in page.locator("article.entry dl.meta").inner_text()

    page.get_by_role("link", name=f"查看第 {finance['index']} 条的收录证明").click()
    page.wait_for_url(f"**/board/entries/{finance['index']}")
    assert page.locator("h1").inner_text() == f"第 {finance['index']} 条：一季度收支公开"
    explanation = page.locator("[data-proof-explanation]").inner_text()
    assert f"位于第 {finance['index']} 位" in explanation
    assert "街道签名的公开日志" in explanation
    tree_size = int(page.locator("[data-tree-size]").inner_text())
    assert tree_size >= checkpoint["size"] > finance["index"]
    assert "与签名检查点一致" in page.locator("[data-proof-check]").inner_text()
    assert page.get_by_text("shequ disclosure verify").first.is_visible()
    assert page.console_errors == []


def test_the_board_is_styled_by_its_own_sheet_under_its_policy(
    platform: Platform, page: Any
) -> None:
    """The served style sheet applies (CSP allows 'self') and nothing is blocked."""
    page.goto(f"{platform.url}/board/")
    colour = page.locator("body").evaluate("element => getComputedStyle(element).color")
    assert colour == "rgb(26, 26, 26)"
    assert page.console_errors == []


def test_the_monthly_figures_are_drawn_as_labelled_charts(platform: Platform, page: Any) -> None:
    community = fresh_community()
    for score in (5, 4, 1):
        rate_by_event(platform, community, score)
    rated(platform, community, 3)
    session = platform.session("community_staff", communities=(community,))
    figures = session.post(
        f"{platform.url}/api/v1/disclosure/figures",
        json={"community": community, "month": "2026-03"},
        timeout=10,
    )
    assert figures.status_code == 200, figures.text

    page.goto(f"{platform.url}/board/figures")
    page.get_by_label("社区", exact=True).select_option(community)
    page.get_by_label("月份", exact=True).fill("2026-03")
    page.get_by_role("button", name="查看").click()
    page.wait_for_url(re.compile(r"month=2026-03"))

    rates = page.get_by_role("img", name="三项比率")
    assert rates.is_visible()
    bar = rates.locator("rect").nth(2)
    assert bar.evaluate("element => getComputedStyle(element).fill") == "rgb(31, 95, 153)"
    assert float(bar.get_attribute("width") or 0) > 0
    row = page.locator("tr", has=page.get_by_role("rowheader", name="满意率"))
    assert row.locator("td").inner_text() == "66.7%（2 / 3）"
    assert page.console_errors == []
