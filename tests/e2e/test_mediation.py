"""People's mediation through the API: cases, sealed parties, recusal, the lifecycle, the grid."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from shequ.auth import mint_token
from shequ.contracts import grid as grid_events
from shequ.contracts.registry import EventSpec
from tests.conftest import Platform, wait_for
from tests.support.events import publish_event

pytestmark = pytest.mark.e2e

API = "/api/v1/mediation"
APPLICANT = {
    "role": "applicant",
    "name": "张建国",
    "phone": "13812341234",
    "id_number": "110101199003078515",
    "address": "柳树苑2幢3单元501",
    "building": "ls-01-b02",
}
RESPONDENT = {
    "role": "respondent",
    "name": "李秀梅",
    "phone": "13998765432",
    "id_number": "11010119850512002X",
    "address": "柳树苑2幢4单元601",
    "building": "ls-01-b02",
}
PLAINTEXTS = ("张建国", "李秀梅", "13812341234", "13998765432", "110101199003078515",
              "11010119850512002X", "柳树苑2幢", "楼上漏水")  # fmt: skip


def new_community() -> str:
    return f"hx-m{uuid.uuid4().hex[:6]}"


def admin(platform: Platform) -> requests.Session:
    return platform.session("admin", sub="root")


def staff(platform: Platform, community: str) -> requests.Session:
    return platform.session("community_staff", sub=f"staff-{community}", communities=(community,))


def mediator(platform: Platform, sub: str, community: str) -> requests.Session:
    return platform.session("mediator", sub=sub, communities=(community,))


def put_mediator(platform: Platform, mediator_id: str, **body: Any) -> dict[str, Any]:
    response = admin(platform).put(f"{platform.url}{API}/mediators/{mediator_id}", json=body,
                                   timeout=10)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def walk_in(platform: Platform, community: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "community": community,
        "dispute_type": "neighbour_dispute",
        "facts": "楼上漏水，楼下天花板受损",
        "parties": [APPLICANT, RESPONDENT],
        **overrides,
    }
    response = staff(platform, community).post(f"{platform.url}{API}/cases", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def step(session: requests.Session, platform: Platform, case: dict[str, Any], action: str,
         **body: Any) -> requests.Response:  # fmt: skip
    return session.post(
        f"{platform.url}{API}/cases/{case['id']}/transitions",
        json={"action": action, "expected_version": case["version"], **body},
        timeout=10,
    )


def ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()


def assign(
    platform: Platform, case: dict[str, Any], community: str, **body: Any
) -> requests.Response:
    return staff(platform, community).post(
        f"{platform.url}{API}/cases/{case['id']}/assignment",
        json={"expected_version": case["version"], **body},
        timeout=10,
    )


def roster_of_two(platform: Platform, community: str) -> None:
    """m-a is the applicant's neighbour (same building); m-b is free of any recusal."""
    put_mediator(platform, f"{community}-a", name="陈桂兰", community=community,
                 expertise=["neighbour_dispute"], building="ls-01-b02")  # fmt: skip
    put_mediator(platform, f"{community}-b", name="赵淑珍", community=community,
                 expertise=["property_dispute"], building="ls-02-b01")  # fmt: skip


def agreed_case(
    platform: Platform, signed_on: date | None = None
) -> tuple[dict[str, Any], str, str]:
    community = new_community()
    roster_of_two(platform, community)
    case = walk_in(platform, community)
    case = ok(assign(platform, case, community))
    me = mediator(platform, case["mediator_id"], community)
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    case = ok(step(me, platform, case, "schedule_session", session_at=at, place="柳树社区调解室"))
    parties = [p["id"] for p in case["parties"]]
    signed = (signed_on or datetime.now(UTC).date()).isoformat()
    agreement = {
        "facts": "楼上漏水致楼下天花板受损",
        "issues": "维修费用由谁承担",
        "obligations": [{"party_id": parties[1], "obligation": "赔偿维修费人民币800元",
                         "manner": "微信转账", "due_on": "2026-12-31"}],
        "signatures": [{"party_id": p, "signed": True} for p in parties],
        "mediator_signed": True,
        "signed_on": signed,
    }  # fmt: skip
    case = ok(step(me, platform, case, "agree", agreement=agreement))
    return case, community, case["mediator_id"]


def publish(platform: Platform, spec: EventSpec, data: dict[str, Any], subject: str) -> None:
    """Publish an event straight to the broker, as a producer's relay would."""
    publish_event(platform.servers.amqp_uri, spec, data, subject)


# -- opening ---------------------------------------------------------------------------


def test_a_dispute_report_opens_one_case_with_its_incident_and_a_month_to_run(
    platform: Platform,
) -> None:
    worker = platform.session("grid_worker", sub="gw-ls", communities=("hx-liushu",))
    incident = ok(worker.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "neighbour_dispute", "grid_cell": "ls-01", "description": "噪音"},
        timeout=10,
    ), 201)  # fmt: skip
    reader = platform.session("auditor", sub="aud")
    items = wait_for(
        lambda: reader.get(
            f"{platform.url}{API}/cases", params={"incident_id": incident["id"]}, timeout=10
        ).json()["items"],  # fmt: skip
        what="the case opened for the dispute",
    )
    assert len(items) == 1
    case = items[0]
    assert case["id"].startswith(f"MED-hx-liushu-{datetime.now(UTC).year}")
    assert (case["status"], case["source"], case["dispute_type"]) == (
        "intake", "incident", "neighbour_dispute",
    )  # fmt: skip
    deadline = datetime.fromisoformat(case["clock"]["deadline"])
    assert (
        timedelta(days=27)
        < deadline - datetime.fromisoformat(case["opened_at"])
        < timedelta(days=32)
    )


# -- sealing and masking ---------------------------------------------------------------


def test_the_stored_case_holds_no_plaintext_personal_data(platform: Platform) -> None:
    community = new_community()
    case = walk_in(platform, community)
    raw = platform.db("mediation")["cases"].find_one({"_id": case["id"]})
    text = json.dumps(raw, default=str, ensure_ascii=False)
    for plain in PLAINTEXTS:
        assert plain not in text
    assert raw["kids"] == ["dev1"]
    assert raw["parties"][0]["name"]["f"] == "parties.P1.name"
    outbox = platform.db("mediation")["outbox"].find({"body.subject": case["id"]})
    events = json.dumps([e["body"] for e in outbox], default=str, ensure_ascii=False)
    assert "case.opened" in events and not any(plain in events for plain in PLAINTEXTS)


def test_parties_are_masked_except_for_the_assigned_mediator_and_admins(platform: Platform) -> None:
    community = new_community()
    roster_of_two(platform, community)
    case = ok(assign(platform, walk_in(platform, community), community))
    url = f"{platform.url}{API}/cases/{case['id']}"
    views = {
        "assigned": mediator(platform, case["mediator_id"], community),
        "admin": admin(platform),
        "other_mediator": mediator(platform, "someone-else", community),
        "staff": staff(platform, community),
        "auditor": platform.session("auditor", sub="aud"),
    }
    seen = {who: ok(session.get(url, timeout=10)) for who, session in views.items()}
    for who in ("assigned", "admin"):
        party = seen[who]["parties"][0]
        assert (party["name"], party["phone"], party["masked"]) == ("张建国", "13812341234", False)
        assert seen[who]["facts"] == "楼上漏水，楼下天花板受损"
    for who in ("other_mediator", "staff", "auditor"):
        party = seen[who]["parties"][0]
        assert party == {
            "id": "P1", "role": "applicant", "name": "张**", "phone": "138****1234",
            "id_number": "1101**********8515", "address": "柳树苑***", "building": None,
            "masked": True,
        }  # fmt: skip
        assert seen[who]["facts"] is None


# -- assignment and recusal -------------------------------------------------------------


def test_the_roster_rule_skips_a_neighbour_and_records_the_check(platform: Platform) -> None:
    community = new_community()
    roster_of_two(platform, community)
    case = ok(assign(platform, walk_in(platform, community), community))
    assert case["status"] == "assigned" and case["mediator_id"] == f"{community}-b"
    checked = {c["mediator_id"]: c["excluded"] for c in case["recusal"]["checked"]}
    assert checked == {f"{community}-a": ["same_building"], f"{community}-b": []}
    assert case["recusal"]["method"] == "auto"
    event = platform.db("mediation")["outbox"].find_one(
        {"body.subject": case["id"], "body.type": "shequ.mediation.case.assigned"}
    )
    assert event["body"]["data"]["mediator_id"] == f"{community}-b"


def test_a_declared_relative_is_recused_and_only_an_override_with_a_reason_assigns(
    platform: Platform,
) -> None:
    community = new_community()
    put_mediator(platform, f"{community}-r", name="王志强", community=community,
                 relatives=["李 秀梅"])  # fmt: skip
    roster_doc = platform.db("mediation")["mediators"].find_one({"_id": f"{community}-r"})
    assert "李秀梅" not in json.dumps(roster_doc, ensure_ascii=False)
    case = walk_in(platform, community)
    refused = assign(platform, case, community)
    assert refused.status_code == 409
    named = assign(platform, case, community, mediator_id=f"{community}-r")
    assert named.status_code == 409 and named.json()["reasons"] == ["relative"]
    unknown = assign(platform, case, community, mediator_id="nobody")
    assert unknown.status_code == 422 and "mediator_id" in unknown.json()["errors"]
    overridden = ok(assign(platform, case, community, mediator_id=f"{community}-r",
                           override_reason="双方当事人书面同意"))  # fmt: skip
    assert overridden["recusal"]["method"] == "override"
    assert overridden["recusal"]["overridden"] == ["relative"]


# -- the lifecycle ----------------------------------------------------------------------


def test_an_agreement_renders_as_a_printable_chinese_document_for_its_mediator_only(
    platform: Platform,
) -> None:
    case, community, mediator_id = agreed_case(platform)
    url = f"{platform.url}{API}/cases/{case['id']}/agreement"
    response = mediator(platform, mediator_id, community).get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = response.text
    assert "人民调解协议书" in html and "张建国" in html and "赔偿维修费人民币800元" in html
    assert "@media print" in html
    assert staff(platform, community).get(url, timeout=10).status_code == 403


def test_judicial_confirmation_is_tracked_and_the_closed_case_is_counted(
    platform: Platform,
) -> None:
    case, community, mediator_id = agreed_case(platform)
    today = datetime.now(UTC).date()
    assert case["confirmation"]["deadline"] == (today + timedelta(days=30)).isoformat()
    office = staff(platform, community)
    case = ok(step(office, platform, case, "file_confirmation", court="hx-court",
                   filed_on=today.isoformat()))  # fmt: skip
    blocked = step(office, platform, case, "close")
    assert blocked.status_code == 409
    case = ok(step(office, platform, case, "decide_confirmation", decision="confirmed"))
    case = ok(step(office, platform, case, "close"))
    assert (case["status"], case["outcome"]) == ("closed", "agreed")
    types = [e["body"]["type"] for e in platform.db("mediation")["outbox"].find(
        {"body.subject": case["id"]}).sort("created_at", 1)]  # fmt: skip
    names = [t.removeprefix("shequ.mediation.") for t in types]
    assert names[-4:] == ["case.agreed", "case.confirmed", "case.confirmed", "case.closed"]
    metrics = requests.get(f"{platform.stack.processes['mediation'].url}/metrics", timeout=10).text
    assert 'shequ_mediation_case_seconds_count{outcome="agreed"}' in metrics


def test_filing_for_confirmation_after_the_thirty_day_window_is_refused(platform: Platform) -> None:
    signed = datetime.now(UTC).date() - timedelta(days=40)
    case, community, _ = agreed_case(platform, signed_on=signed)
    late = step(staff(platform, community), platform, case, "file_confirmation", court="hx-court",
                filed_on=datetime.now(UTC).date().isoformat())  # fmt: skip
    assert late.status_code == 409
    assert late.json()["deadline"] == (signed + timedelta(days=30)).isoformat()
    stored = platform.db("mediation")["cases"].find_one({"_id": case["id"]})
    assert stored["version"] == case["version"] and stored["confirmation"]["status"] == "none"


def test_a_failed_case_is_referred_with_a_packet_of_what_the_court_needs(
    platform: Platform,
) -> None:
    community = new_community()
    roster_of_two(platform, community)
    case = ok(assign(platform, walk_in(platform, community), community))
    me = mediator(platform, case["mediator_id"], community)
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    case = ok(step(me, platform, case, "schedule_session", session_at=at, place="调解室"))
    case = ok(step(me, platform, case, "record_session", session_id="S1",
                   attendance=["P1", "P2"], notes="双方情绪激动，张建国提及家中私事"))  # fmt: skip
    case = ok(step(me, platform, case, "fail", reason="赔偿金额分歧过大"))
    case = ok(step(staff(platform, community), platform, case, "refer", court="hx-court"))
    packet = ok(me.get(f"{platform.url}{API}/cases/{case['id']}/referral", timeout=10))
    assert packet["failure_reason"] == "赔偿金额分歧过大" and packet["sessions_held"] == 1
    assert packet["parties"][0]["id_number"] == "110101199003078515"
    assert (
        "私事" not in json.dumps(packet, ensure_ascii=False)
        and "building" not in packet["parties"][0]
    )
    closed = ok(step(staff(platform, community), platform, case, "close"))
    assert closed["outcome"] == "referred"


def test_an_illegal_step_is_a_conflict_that_lists_the_allowed_ones(platform: Platform) -> None:
    community = new_community()
    case = walk_in(platform, community)
    refused = step(staff(platform, community), platform, case, "close")
    assert refused.status_code == 409
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["allowed"] == ["assign", "extend", "withdraw"]
    stale = step(staff(platform, community), platform, {**case, "version": 9}, "withdraw",
                 reason="撤回")  # fmt: skip
    assert stale.status_code == 409 and stale.json()["current_version"] == case["version"]


def test_bad_input_is_refused_per_field_and_stores_nothing(platform: Platform) -> None:
    community = new_community()
    cases = platform.db("mediation")["cases"]
    before = cases.count_documents({"community": community})
    bad = {**APPLICANT, "id_number": "12345678901234567Y", "role": "bystander"}
    response = staff(platform, community).post(
        f"{platform.url}{API}/cases",
        json={"community": community, "dispute_type": "neighbour_dispute", "facts": "",
              "parties": [bad]},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert "facts" in errors and set(errors["parties"]["0"]) == {"role"}
    wrong_digits = staff(platform, community).post(
        f"{platform.url}{API}/cases",
        json={"community": community, "dispute_type": "neighbour_dispute", "facts": "x",
              "parties": [{**APPLICANT, "id_number": "12345678901234567Y"}]},
        timeout=10,
    )  # fmt: skip
    assert (
        wrong_digits.status_code == 422 and "parties.0.id_number" in wrong_digits.json()["errors"]
    )
    assert cases.count_documents({"community": community}) == before


def test_writes_stay_within_the_callers_community(platform: Platform) -> None:
    community = new_community()
    case = walk_in(platform, community)
    outsider = staff(platform, "hx-elsewhere")
    assert step(outsider, platform, case, "withdraw", reason="x").status_code == 403
    resident = platform.session("resident", sub="r1")
    assert resident.get(f"{platform.url}{API}/cases/{case['id']}", timeout=10).status_code == 403


# -- the grid takes the outcome ---------------------------------------------------------


def _department(platform: Platform, name: str) -> requests.Session:
    session = requests.Session()
    token = mint_token(platform.stack.jwt_secret(), roles=["department"], sub=f"dept-{name}",
                       department=name)  # fmt: skip
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _grid_step(session: requests.Session, platform: Platform, incident: dict[str, Any],
               **body: Any) -> dict[str, Any]:  # fmt: skip
    return ok(session.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions",
        json={"expected_version": incident["version"], **body}, timeout=10,
    ))  # fmt: skip


def _incident_case(platform: Platform, *, started: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    community = "hx-liushu"
    worker = platform.session("grid_worker", sub="gw-ls", communities=(community,))
    incident = ok(worker.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "property_dispute", "grid_cell": "ls-02", "description": "物业费争议"},
        timeout=10,
    ), 201)  # fmt: skip
    if started:
        grid_staff = platform.session("community_staff", sub="staff-ls", communities=(community,))
        incident = _grid_step(grid_staff, platform, incident, action="accept")
        incident = _grid_step(grid_staff, platform, incident, action="dispatch",
                              department="property_management")  # fmt: skip
        incident = _grid_step(_department(platform, "property_management"), platform, incident,
                              action="start")  # fmt: skip
    office = staff(platform, community)
    case = wait_for(
        lambda: office.get(
            f"{platform.url}{API}/cases", params={"incident_id": incident["id"]}, timeout=10
        ).json()["items"],  # fmt: skip
        what="the case of the incident",
    )[0]
    case = ok(office.get(f"{platform.url}{API}/cases/{case['id']}", timeout=10))
    return incident, case


def test_a_closed_case_reports_a_started_incident_handled_with_the_outcome(
    platform: Platform,
) -> None:
    incident, case = _incident_case(platform, started=True)
    office = staff(platform, "hx-liushu")
    case = ok(step(office, platform, case, "withdraw", reason="申请人撤回"))
    ok(step(office, platform, case, "close"))
    reader = platform.session("community_staff", sub="staff-ls", communities=("hx-liushu",))
    url = f"{platform.url}/api/v1/grid/incidents/{incident['id']}"
    handled = wait_for(
        lambda: (lambda i: i if i["status"] == "handled" else None)(
            reader.get(url, timeout=10).json()
        ),
        what="the incident reported handled",
    )
    assert handled["mediation"]["outcome"] == "withdrawn" and handled["mediation"]["step_taken"]
    history = ok(reader.get(f"{url}/history", timeout=10))["items"]
    assert history[-1]["action"] == "report_handled"
    assert "当事人撤回调解申请" in history[-1]["fields"]["feedback"]


def test_a_closed_case_on_an_incident_not_in_progress_is_recorded_without_a_step(
    platform: Platform,
) -> None:
    incident, case = _incident_case(platform, started=False)
    office = staff(platform, "hx-liushu")
    case = ok(step(office, platform, case, "withdraw", reason="申请人撤回"))
    ok(step(office, platform, case, "close"))
    reader = platform.session("community_staff", sub="staff-ls", communities=("hx-liushu",))
    url = f"{platform.url}/api/v1/grid/incidents/{incident['id']}"
    noted = wait_for(
        lambda: (lambda i: i if i.get("mediation") else None)(reader.get(url, timeout=10).json()),
        what="the outcome noted on the incident",
    )
    assert noted["status"] == "reported" and noted["version"] == incident["version"]
    assert noted["mediation"] == {
        "case_id": case["id"], "outcome": "withdrawn", "at": noted["mediation"]["at"],
        "step_taken": False,
    }  # fmt: skip


def test_a_party_added_later_cannot_make_the_assigned_mediator_recused(platform: Platform) -> None:
    community = new_community()
    roster_of_two(platform, community)
    case = ok(assign(platform, walk_in(platform, community), community))
    assert case["mediator_id"] == f"{community}-b"
    url = f"{platform.url}{API}/cases/{case['id']}/parties"
    neighbour = {"role": "third_party", "name": "孙丽", "building": "ls-02-b01"}
    office = staff(platform, community)
    refused = office.post(url, json={"expected_version": case["version"], "parties": [neighbour]},
                          timeout=10)  # fmt: skip
    assert refused.status_code == 409 and refused.json()["reasons"] == ["same_building"]
    other = {**neighbour, "building": "qy-03-b01"}
    added = ok(office.post(url, json={"expected_version": case["version"], "parties": [other]},
                           timeout=10))  # fmt: skip
    assert [p["id"] for p in added["parties"]] == ["P1", "P2", "P3"]
    assert added["version"] == case["version"] + 1


def test_the_rates_count_closed_cases_by_outcome(platform: Platform) -> None:
    case, community, _ = agreed_case(platform)
    office = staff(platform, community)
    ok(step(office, platform, case, "close"))
    other = ok(step(office, platform, walk_in(platform, community), "withdraw", reason="撤回"))
    ok(step(office, platform, other, "close"))
    now = datetime.now(UTC)
    params = {"community": community, "from": (now - timedelta(hours=1)).isoformat(),
              "to": (now + timedelta(hours=1)).isoformat()}  # fmt: skip
    rates = ok(office.get(f"{platform.url}{API}/rates", params=params, timeout=10))
    assert rates["by_outcome"] == {"agreed": 1, "withdrawn": 1} and rates["agreement_rate"] == 0.5
    backwards = office.get(f"{platform.url}{API}/rates",
                           params={**params, "to": params["from"]}, timeout=10)  # fmt: skip
    assert backwards.status_code == 422


def test_a_second_report_event_for_the_same_incident_opens_no_second_case(
    platform: Platform,
) -> None:
    incident_id = f"INC-test-{uuid.uuid4().hex[:8]}"
    data = {
        "incident_id": incident_id,
        "category": {"code": "neighbour_dispute", "name_zh": "邻里纠纷", "opens_mediation": True,
                     "volunteer_task": False, "sensitive": False},
        "community": "hx-qingyuan", "grid_cell": "qy-01", "channel": "patrol",
        "urgency": "ordinary", "reported_at": datetime.now(UTC),
    }  # fmt: skip
    marks = platform.db("mediation")["processed_events"]
    for _ in range(2):  # two events, two ids: as a producer that re-sent with a new id would
        publish(platform, grid_events.INCIDENT_REPORTED_V1, data, subject=incident_id)
    wait_for(
        lambda: marks.count_documents(
            {"subject": incident_id, "handler": "on_incident_reported"}
        ) == 2,
        what="mediation to handle both events",
    )  # fmt: skip
    assert platform.db("mediation")["cases"].count_documents({"incident_id": incident_id}) == 1


def test_the_timer_warns_and_reports_overdue_once(platform: Platform) -> None:
    from shequ import sealing
    from shequ_services.mediation import domain as mediation_domain
    from shequ_services.mediation.store import CaseRepository

    keys = platform.stack.field_keys("mediation")
    repository = CaseRepository(platform.db("mediation"), service="mediation", district="dev")
    repository.keyring = sealing.Keyring.from_config(
        keys["SHEQU_MEDIATION_KEYS"], keys["SHEQU_MEDIATION_ACTIVE_KEY"],
        keys["SHEQU_MEDIATION_INDEX_KEY"],
    )  # fmt: skip
    # A case opened 40 days ago, as if it had been running that long.
    case = mediation_domain.walk_in_case(
        community=new_community(), dispute_type="neighbour_dispute", facts="旧案",
        parties=[APPLICANT], now=datetime.now(UTC) - timedelta(days=40),
        policy=mediation_domain.Policy(),
    )  # fmt: skip
    assert repository.open(case)
    outbox = platform.db("mediation")["outbox"]
    alerts = ("shequ.mediation.case.warned", "shequ.mediation.case.overdue")
    wait_for(
        lambda: (
            outbox.count_documents({"body.subject": case.id, "body.type": {"$in": alerts}}) == 2
        ),
        timeout=60,
        what="the deadline scan to raise both alerts",
    )
    stored = platform.db("mediation")["cases"].find_one({"_id": case.id})
    assert stored["next_due"] is None and stored["clock"]["overdue_at"] is not None
    assert outbox.count_documents({"body.subject": case.id, "body.type": {"$in": alerts}}) == 2
