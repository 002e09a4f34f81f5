"""Open311 GeoReport v2 through the front door, as an existing client would use it.

The requests follow the specification's own examples (form-encoded POST with
the personal fields, the date-range and status filters), adapted to this
sub-district's services and coordinates; both formats are checked.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from georeport import GeoReport

from shequ.cli import main
from tests.conftest import Platform, wait_for
from tests.support.events import published_entries

pytestmark = pytest.mark.e2e

PERSONAL = {
    "email": "zhang.wei@example.cn",
    "device_id": "tt222111",
    "account_id": "wx-123456",
    "first_name": "伟",
    "last_name": "张",
    "phone": "13912345678",
}
"""The spec example's personal fields, with values that cannot occur anywhere by chance."""

SENSITIVE_CODES = {
    "new_pregnancy",
    "migrants_moving_in",
    "resident_hospitalised",
    "house_rented_out",
    "family_dispute",
}


def issue_key(platform: Platform, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHEQU_MONGO_URI", platform.servers.mongo_uri)
        patch.setenv("SHEQU_MONGO_DATABASE_PREFIX", platform.db_prefix)
        assert main(["apikey", "add", name]) == 0
    return capsys.readouterr().out.strip()


@pytest.fixture
def api_key(platform: Platform, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    yield issue_key(platform, f"app-{datetime.now(UTC):%H%M%S%f}", capsys)


def url(platform: Platform, path: str) -> str:
    return f"{platform.url}/open311/v2/{path}"


def spec_form(key: str, /, **overrides: str) -> dict[str, str]:
    """The spec's POST example, for a broken manhole cover in 柳树一网格."""
    form = {
        "api_key": key,
        "jurisdiction_id": "hx-jd",
        "service_code": "facility_damaged",
        "attribute[facility_type]": "manhole",
        "lat": "30.2721",
        "long": "120.1561",
        "address_string": "柳树社区 3 号楼东侧",
        "description": "井盖松动，夜里有人绊倒",
        "media_url": "https://img.example.cn/manhole.jpg",
        **PERSONAL,
    }
    form.update(overrides)
    return form


def post(platform: Platform, form: dict[str, str], fmt: str = "json") -> requests.Response:
    return requests.post(url(platform, f"requests.{fmt}"), data=form, timeout=10)


def xml_of(response: requests.Response) -> ET.Element:
    assert response.headers["Content-Type"].startswith("text/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(response.content)  # noqa: S314 - our own output


def stored(platform: Platform) -> tuple[int, int]:
    grid = platform.db("grid")
    return grid["incidents"].count_documents({}), grid["outbox"].count_documents({})


def assert_no_personal_data(text: str) -> None:
    for value in PERSONAL.values():
        assert value not in text


# --- services and definitions -----------------------------------------------------------------


def test_the_service_list_offers_every_public_category_in_both_formats(
    platform: Platform,
) -> None:
    listed = requests.get(url(platform, "services.json"), timeout=10)
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == "application/json; charset=utf-8"
    services = {s["service_code"]: s for s in listed.json()}
    assert "facility_damaged" in services and not SENSITIVE_CODES & set(services)
    assert services["facility_damaged"]["metadata"] is True
    assert services["facility_damaged"]["type"] == "realtime"

    root = xml_of(requests.get(url(platform, "services.xml"), timeout=10))
    assert root.tag == "services"
    assert [s.findtext("service_code") for s in root.findall("service")] == list(services)
    assert root.find("service/metadata").text in ("true", "false")  # type: ignore[union-attr]


def test_a_service_definition_lists_the_categorys_extra_questions(platform: Platform) -> None:
    definition = requests.get(url(platform, "services/facility_damaged.json"), timeout=10).json()
    attribute = definition["attributes"][0]
    assert attribute["code"] == "facility_type" and attribute["required"] is True
    assert {"key": "manhole", "name": "井盖"} in attribute["values"]

    root = xml_of(requests.get(url(platform, "services/facility_damaged.xml"), timeout=10))
    assert root.tag == "service_definition"
    assert root.findtext("attributes/attribute/values/value/key") == "streetlight"


@pytest.mark.parametrize("code", ["no_such_service", "new_pregnancy"])
def test_an_unknown_or_sensitive_service_definition_is_a_404_in_the_spec_error_format(
    platform: Platform, code: str
) -> None:
    response = requests.get(url(platform, f"services/{code}.json"), timeout=10)
    assert response.status_code == 404
    assert response.json()[0]["code"] == "unknown_service_code"
    root = xml_of(requests.get(url(platform, f"services/{code}.xml"), timeout=10))
    assert root.tag == "errors" and root.findtext("error/code") == "unknown_service_code"


# --- posting, and reading back ----------------------------------------------------------------


def test_a_posted_request_is_an_incident_that_reads_back_by_id_token_and_in_the_list(
    platform: Platform, api_key: str
) -> None:
    response = post(platform, spec_form(api_key))
    assert response.status_code == 201, response.text
    [posted] = response.json()
    request_id, token = posted["service_request_id"], posted["token"]
    assert posted["service_notice"] == "派遣责任部门后 3 个工作日内办结"

    incident = platform.db("grid")["incidents"].find_one({"_id": request_id})
    assert incident["grid_cell"] == "ls-01" and incident["community"] == "hx-liushu"
    assert incident["channel"] == "open311" and incident["category"] == "facility_damaged"
    assert incident["private"] == PERSONAL
    assert incident["open311"]["attributes"] == {"facility_type": "manhole"}

    [view] = requests.get(url(platform, f"requests/{request_id}.json"), timeout=10).json()
    assert view["status"] == "open" and view["status_notes"] == "已收到，等待社区受理"
    assert view["service_code"] == "facility_damaged" and view["agency_responsible"] == "municipal"
    assert view["address"] == "柳树一网格" and view["lat"] == pytest.approx(30.2721)
    assert view["expected_datetime"] is None  # the resolve clock starts at dispatch
    assert view["requested_datetime"].endswith("+00:00")

    found = requests.get(url(platform, f"tokens/{token}.json"), timeout=10).json()
    assert found == [{"service_request_id": request_id, "token": token}]

    listed = requests.get(url(platform, "requests.json"), timeout=10).json()
    assert request_id in [r["service_request_id"] for r in listed]

    root = xml_of(requests.get(url(platform, f"requests/{request_id}.xml"), timeout=10))
    assert root.tag == "service_requests"
    assert root.findtext("request/service_request_id") == request_id
    assert root.findtext("request/status") == "open"


def test_a_dispatched_request_shows_its_department_and_expected_time(
    platform: Platform, api_key: str
) -> None:
    [posted] = post(platform, spec_form(api_key)).json()
    request_id = posted["service_request_id"]
    staff = platform.session("community_staff", sub="staff-ls", communities=("hx-liushu",))
    steps = f"{platform.url}/api/v1/grid/incidents/{request_id}/transitions"
    for version, body in enumerate(
        [{"action": "accept"}, {"action": "dispatch", "department": "municipal"}], start=1
    ):
        answer = staff.post(steps, json={**body, "expected_version": version}, timeout=10)
        assert answer.status_code == 200, answer.text
    deadline = platform.db("grid")["incidents"].find_one({"_id": request_id})["clocks"]["resolve"]

    [view] = requests.get(url(platform, f"requests/{request_id}.json"), timeout=10).json()
    assert view["status_notes"] == "已派遣至责任部门"
    assert datetime.fromisoformat(view["expected_datetime"]) == deadline["deadline"].replace(
        microsecond=0
    )
    assert view["updated_datetime"] >= view["requested_datetime"]


def test_a_request_posted_for_xml_gets_an_xml_answer(platform: Platform, api_key: str) -> None:
    response = post(platform, spec_form(api_key), fmt="xml")
    assert response.status_code == 201
    root = xml_of(response)
    assert root.tag == "service_requests"
    assert root.findtext("request/service_request_id", "").startswith("INC-")


def test_a_request_by_address_id_is_placed_in_that_grid_cell(
    platform: Platform, api_key: str
) -> None:
    form = spec_form(api_key, address_id="qy-03", lat="", long="")
    [posted] = post(platform, form).json()
    incident = platform.db("grid")["incidents"].find_one({"_id": posted["service_request_id"]})
    assert incident["grid_cell"] == "qy-03" and incident["community"] == "hx-qingyuan"


def test_the_list_filters_by_status_service_code_and_date_range(
    platform: Platform, api_key: str
) -> None:
    [posted] = post(platform, spec_form(api_key)).json()
    request_id = posted["service_request_id"]
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ids(**params: str) -> list[str]:
        response = requests.get(url(platform, "requests.json"), params=params, timeout=10)
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    assert request_id in ids(start_date=start, end_date=end, status="open")
    assert request_id not in ids(start_date=start, end_date=end, status="closed")
    assert request_id in ids(service_code="facility_damaged,safety_hazard")
    assert request_id not in ids(service_code="alley_unclean")
    assert request_id not in ids(end_date=start)
    assert ids(service_request_id=f"{request_id},INC-20000101-000000000000") == [request_id]

    root = xml_of(
        requests.get(url(platform, "requests.xml"), params={"status": "open"}, timeout=10)
    )
    assert request_id in [r.findtext("service_request_id") for r in root.findall("request")]


def test_a_sensitive_incident_is_never_listed_or_shown(platform: Platform) -> None:
    worker = platform.session("grid_worker", sub="gw-o311", communities=("hx-qingyuan",))
    native = worker.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "house_rented_out", "grid_cell": "qy-01", "description": "出租"},
        timeout=10,
    )
    assert native.status_code == 201
    incident_id = native.json()["id"]
    listed = requests.get(url(platform, "requests.json"), timeout=10).json()
    assert incident_id not in [r["service_request_id"] for r in listed]
    shown = requests.get(url(platform, f"requests/{incident_id}.json"), timeout=10)
    assert shown.status_code == 404 and shown.json()[0]["code"] == "not_found"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_an_existing_georeport_client_reads_the_endpoint_unchanged(
    platform: Platform, api_key: str, fmt: str
) -> None:
    [posted] = post(platform, spec_form(api_key)).json()
    request_id = posted["service_request_id"]
    client = GeoReport(f"{platform.url}/open311/v2", jurisdiction="hx-jd", output_format=fmt)

    codes = [service["service_code"] for service in client.get_service_list()]
    assert "facility_damaged" in codes and "new_pregnancy" not in codes
    definition = client.get_service_definition("facility_damaged")
    assert definition["service_code"] == "facility_damaged"
    one = client.get_service_request(request_id)
    assert one["service_request_id"] == request_id and one["status"] == "open"
    listed = client.get_service_requests(service_code="facility_damaged", status="open")
    assert request_id in [r["service_request_id"] for r in listed]


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"api_key": ""}, 403, "missing_api_key"),
        ({"api_key": "not-a-key"}, 403, "invalid_api_key"),
        ({"service_code": "no_such_service"}, 404, "unknown_service_code"),
        ({"service_code": "new_pregnancy"}, 404, "unknown_service_code"),
        ({"service_code": ""}, 400, "missing_service_code"),
        ({"attribute[facility_type]": "tree"}, 400, "invalid_attribute"),
        ({"lat": "", "long": "", "address_string": "柳树社区"}, 400, "unplaceable_request"),
        ({"lat": "39.9042", "long": "116.4074"}, 400, "outside_area"),
        ({"lat": "", "long": "", "address_id": "zz-99"}, 400, "unknown_address_id"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_refused_request_gets_the_spec_error_and_stores_nothing(
    platform: Platform,
    api_key: str,
    change: dict[str, str],
    status: int,
    code: str,
    fmt: str,
) -> None:
    before = stored(platform)
    response = post(platform, spec_form(api_key, **change), fmt=fmt)
    assert response.status_code == status, response.text
    if fmt == "json":
        assert response.json()[0]["code"] == code
    else:
        root = xml_of(response)
        assert root.tag == "errors" and root.findtext("error/code") == code
        assert root.findtext("error/description")
    assert stored(platform) == before


def test_a_form_field_named_like_an_operator_is_refused_and_stores_nothing(
    platform: Platform, api_key: str
) -> None:
    """The runtime refuses ``$`` and ``.`` keys in every body; a form's field names too."""
    before = stored(platform)
    response = post(platform, spec_form(api_key, **{"$where": "1", "attribute[$ne]": "x"}))
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert set(response.json()["errors"]) == {"$where", "attribute[$ne]"}
    assert stored(platform) == before


def test_a_bad_list_query_is_a_400(platform: Platform) -> None:
    response = requests.get(
        url(platform, "requests.json"),
        params={"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-12-31T00:00:00Z"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()[0]["code"] == "span_too_long"


def test_an_unknown_request_or_token_is_a_404(platform: Platform) -> None:
    for path in ("requests/INC-20000101-000000000000.json", "tokens/no-such-token.json"):
        response = requests.get(url(platform, path), timeout=10)
        assert response.status_code == 404 and response.json()[0]["code"] == "not_found"


# --- privacy ----------------------------------------------------------------------------------


def test_personal_fields_reach_no_event_and_no_public_output(
    platform: Platform, api_key: str
) -> None:
    [posted] = post(platform, spec_form(api_key)).json()
    request_id, token = posted["service_request_id"], posted["token"]
    sent = wait_for(
        lambda: published_entries(platform.db("grid"), {"body.subject": request_id}),
        what="the Open311 request's incident.reported event to be published",
    )
    assert [event["type"] for event in sent] == ["shequ.grid.incident.reported"]
    assert_no_personal_data(json.dumps([e["body"] for e in sent], ensure_ascii=False, default=str))

    outputs = [
        url(platform, f"requests/{request_id}.json"),
        url(platform, f"requests/{request_id}.xml"),
        url(platform, f"tokens/{token}.json"),
        url(platform, "requests.json"),
        url(platform, "requests.xml"),
    ]
    for address in outputs:
        response = requests.get(address, timeout=10)
        assert response.status_code == 200
        assert_no_personal_data(response.text)
        assert "井盖松动" not in response.text  # the resident's own words stay inside too
    staff = platform.session("admin", sub="admin-o311")
    native = staff.get(f"{platform.url}/api/v1/grid/incidents/{request_id}", timeout=10)
    assert native.status_code == 200
    assert_no_personal_data(native.text)
    log = platform.stack.processes["grid"].log_path.read_text(encoding="utf-8", errors="replace")
    assert_no_personal_data(log)


def test_the_report_fans_out_like_a_native_one(platform: Platform, api_key: str) -> None:
    [posted] = post(platform, spec_form(api_key)).json()
    request_id = posted["service_request_id"]
    staff = platform.session("community_staff", communities=("hx-liushu",))

    def on_the_board() -> list[Any]:
        board = staff.get(
            f"{platform.url}/api/v1/disclosure/entries",
            params={"limit": 1000, "order": "desc"},
            timeout=10,
        )
        return [e for e in board.json()["items"] if request_id in e["references"]]

    [entry] = wait_for(on_the_board, what="the disclosure entry for the Open311 request")
    assert_no_personal_data(json.dumps(entry, ensure_ascii=False))


# --- api keys ---------------------------------------------------------------------------------


def test_apikey_add_finds_the_stack_through_its_data_dir(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SHEQU_MONGO_URI", raising=False)
        patch.setenv("SHEQU_MONGO_DATABASE_PREFIX", platform.db_prefix)
        data_dir = str(platform.stack.data_dir)
        assert main(["apikey", "add", "hotline-12345", "--data-dir", data_dir]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert "shown only this once" in captured.err
    assert post(platform, spec_form(key)).status_code == 201


def test_apikey_add_stores_only_a_hash_and_refuses_a_second_client_of_the_same_name(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    key = issue_key(platform, "wechat-miniapp", capsys)
    assert len(key) >= 40
    clients = platform.db("grid")["open311_clients"]
    document = clients.find_one({"name": "wechat-miniapp"})
    assert document["active"] is True and key not in json.dumps(document, default=str)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHEQU_MONGO_URI", platform.servers.mongo_uri)
        patch.setenv("SHEQU_MONGO_DATABASE_PREFIX", platform.db_prefix)
        assert main(["apikey", "add", "wechat-miniapp"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert clients.count_documents({"name": "wechat-miniapp"}) == 1
