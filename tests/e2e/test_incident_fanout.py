"""The first vertical slice: one report fans out over the bus to every service."""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Platform, wait_for
from tests.support.events import published_entries

pytestmark = pytest.mark.e2e

STAFF = ("community_staff", "mediator", "volunteer")
COMMUNITY = "hx-qingyuan"


def report(platform: Platform, body: dict[str, Any], *roles: str) -> Any:
    session = platform.session(*(roles or ("grid_worker",)), sub="gw-1", communities=(COMMUNITY,))
    return session.post(f"{platform.url}/api/v1/grid/incidents", json=body, timeout=10)


def effects(platform: Platform, incident_id: str) -> dict[str, list[Any]]:
    staff = platform.session(*STAFF, communities=(COMMUNITY,))
    base = platform.url
    notes = staff.get(f"{base}/api/v1/notify/notifications", params={"subject_ref": incident_id})
    cases = staff.get(f"{base}/api/v1/mediation/cases", params={"incident_id": incident_id})
    tasks = staff.get(f"{base}/api/v1/volunteer/tasks", params={"incident_id": incident_id})
    board = staff.get(f"{base}/api/v1/disclosure/entries", params={"limit": 1000, "order": "desc"})
    return {
        "notify": notes.json()["items"],
        "mediation": cases.json()["items"],
        "volunteer": tasks.json()["items"],
        "disclosure": [e for e in board.json()["items"] if incident_id in e["references"]],
    }


def test_a_dispute_report_reaches_notify_disclosure_and_mediation(platform: Platform) -> None:
    response = report(
        platform,
        {"category": "neighbour_dispute", "grid_cell": "qy-02", "description": "楼上噪音纠纷"},
    )
    assert response.status_code == 201, response.text
    incident = response.json()
    assert response.headers["Location"] == f"/api/v1/grid/incidents/{incident['id']}"

    found = wait_for(
        lambda: (lambda e: e if e["notify"] and e["disclosure"] and e["mediation"] else None)(
            effects(platform, incident["id"])
        ),
        what="the incident's effects in notify, disclosure and mediation",
    )
    assert {n["recipient"] for n in found["notify"]} == {
        f"reporter-of:{incident['id']}",
        "grid_worker:qy-02",
    }
    assert found["mediation"][0]["dispute_type"] == "neighbour_dispute"
    assert found["disclosure"][0]["title"] == "受理事项：邻里纠纷"
    assert found["volunteer"] == []


def test_an_alley_report_creates_a_volunteer_task(platform: Platform) -> None:
    created = report(
        platform, {"category": "alley_unclean", "grid_cell": "qy-03", "description": "垃圾堆积"}
    ).json()
    tasks = wait_for(lambda: effects(platform, created["id"])["volunteer"], what="volunteer task")
    assert tasks[0]["kind"] == "clean_up"
    assert tasks[0]["grid_cell"] == "qy-03"


def test_the_reporter_reads_their_incident_and_another_resident_cannot(platform: Platform) -> None:
    resident = platform.session("resident", sub="resident-7")
    created = resident.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": "ls-01", "description": "路灯坏了"},
        timeout=10,
    ).json()
    url = f"{platform.url}/api/v1/grid/incidents/{created['id']}"
    assert resident.get(url, timeout=10).json()["description"] == "路灯坏了"
    other = platform.session("resident", sub="resident-8")
    refused = other.get(url, timeout=10)
    assert refused.status_code == 404
    assert refused.headers["Content-Type"] == "application/problem+json"
    listed = other.get(f"{platform.url}/api/v1/grid/incidents", timeout=10).json()["items"]
    assert created["id"] not in {item["id"] for item in listed}


def test_a_sensitive_report_is_disclosed_without_its_category_or_id(platform: Platform) -> None:
    entries = platform.db("disclosure")["entries"]
    last = entries.find_one(sort=[("_id", -1)])
    seen_before = last["_id"] if last else -1
    created = report(
        platform, {"category": "new_pregnancy", "grid_cell": "qy-01", "description": "王某怀孕"}
    ).json()
    # Other tests' entries land concurrently, and this one's carries nothing that
    # links it to the incident; the handler's processed mark does (it commits with
    # the queued draft), so once it is there and the queue is empty, every entry
    # since `seen_before` is looked at.
    processed = platform.db("disclosure")["processed_events"]
    wait_for(
        lambda: processed.find_one({"subject": created["id"]}),
        what="disclosure to handle the sensitive report",
    )
    pending = platform.db("disclosure")["pending"]
    wait_for(lambda: pending.count_documents({}) == 0, what="the queued drafts appended")
    new_entries = list(entries.find({"_id": {"$gt": seen_before}}))
    published = json.dumps(new_entries, default=str, ensure_ascii=False)
    assert created["id"] not in published
    assert "new_pregnancy" not in published and "王某" not in published
    assert "受理个人事项一件（内容依法不予公开）" in {entry["title"] for entry in new_entries}


def test_events_carry_no_reporter_or_description(platform: Platform) -> None:
    created = report(
        platform,
        {"category": "safety_hazard", "grid_cell": "qy-01", "description": "张三家电线老化"},
    ).json()
    outbox = platform.db("grid")["outbox"]
    entry = wait_for(lambda: outbox.find_one({"body.subject": created["id"]}), what="outbox entry")
    body = json.dumps(entry["body"], ensure_ascii=False)
    assert "gw-1" not in body and "张三" not in body
    assert entry["body"]["type"] == "shequ.grid.incident.reported"
    assert entry["body"]["data"]["category"]["code"] == "safety_hazard"


def test_a_redelivered_event_changes_nothing(platform: Platform) -> None:
    created = report(
        platform,
        {"category": "property_dispute", "grid_cell": "ls-02", "description": "物业费争议"},
    ).json()
    first = wait_for(
        lambda: (lambda e: e if e["notify"] and e["mediation"] and e["disclosure"] else None)(
            effects(platform, created["id"])
        ),
        what="first delivery's effects",
    )
    [entry] = wait_for(
        lambda: published_entries(platform.db("grid"), {"body.subject": created["id"]}),
        what="the outbox entry published",
    )
    consumers = ("notify", "disclosure", "mediation", "volunteer")
    before = {service: handled(platform, service) for service in consumers}
    # Publish the very same event again, as a relay that crashed before
    # marking it sent would.
    connection = pika.BlockingConnection(pika.URLParameters(platform.servers.amqp_uri))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        "grid.events",
        "incident.reported",
        json.dumps(entry["body"]).encode(),
        pika.BasicProperties(
            content_type="application/cloudevents+json", delivery_mode=2, message_id=entry["_id"]
        ),
    )
    connection.close()
    wait_for(
        lambda: all(handled(platform, s) > before[s] for s in consumers),
        what="every consumer to handle the duplicate",
    )
    again = effects(platform, created["id"])
    # Notifications move from pending to sent meanwhile: compare which exist.
    assert {n["id"] for n in again.pop("notify")} == {n["id"] for n in first.pop("notify")}
    assert again == first
    for service in consumers:
        marks = platform.db(service)["processed_events"]
        assert marks.count_documents({"event_id": entry["_id"]}) == 1


def handled(platform: Platform, service: str) -> float:
    """Successful deliveries of incident.reported so far, from the service's own metrics."""
    url = platform.stack.processes[service].url
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "shequ_event_handle_seconds":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name.endswith("_count")
                and sample.labels["event_type"] == "incident.reported"
                and sample.labels["outcome"] == "success"
            )
    return 0.0
