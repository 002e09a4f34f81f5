"""The volunteer service end to end: registry, dispatch, rounds, the hours ledger.

The service runs alone on a RabbitMQ node of its own (its handler queue for
grid reports would otherwise compete with the session platform's volunteer
service) and on the session's SecantusDB, with short offer deadlines and a
fast timer, on cells that are islands per test (tests/support/volunteer_cells.yaml).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pika
import pytest
import requests

from shequ.auth import mint_token
from shequ.contracts import grid as grid_events
from shequ.contracts import new_event
from shequ.embedded import RabbitMQNode
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for

pytestmark = pytest.mark.e2e

SUPPORT = Path(__file__).resolve().parent.parent / "support"
COMMUNITY = "vt-com"
RESPONSE_SECONDS = 8
BASE = "/api/v1/volunteer"
PAST = "2020-01-01T00:00:00+00:00"
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("volunteer")
    rabbit = RabbitMQNode(root / "rabbitmq")
    rabbit.start()
    try:
        own = Servers(rabbit.amqp_uri, servers.mongo_uri, rabbit.management_url)
        stack = stack_on(
            own,
            root / "stack",
            services=["volunteer"],
            env={
                "SHEQU_VOLUNTEER_CELLS_FILE": str(SUPPORT / "volunteer_cells.yaml"),
                "SHEQU_VOLUNTEER_SEED_FILE": str(SUPPORT / "volunteer_seed.yaml"),
                "SHEQU_VOLUNTEER_OFFER_PARALLEL": "1",
                "SHEQU_VOLUNTEER_OFFER_RESPONSE_SECONDS": str(RESPONSE_SECONDS),
                "SHEQU_VOLUNTEER_OFFER_SCAN_SECONDS": "0.2",
                "SHEQU_VOLUNTEER_ROUNDS_SCAN_SECONDS": "3600",
                "SHEQU_VOLUNTEER_INDEX_REFRESH_SECONDS": "0.5",
            },
        )
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        rabbit.stop()


def session(stack: Stack, *roles: str, sub: str = "sw-staff", **claims: Any) -> requests.Session:
    caller = requests.Session()
    claims.setdefault("communities", [COMMUNITY])
    token = mint_token(stack.jwt_secret(), roles=roles, sub=sub, **claims)
    caller.headers["Authorization"] = f"Bearer {token}"
    return caller


def staff(stack: Stack) -> requests.Session:
    return session(stack, "community_staff")


def db(stack: Stack, servers: Servers) -> Any:
    return servers.mongo()[f"{stack.extra_env['SHEQU_MONGO_DATABASE_PREFIX']}volunteer"]


def register(stack: Stack, vid: str, cell: str, **extra: Any) -> dict[str, Any]:
    body = {
        "id": vid, "community": COMMUNITY, "name": "王小明", "phone": "13912345678",
        "home_cell": cell, "skills": [{"code": "visiting", "confirmed_by": "居委会"}],
        "consent_to_contact": True, **extra,
    }  # fmt: skip
    response = staff(stack).post(f"{stack.url}{BASE}/volunteers", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def events(stack: Stack, servers: Servers, subject: str) -> list[dict[str, Any]]:
    found = [d["body"] for d in db(stack, servers)["outbox"].find({"body.subject": subject})]
    return sorted(found, key=lambda body: body["sequence"])


def kinds(stack: Stack, servers: Servers, subject: str) -> list[tuple[str, str | None]]:
    return [
        (e["type"].removeprefix("shequ.volunteer."), e["data"].get("volunteer_id"))
        for e in events(stack, servers, subject)
    ]


def create_task(stack: Stack, cell: str, **extra: Any) -> dict[str, Any]:
    body = {"kind": "home_visit", "community": COMMUNITY, "grid_cell": cell, **extra}
    response = staff(stack).post(f"{stack.url}{BASE}/tasks", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_personal_data_is_masked_unless_the_caller_needs_it(stack: Stack) -> None:
    """Seeing a name and phone in the clear is a sensitive read: recorded with its purpose."""
    register(stack, "vt-mask-1", "vt-e1")
    since = datetime.now(UTC)
    url = f"{stack.url}{BASE}/volunteers/vt-mask-1"
    auditor = session(stack, "auditor", sub="aud-1")
    masked = auditor.get(url, timeout=10).json()
    assert (masked["name"], masked["phone"], masked["masked"]) == ("王**", "139****5678", True)
    reader = session(stack, "community_staff", sub="sw-reader", purpose="casework")
    assert reader.get(url, timeout=10).json()["phone"] == "13912345678"
    self_view = session(stack, "volunteer", sub="vt-mask-1", communities=[]).get(url, timeout=10)
    assert self_view.json()["name"] == "王小明"
    other = session(stack, "volunteer", sub="vt-someone", communities=[]).get(url, timeout=10)
    assert other.status_code == 404
    trail = auditor.get(
        f"{stack.url}{BASE}/audit",
        params={"object_kind": "volunteer", "object_id": "vt-mask-1", "from": since.isoformat()},
        timeout=10,
    )
    assert trail.status_code == 200, trail.text
    assert [(r["action"], r["actor"]) for r in trail.json()["items"]] == [
        (
            "volunteer.volunteer.read_personal",
            {"sub": "sw-reader", "roles": ["community_staff"], "purpose": "casework"},
        )
    ]
    # A page of a listing in the clear: a record per volunteer on it, in one write.
    lister = session(stack, "community_staff", sub="sw-lister", purpose="casework")
    listed = lister.get(f"{stack.url}{BASE}/volunteers", params={"limit": 3}, timeout=10).json()
    recorded = auditor.get(
        f"{stack.url}{BASE}/audit", params={"actor": "sw-lister"}, timeout=10
    ).json()["items"]
    assert len(listed["items"]) >= 1
    assert [(r["action"], r["object"]["id"]) for r in recorded] == [
        ("volunteer.volunteer.read_personal", v["id"]) for v in listed["items"]
    ]
    assert [r["prev"] for r in recorded[1:]] == [r["hash"] for r in recorded[:-1]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"home_cell": "zz-99"}, "home_cell"),
        ({"teams": ["no-such-team"]}, "teams"),
        ({"windows": [{"weekday": 1, "start": "18:00", "end": "09:00"}]}, "windows"),
        ({"windows": [{"weekday": 7, "start": "08:00", "end": "09:00"}]}, "windows"),
        ({"phone": "call me"}, "phone"),
        ({"consent_to_contact": None}, "consent_to_contact"),
        ({"skills": [{"code": "visiting"}]}, "skills"),
        ({"national_id": "110101199001011234"}, "national_id"),
    ],
)
def test_a_bad_volunteer_is_refused_with_the_field_named_and_nothing_stored(
    stack: Stack, servers: Servers, change: dict[str, Any], field: str
) -> None:
    body = {
        "id": f"vt-bad-{uuid.uuid4().hex[:6]}", "community": COMMUNITY, "name": "李四",
        "phone": "13900000000", "home_cell": "vt-e1", "consent_to_contact": True, **change,
    }  # fmt: skip
    before = db(stack, servers)["volunteers"].count_documents({})
    response = staff(stack).post(f"{stack.url}{BASE}/volunteers", json=body, timeout=10)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]
    assert db(stack, servers)["volunteers"].count_documents({}) == before


def test_bad_task_hours_and_round_input_is_refused_and_changes_nothing(
    stack: Stack, servers: Servers
) -> None:
    url, caller = stack.url, staff(stack)
    before = db(stack, servers)["tasks"].count_documents({})
    for body, field in [
        ({"kind": "home_visit", "community": COMMUNITY, "grid_cell": "zz-1"}, "grid_cell"),
        ({"kind": "Home Visit", "community": COMMUNITY, "grid_cell": "vt-e1"}, "kind"),
        ({"kind": "x", "community": COMMUNITY, "grid_cell": "vt-e1", "due_at": PAST}, "due_at"),
    ]:  # fmt: skip
        response = caller.post(f"{url}{BASE}/tasks", json=body, timeout=10)
        assert response.status_code == 422 and field in response.json()["errors"], response.text
    assert db(stack, servers)["tasks"].count_documents({}) == before
    admin = session(stack, "admin", sub="adm")
    assert admin.post(f"{url}{BASE}/rounds/2026-13", timeout=10).status_code == 422
    bad_query = caller.get(f"{url}{BASE}/hours/totals", params={"by": "street"}, timeout=10)
    assert bad_query.status_code == 422 and "by" in bad_query.json()["errors"]


def test_an_offer_declined_goes_to_the_next_and_the_taker_works_checks_out_and_is_approved(
    stack: Stack, servers: Servers
) -> None:
    url = stack.url
    lead = "vt-lead-1"
    team = {"id": "vt-team-1", "community": COMMUNITY, "name": "测试队", "leaders": [lead]}
    assert staff(stack).post(f"{url}{BASE}/teams", json=team, timeout=10).status_code == 201
    register(stack, "vt-a1-v1", "vt-a1", teams=["vt-team-1"])
    register(stack, "vt-a1-v2", "vt-a1", teams=["vt-team-1"])
    register(stack, "vt-a1-plain", "vt-a1", skills=[])  # no visiting skill: never ranked
    task = create_task(stack, "vt-a1")
    assert [o["volunteer_id"] for o in task["offers"]] == ["vt-a1-v1"]

    first = session(stack, "volunteer", sub="vt-a1-v1", communities=[])
    mine = first.get(f"{url}{BASE}/offers", timeout=10).json()["items"]
    assert task["id"] in {t["id"] for t in mine}
    listed = first.get(f"{url}{BASE}/tasks", timeout=10).json()["items"]
    assert {t["id"] for t in listed} == {task["id"]}  # only tasks offered to them
    answered = first.post(f"{url}{BASE}/tasks/{task['id']}/answer", json={"answer": "decline"},
                          timeout=10)  # fmt: skip
    assert answered.status_code == 200, answered.text
    assert [o["volunteer_id"] for o in answered.json()["offers"]] == ["vt-a1-v1", "vt-a1-v2"]

    second = session(stack, "volunteer", sub="vt-a1-v2", communities=[])
    task_url = f"{url}{BASE}/tasks/{task['id']}"
    assert second.post(f"{task_url}/check-in", timeout=10).status_code == 403  # not theirs yet
    accepted = second.post(f"{task_url}/answer", json={"answer": "accept"}, timeout=10)
    assert accepted.status_code == 200 and accepted.json()["assignee"] == "vt-a1-v2"
    assert first.post(f"{task_url}/check-in", timeout=10).status_code == 403
    assert second.post(f"{task_url}/check-in", timeout=10).status_code == 200
    done = second.post(f"{task_url}/check-out", timeout=10)
    assert done.status_code == 200, done.text
    entry = done.json()["entry"]
    assert done.json()["task"]["status"] == "completed" and entry["status"] == "pending"

    approval = f"{url}{BASE}/hours/{entry['id']}/approval"
    assert second.post(approval, timeout=10).status_code == 403  # never one's own time
    leader = session(stack, "volunteer", sub=lead, communities=[])
    approved = leader.post(approval, timeout=10)
    assert approved.status_code == 200 and approved.json()["approved_by"] == lead
    assert leader.post(approval, timeout=10).status_code == 409

    assert kinds(stack, servers, task["id"]) == [
        ("task.created", None), ("task.offered", "vt-a1-v1"), ("task.declined", "vt-a1-v1"),
        ("task.offered", "vt-a1-v2"), ("task.accepted", "vt-a1-v2"), ("task.completed", None),
    ]  # fmt: skip
    (hours,) = events(stack, servers, entry["id"])
    assert hours["type"] == "shequ.volunteer.hours.approved"
    assert set(hours["data"]) == {"ledger_id", "community", "minutes", "at", "corrects"}
    published = json.dumps(
        [e["body"] for e in db(stack, servers)["outbox"].find()], ensure_ascii=False
    )
    assert "王小明" not in published and "13912345678" not in published


def test_corrections_are_new_entries_and_totals_csv_and_certificate_follow_them(
    stack: Stack, servers: Servers
) -> None:
    url = stack.url
    register(stack, "vt-c1-v1", "vt-c1", name="<b>赵</b>六")
    task = create_task(stack, "vt-c1")
    worker = session(stack, "volunteer", sub="vt-c1-v1", communities=[])
    task_url = f"{url}{BASE}/tasks/{task['id']}"
    for step, body in [("answer", {"answer": "accept"}), ("check-in", None), ("check-out", None)]:
        response = worker.post(f"{task_url}/{step}", json=body, timeout=10)
        assert response.status_code == 200, response.text
    entry = response.json()["entry"]
    caller = staff(stack)
    assert caller.post(f"{url}{BASE}/hours/{entry['id']}/approval", timeout=10).status_code == 200
    corrections = f"{url}{BASE}/hours/{entry['id']}/corrections"
    too_far = caller.post(corrections, json={"minutes_delta": -entry["minutes"] - 1, "reason": "x"},
                          timeout=10)  # fmt: skip
    assert too_far.status_code == 422 and "minutes_delta" in too_far.json()["errors"]
    added = caller.post(corrections, json={"minutes_delta": 90, "reason": "补记"}, timeout=10)
    assert added.status_code == 201 and added.json()["corrects"] == entry["id"]
    month = (
        datetime.fromisoformat(entry["served_at"])
        .astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
        .strftime("%Y-%m")
    )
    totals_url = f"{url}{BASE}/hours/totals"

    def total() -> int:
        items = caller.get(totals_url, params={"month": month}, timeout=10).json()["items"]
        return sum(i["minutes"] for i in items if i["group"] == "vt-c1-v1")

    assert total() == entry["minutes"]  # the correction counts once approved
    approve_added = caller.post(f"{url}{BASE}/hours/{added.json()['id']}/approval", timeout=10)
    assert approve_added.status_code == 200
    assert total() == entry["minutes"] + 90
    removed = caller.post(corrections, json={"minutes_delta": -30, "reason": "记多了"}, timeout=10)
    # Another community's staff neither approve these hours nor see them.
    elsewhere = session(stack, "community_staff", sub="sw-elsewhere", communities=["vt-elsewhere"])
    removed_approval = f"{url}{BASE}/hours/{removed.json()['id']}/approval"
    assert elsewhere.post(removed_approval, timeout=10).status_code == 403
    assert elsewhere.post(corrections, json={"minutes_delta": 5, "reason": "x"},
                          timeout=10).status_code == 403  # fmt: skip
    theirs = elsewhere.get(f"{url}{BASE}/hours", params={"volunteer_id": "vt-c1-v1"}, timeout=10)
    assert theirs.status_code == 200 and theirs.json()["items"] == []
    asked = elsewhere.get(f"{url}{BASE}/hours", params={"community": COMMUNITY}, timeout=10)
    assert asked.status_code == 200 and asked.json()["items"] == []
    their_csv = elsewhere.get(f"{url}{BASE}/hours.csv", params={"month": month}, timeout=10)
    assert their_csv.status_code == 200 and "vt-c1-v1" not in their_csv.text
    caller.post(removed_approval, timeout=10)
    assert total() == entry["minutes"] + 60
    original = db(stack, servers)["ledger"].find_one({"_id": entry["id"]})
    assert original["minutes"] == entry["minutes"]  # never edited
    assert [e["type"] for e in events(stack, servers, removed.json()["id"])] == [
        "shequ.volunteer.hours.corrected"
    ]

    csv = caller.get(f"{url}{BASE}/hours.csv", params={"month": month}, timeout=10)
    assert csv.headers["Content-Type"].startswith("text/csv")
    rows = [line for line in csv.text.splitlines() if "vt-c1-v1" in line]
    assert len(rows) == 3
    certificate = worker.get(f"{url}{BASE}/volunteers/vt-c1-v1/certificate", timeout=10)
    assert certificate.status_code == 200 and "志愿服务时长证明" in certificate.text
    assert "&lt;b&gt;赵&lt;/b&gt;六" in certificate.text and "<b>赵</b>" not in certificate.text
    assert f"{entry['minutes'] + 60}" in certificate.text and "测试社区" in certificate.text
    stranger = session(stack, "volunteer", sub="vt-other", communities=[])
    assert (
        stranger.get(f"{url}{BASE}/volunteers/vt-c1-v1/certificate", timeout=10).status_code == 404
    )


def test_an_unanswered_offer_lapses_across_a_restart_then_the_next_then_staff(
    stack: Stack, servers: Servers
) -> None:
    register(stack, "vt-b1-v1", "vt-b1")
    register(stack, "vt-b1-v2", "vt-b1")
    task = create_task(stack, "vt-b1")
    deadline = datetime.fromisoformat(task["offers"][0]["deadline"])
    process = stack.processes["volunteer"].process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    wait_for(lambda: datetime.now(UTC) > deadline, timeout=RESPONSE_SECONDS + 5,
             what="the first offer's deadline to pass while the service is down")  # fmt: skip
    assert stack.supervise_once() == ["volunteer"]

    def lapsed_twice() -> list[tuple[str, str | None]] | None:
        found = kinds(stack, servers, task["id"])
        return found if ("task.escalated", None) in found else None

    found = wait_for(lapsed_twice, timeout=60, what="both offers to lapse and the task to escalate")
    assert found == [
        ("task.created", None), ("task.offered", "vt-b1-v1"), ("task.expired", "vt-b1-v1"),
        ("task.offered", "vt-b1-v2"), ("task.expired", "vt-b1-v2"), ("task.escalated", None),
    ]  # fmt: skip
    url = f"{stack.url}{BASE}/tasks/{task['id']}"
    late = session(stack, "volunteer", sub="vt-b1-v1", communities=[])
    assert late.post(f"{url}/answer", json={"answer": "accept"}, timeout=10).status_code == 409
    assigned = staff(stack).post(f"{url}/assign", json={"volunteer_id": "vt-b1-v1"}, timeout=10)
    assert assigned.status_code == 200 and assigned.json()["status"] == "accepted"


def publish(stack: Stack, event: dict[str, Any]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_uri))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        "grid.events",
        "incident.reported",
        json.dumps(event).encode(),
        pika.BasicProperties(content_type="application/cloudevents+json", delivery_mode=2),
    )
    connection.close()


def test_a_redelivered_or_repeated_incident_report_creates_one_task(
    stack: Stack, servers: Servers
) -> None:
    incident_id = f"INC-vt-{uuid.uuid4().hex[:8]}"
    data = {
        "incident_id": incident_id,
        "category": {"code": "alley_unclean", "name_zh": "背街小巷不洁", "opens_mediation": False,
                     "volunteer_task": True, "sensitive": False},
        "community": COMMUNITY, "grid_cell": "vt-d1", "channel": "patrol", "urgency": "ordinary",
        "reported_at": datetime.now(UTC),
    }  # fmt: skip
    event = new_event(
        grid_events.INCIDENT_REPORTED_V1, district="dev", subject=incident_id, sequence=1,
        data=data,
    ).to_json_dict()  # fmt: skip
    again = {**event, "id": str(uuid.uuid4())}  # the same report under a new event id
    for body in (event, event, again):
        publish(stack, body)
    processed = db(stack, servers)["processed_events"]
    wait_for(
        lambda: (
            processed.count_documents({"subject": incident_id}) >= 2
            or db(stack, servers)["tasks"].count_documents({"incident_id": incident_id}) > 1
        ),
        what="both event ids to be handled",
    )
    caller = staff(stack)
    tasks = caller.get(f"{stack.url}{BASE}/tasks", params={"incident_id": incident_id}, timeout=10)
    (task,) = tasks.json()["items"]
    assert task["kind"] == "clean_up" and task["status"] == "escalated"  # nobody in vt-d1
    assert [k for k, _ in kinds(stack, servers, task["id"])] == ["task.created", "task.escalated"]


def test_a_months_round_makes_one_visit_per_listed_household_and_a_visit_follows_a_move(
    stack: Stack, servers: Servers
) -> None:
    url, caller = stack.url, staff(stack)
    register(stack, "vt-c2-v1", "vt-c2", household_id="vt-hh-own")
    register(stack, "vt-a2-v1", "vt-a2")
    for household, lists in [("vt-hh-own", ["needy"]), ("vt-hh-2", ["elderly_alone"]),
                             ("vt-hh-3", [])]:  # fmt: skip
        body = {"id": household, "community": COMMUNITY, "grid_cell": "vt-c2", "care_lists": lists}
        response = caller.post(f"{url}{BASE}/households", json=body, timeout=10)
        assert response.status_code == 201, response.text
    month_text = datetime.now(UTC).astimezone(TZ).strftime("%Y-%m")
    admin = session(stack, "admin", sub="adm")
    first = admin.post(f"{url}{BASE}/rounds/{month_text}", timeout=10).json()
    second = admin.post(f"{url}{BASE}/rounds/{month_text}", timeout=10).json()
    assert first["created"] >= 2 and second["created"] == 0

    def visits() -> dict[str, dict[str, Any]]:
        query = {"round_month": month_text, "source": "round"}
        items = caller.get(f"{url}{BASE}/tasks", params=query, timeout=10).json()["items"]
        return {t["household_id"]: t for t in items if t["household_id"].startswith("vt-hh")}

    found = visits()
    assert set(found) == {"vt-hh-own", "vt-hh-2"}
    # The volunteer living in vt-hh-own is never offered their own household's visit.
    assert found["vt-hh-own"]["status"] == "escalated"
    assert [o["volunteer_id"] for o in found["vt-hh-2"]["offers"]] == ["vt-c2-v1"]

    moved = caller.patch(f"{url}{BASE}/households/vt-hh-2", json={"grid_cell": "vt-a2"}, timeout=10)
    assert moved.status_code == 200, moved.text
    assert admin.post(f"{url}{BASE}/rounds/{month_text}", timeout=10).json()["created"] == 0
    after = visits()["vt-hh-2"]
    assert after["id"] == found["vt-hh-2"]["id"] and after["grid_cell"] == "vt-a2"
    assert [(o["volunteer_id"], o["status"]) for o in after["offers"]] == [
        ("vt-c2-v1", "withdrawn"), ("vt-a2-v1", "pending"),
    ]  # fmt: skip
    assert db(stack, servers)["tasks"].count_documents({"household_id": "vt-hh-2"}) == 1


def test_households_and_teams_are_listed_in_capped_pages_that_continue_after_the_last_id(
    stack: Stack,
) -> None:
    """The care list grows with the community: a listing hands out at most ``limit``
    (500 at most) and says where the next page starts, as the volunteers' does."""
    url, caller = stack.url, staff(stack)
    for number in range(3):
        body = {"id": f"vt-pg-{number}", "community": COMMUNITY, "grid_cell": "vt-c2",
                "care_lists": ["needy"]}  # fmt: skip
        assert caller.post(f"{url}{BASE}/households", json=body, timeout=10).status_code == 201
        team = {"id": f"vt-pg-team-{number}", "community": COMMUNITY, "name": f"分页 {number}",
                "leaders": ["vt-pg-lead"]}  # fmt: skip
        assert caller.post(f"{url}{BASE}/teams", json=team, timeout=10).status_code == 201
    for listing, prefix in (("households", "vt-pg-"), ("teams", "vt-pg-team-")):
        listed: list[str] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
            page = caller.get(f"{url}{BASE}/{listing}", params=params, timeout=10)
            assert page.status_code == 200, page.text
            assert len(page.json()["items"]) <= 2
            listed += [item["id"] for item in page.json()["items"]]
            after = page.json()["next"]
            if after is None:
                break
        assert listed == sorted(set(listed))  # in id order, none twice
        assert {f"{prefix}{n}" for n in range(3)} <= set(listed)
        too_many = caller.get(f"{url}{BASE}/{listing}", params={"limit": 501}, timeout=10)
        assert too_many.status_code == 422 and "limit" in too_many.json()["errors"]
    nowhere = caller.get(f"{url}{BASE}/hours", params={"after": "no-such-entry"}, timeout=10)
    assert nowhere.status_code == 422 and "after" in nowhere.json()["errors"]


def test_a_volunteer_who_withdraws_consent_is_no_longer_offered_tasks(stack: Stack) -> None:
    register(stack, "vt-f1-v1", "vt-f1")
    register(stack, "vt-f1-v2", "vt-f1")
    me = session(stack, "volunteer", sub="vt-f1-v1", communities=[])
    url = f"{stack.url}{BASE}/volunteers/vt-f1-v1"
    moved = me.patch(url, json={"home_cell": "vt-a1"}, timeout=10)
    assert moved.status_code == 403  # the record is the community's to change
    withdrawn = me.patch(url, json={"consent_to_contact": False}, timeout=10)
    assert withdrawn.status_code == 200 and withdrawn.json()["consent_to_contact"] is False
    task = create_task(stack, "vt-f1")
    assert [o["volunteer_id"] for o in task["offers"]] == ["vt-f1-v2"]
