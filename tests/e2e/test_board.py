"""The public notice board (/board/) through the front door: pages, proofs, feed, JSON."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest
import requests

from shequ.http import PAGE_HEADERS
from tests.conftest import Platform, wait_for
from tests.support.disclosure import API, fresh_community, publish, rate_by_event, rated, sign

pytestmark = pytest.mark.e2e

ATOM = "{http://www.w3.org/2005/Atom}"


class Outline(HTMLParser):
    """What the tests read from a page: headings, form labels and controls, data indexes."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[int] = []
        self.labels: set[str] = set()
        self.controls: list[str] = []
        self.indexes: list[int] = []
        self.scripts = 0
        self.styles = 0
        self.html_lang = ""
        self._index = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.html_lang = found.get("lang") or ""
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "label":
            self.labels.add(found.get("for") or "")
        if tag in ("input", "select") and found.get("type") != "hidden":
            self.controls.append(found.get("id") or "")
        if tag == "script":
            self.scripts += 1
        if "style" in found or tag == "style":
            self.styles += 1
        self._index = "data-index" in found

    def handle_data(self, data: str) -> None:
        if self._index:
            self.indexes.append(int(data))
            self._index = False


def outline(html: str) -> Outline:
    parsed = Outline()
    parsed.feed(html)
    return parsed


def get(platform: Platform, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{platform.url}{path}", params=params, timeout=10)


def assert_page(response: requests.Response, status: int = 200) -> Outline:
    """A board page: HTML, the security headers, zh-CN, one h1, headings in order, labels."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in PAGE_HEADERS.items():
        assert response.headers[name] == value
    page = outline(response.text)
    assert page.html_lang == "zh-CN"
    assert page.headings.count(1) == 1 and page.headings[0] == 1
    for before, after in zip(page.headings, page.headings[1:], strict=False):
        assert after <= before + 1, f"heading h{after} follows h{before}"
    assert set(page.controls) <= page.labels, "a form control without a label"
    assert page.scripts == 0 and page.styles == 0
    return page


@pytest.fixture(scope="module")
def log(platform: Platform) -> dict[str, Any]:
    """A community of its own with a notice, a finance entry, a correction, then a checkpoint."""
    community = fresh_community()
    notice = publish(platform, community, title="停水通知", body={"summary": "3月5日停水"})
    finance = publish(
        platform,
        community,
        kind="finance",
        cadence="quarterly",
        period="2026-04",
        title="一季度收支",
        body={"amount": 1200, "currency": "CNY"},
        references=["FIN-1"],
    )
    correction = publish(
        platform,
        community,
        title="停水通知（更正）",
        body={"summary": "3月6日停水"},
        supersedes=notice["index"],
    )
    checkpoint = sign(platform, community)
    return {
        "community": community,
        "notice": notice,
        "finance": finance,
        "correction": correction,
        "checkpoint": checkpoint,
    }


def test_the_board_lists_a_communitys_entries_newest_first(
    platform: Platform, log: dict[str, Any]
) -> None:
    page = assert_page(get(platform, "/board/", community=log["community"]))
    expected = [log[name]["index"] for name in ("correction", "finance", "notice")]
    assert page.indexes == expected


def test_an_entry_shows_its_kind_cadence_period_body_and_references_in_chinese(
    platform: Platform, log: dict[str, Any]
) -> None:
    html = get(platform, "/board/", community=log["community"]).text
    for text in ("财务公开", "季度公开", "2026年4月", "一季度收支", "<dt>金额</dt>", "FIN-1"):
        assert text in html, text
    assert "{&#34;amount&#34;" not in html and '{"amount"' not in html


def test_a_correction_and_the_entry_it_corrects_both_stay_and_link_to_each_other(
    platform: Platform, log: dict[str, Any]
) -> None:
    notice, correction = log["notice"]["index"], log["correction"]["index"]
    html = get(platform, "/board/", community=log["community"]).text
    assert "更正" in html
    assert f'本条更正 <a href="/board/entries/{notice}">第 {notice} 条</a>' in html
    assert f'<a href="/board/entries/{correction}">第 {correction} 条</a>' in html
    assert "停水通知" in html and "3月5日停水" in html and "3月6日停水" in html


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"kind": "finance"}, ["finance"]),
        ({"kind": "notice"}, ["correction", "notice"]),
        ({"month": "2026-03"}, ["correction", "notice"]),
        ({"month": "2026-04", "kind": "notice"}, []),
        ({"kind": "", "month": ""}, ["correction", "finance", "notice"]),
    ],
)
def test_the_filters_narrow_the_list(
    platform: Platform, log: dict[str, Any], params: dict[str, str], names: list[str]
) -> None:
    page = assert_page(get(platform, "/board/", community=log["community"], **params))
    assert page.indexes == [log[name]["index"] for name in names]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"month": "2026-13"}, "month"),
        ({"kind": "gossip"}, "kind"),
        ({"before": "x"}, "before"),
        ({"before": "3", "after": "1"}, "after"),
        ({"offset": "10"}, "offset"),
    ],
)
def test_a_wrong_filter_is_a_page_naming_the_field(
    platform: Platform, params: dict[str, str], field: str
) -> None:
    response = get(platform, "/board/", **params)
    assert_page(response, 422)
    assert f"<strong>{field}</strong>" in response.text


def test_pages_walk_every_entry_once_newest_first_and_come_back(platform: Platform) -> None:
    community = fresh_community()
    published = [publish(platform, community, title=f"第{n}号通知")["index"] for n in range(23)]
    seen: list[list[int]] = []
    response = get(platform, "/board/", community=community)
    while True:
        page = assert_page(response)
        seen.append(page.indexes)
        older = re.search(r'<a rel="next" href="([^"]+)"', response.text)
        if older is None:
            break
        response = get(platform, older[1].replace("&amp;", "&"))
        assert len(seen) < 5
    assert [len(indexes) for indexes in seen] == [20, 3]
    assert [index for indexes in seen for index in indexes] == sorted(published, reverse=True)
    newer = re.search(r'<a rel="prev" href="([^"]+)"', response.text)
    assert newer is not None
    assert outline(get(platform, newer[1].replace("&amp;", "&")).text).indexes == seen[0]


def test_the_json_list_is_the_same_list_as_the_page(
    platform: Platform, log: dict[str, Any]
) -> None:
    response = get(platform, "/board/entries.json", community=log["community"])
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    items = response.json()["items"]
    page = outline(get(platform, "/board/", community=log["community"]).text)
    assert [item["index"] for item in items] == page.indexes
    by_index = {item["index"]: item for item in items}
    assert by_index[log["notice"]["index"]]["corrected_by"] == log["correction"]["index"]
    assert by_index[log["finance"]["index"]]["url"] == f"/board/entries/{log['finance']['index']}"
    assert by_index[log["finance"]["index"]]["leaf"] == log["finance"]["leaf"]


def test_an_entry_page_shows_the_proof_against_the_latest_checkpoint(
    platform: Platform, log: dict[str, Any]
) -> None:
    index = log["finance"]["index"]
    response = get(platform, f"/board/entries/{index}")
    assert_page(response)
    html = response.text
    latest = get(platform, f"{API}/checkpoint").json()
    proof = get(platform, f"{API}/entries/{index}/proof", size=latest["size"]).json()
    assert f"<dd data-tree-size>{latest['size']}</dd>" in html
    assert latest["root_hash"] in html and latest["signature"] in html
    assert proof["leaf_hash"] in html
    assert all(node in html for node in proof["audit_path"])
    assert "data-proof-check>服务器已用这份审计路径" in html
    assert f"位于第 {index} 位" in html and "shequ disclosure verify" in html
    key = get(platform, f"{API}/public-key").json()["public_key"]
    assert f"<code data-public-key>{key}</code>" in html
    assert f'href="{API}/entries/{index}/proof?size={latest["size"]}"' in html
    leaf = base64.b64decode(log["finance"]["leaf"])
    assert hashlib.sha256(b"\x00" + leaf).hexdigest() in html


def test_the_header_shows_the_latest_checkpoint_and_links_the_public_key(
    platform: Platform, log: dict[str, Any]
) -> None:
    html = get(platform, "/board/", community=log["community"]).text
    latest = get(platform, f"{API}/checkpoint").json()
    assert f"<strong data-checkpoint-size>{latest['size']}</strong>" in html
    witnesses = len(latest["cosignatures"])
    assert f"<strong data-witnesses>{witnesses}</strong> 个见证方联署" in html
    assert f'href="{API}/public-key"' in html


def test_an_entry_newer_than_the_checkpoint_says_it_is_not_yet_covered(platform: Platform) -> None:
    community = fresh_community()
    entry = publish(platform, community)
    latest = get(platform, f"{API}/checkpoint")
    if latest.status_code == 200 and latest.json()["size"] > entry["index"]:
        pytest.skip("the scheduled checkpoint signed this entry first")
    html = get(platform, f"/board/entries/{entry['index']}").text
    assert "还没有被签名的检查点覆盖" in html


def test_an_unknown_entry_is_a_404_page(platform: Platform) -> None:
    response = get(platform, "/board/entries/999999999")
    assert_page(response, 404)
    assert "没有第 999999999 条" in response.text


def test_the_atom_feed_parses_and_holds_the_filtered_entries(
    platform: Platform, log: dict[str, Any]
) -> None:
    response = get(platform, "/board/feed.atom", community=log["community"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    feed = ET.fromstring(response.content)  # noqa: S314 (our own service's output)
    assert feed.tag == f"{ATOM}feed"
    for child in ("id", "title", "updated"):
        assert feed.findtext(f"{ATOM}{child}")
    entries = feed.findall(f"{ATOM}entry")
    links = [entry.find(f"{ATOM}link").get("href") for entry in entries]  # type: ignore[union-attr]
    expected = [log[name]["index"] for name in ("correction", "finance", "notice")]
    assert links == [f"/board/entries/{index}" for index in expected]
    assert feed.findtext(f"{ATOM}updated") == entries[0].findtext(f"{ATOM}updated")


def test_the_style_sheet_is_served_with_the_page_headers(platform: Platform) -> None:
    response = get(platform, "/board/static/board.css")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/css; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "svg.chart" in response.text


def test_the_figures_page_charts_a_months_figures_with_tables(platform: Platform) -> None:
    community = fresh_community()
    for score in (5, 2):
        rate_by_event(platform, community, score)
    rated(platform, community, 2)
    session = platform.session("community_staff", communities=(community,))
    published = session.post(
        f"{platform.url}{API}/figures", json={"community": community, "month": "2026-03"}
    )
    assert published.status_code == 200, published.text
    response = get(platform, "/board/figures", community=community, month="2026-03")
    assert_page(response)
    html = response.text
    assert html.count('role="img"') == 3 and html.count("<title id=") == 3
    assert '<th scope="row">满意率</th><td>50.0%（1 / 2）</td>' in html
    assert '<th scope="col">数值</th>' in html


def test_the_figures_page_without_figures_says_so(platform: Platform) -> None:
    response = get(platform, "/board/figures", community=fresh_community(), month="2026-03")
    assert_page(response)
    assert "还没有发布月度数据" in response.text
    assert_page(get(platform, "/board/figures"))
    assert_page(get(platform, "/board/figures", month="2026-3"), 422)


def test_reading_the_board_needs_no_login_and_writing_stays_on_the_api(
    platform: Platform,
) -> None:
    assert get(platform, "/board/").status_code == 200
    refused = requests.post(f"{platform.url}/board/", json={}, timeout=10)
    assert refused.status_code == 405
    anonymous = requests.post(f"{platform.url}{API}/entries", json={}, timeout=10)
    assert anonymous.status_code == 401


def test_a_sensitive_report_reaches_the_board_without_personal_data(platform: Platform) -> None:
    phone, name = "13912345678", f"王{uuid.uuid4().hex[:4]}"
    newest = get(platform, f"{API}/entries", order="desc", limit=1).json()["items"]
    last = newest[0]["index"] if newest else -1
    worker = platform.session("grid_worker", sub="gw-board", communities=("hx-qingyuan",))
    reported = worker.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={
            "category": "new_pregnancy",
            "grid_cell": "qy-01",
            "description": f"{name}家新增孕妇，电话{phone}",
            "channel": "patrol",
        },
        timeout=10,
    )
    assert reported.status_code == 201, reported.text
    incident = reported.json()["id"]

    def board_has_it() -> bool:
        items = get(platform, "/board/entries.json", community="hx-qingyuan").json()["items"]
        return any(
            item["index"] > last and item["title"].startswith("受理个人事项") for item in items
        )

    wait_for(board_has_it, what="the sensitive report on the board")
    for path in ("/board/", "/board/feed.atom", "/board/entries.json"):
        text = get(platform, path, community="hx-qingyuan").text
        assert phone not in text and name not in text and incident not in text, path


def test_the_static_route_serves_only_the_boards_own_files(platform: Platform) -> None:
    icon = get(platform, "/board/static/icon.svg")
    assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    for name in ("pages.py", "..%2Fpages.py", "board.cs"):
        assert get(platform, f"/board/static/{name}").status_code == 404
