"""Notify through the whole platform: rules, contacts, bureau subscriptions and the audit."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Platform, wait_for

pytestmark = pytest.mark.e2e

COMMUNITY = "hx-qingyuan"
NOTIFY = "/api/v1/notify"


@dataclass
class Receiver:
    """A bureau's endpoint: answers with a scripted list of statuses, then 200."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                state.received.append({"headers": dict(self.headers), "body": body})
                status = state.script.pop(0) if state.script else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/events"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def verify(secret: str, headers: dict[str, str], body: bytes, window: int = 300) -> bool:
    """The bureau's check, from docs/notify.md: fresh timestamp, matching HMAC."""
    timestamp = headers["X-Shequ-Timestamp"]
    if abs(time.time() - int(timestamp)) > window:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Shequ-Signature"], f"sha256={mac}")


def report(platform: Platform, cell: str = "qy-01") -> str:
    session = platform.session("grid_worker", sub="gw-notify", communities=(COMMUNITY,))
    response = session.post(
        f"{platform.url}/api/v1/grid/incidents",
        json={"category": "facility_damaged", "grid_cell": cell, "description": "路灯不亮"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def subscribe(platform: Platform, url: str, sub: str) -> dict[str, Any]:
    bureau = platform.session("bureau", sub=sub, scopes=["notify.subscriptions"])
    response = bureau.post(
        f"{platform.url}{NOTIFY}/subscriptions",
        json={"url": url, "event_types": ["shequ.grid.incident.reported"]},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def mine(receiver: Receiver, incident_id: str) -> list[dict[str, Any]]:
    return [r for r in receiver.received if json.loads(r["body"])["subject"] == incident_id]


def test_a_report_is_sent_to_the_reporter_found_through_grid_and_audited(
    platform: Platform,
) -> None:
    incident_id = report(platform)
    staff = platform.session("community_staff", communities=(COMMUNITY,))
    url = f"{platform.url}{NOTIFY}/notifications"

    def sent() -> list[dict[str, Any]] | None:
        items = staff.get(url, params={"subject_ref": incident_id}, timeout=10).json()["items"]
        return items if len(items) == 2 and all(n["status"] == "sent" for n in items) else None

    notes = wait_for(sent, what="both notifications sent")
    reporter = next(n for n in notes if n["audience"] == "reporter")
    assert reporter["text"].startswith(f"您反映的事项 {incident_id} 已收到")
    assert reporter["channel"] == "log"
    attempts = staff.get(
        f"{platform.url}{NOTIFY}/attempts", params={"event_id": reporter["event_id"]}, timeout=10
    ).json()["items"]
    # Grid answered who reported it (over RPC); only the subject id is kept.
    assert {(a["recipient"], a["outcome"]) for a in attempts} == {
        ("gw-notify", "sent"),
        ("grid_worker:qy-01", "sent"),
    }
    by_recipient = staff.get(
        f"{platform.url}{NOTIFY}/attempts", params={"recipient": "gw-notify"}, timeout=10
    ).json()["items"]
    assert reporter["id"] in {a["delivery_id"] for a in by_recipient}
    text = requests.get(f"{platform.stack.processes['notify'].url}/metrics", timeout=10).text
    sent_total = [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == "shequ_notifications"
        for sample in family.samples
        if sample.labels == {"channel": "log", "outcome": "sent"}
    ]
    assert sent_total and sent_total[0].value >= 2


def test_a_bureau_gets_each_event_signed_and_retried_until_its_endpoint_recovers(
    platform: Platform, receiver: Receiver
) -> None:
    receiver.script = [503, 500]
    created = subscribe(platform, receiver.url, "bureau-water")
    assert created["secret"] and created["status"] == "active"
    incident_id = report(platform)

    got = wait_for(lambda: len(mine(receiver, incident_id)) >= 3 and mine(receiver, incident_id),
                   what="two failures then a delivery")  # fmt: skip
    last = got[-1]
    assert verify(created["secret"], last["headers"], last["body"])
    assert not verify("whsec_wrong", last["headers"], last["body"])
    event = json.loads(last["body"])
    assert event["type"] == "shequ.grid.incident.reported"
    assert event["data"]["incident_id"] == incident_id
    assert "gw-notify" not in last["body"].decode()

    bureau = platform.session("bureau", sub="bureau-water", scopes=["notify.subscriptions"])
    log_url = f"{platform.url}{NOTIFY}/subscriptions/{created['id']}/deliveries"
    delivered = wait_for(
        lambda: [
            d
            for d in bureau.get(log_url, timeout=10).json()["items"]
            if d["subject_ref"] == incident_id and d["status"] == "sent"
        ],
        what="the delivery log to show it sent",
    )
    assert delivered[0]["attempts"] == 3
    other = platform.session("bureau", sub="bureau-other", scopes=["notify.subscriptions"])
    assert other.get(log_url, timeout=10).status_code == 404


def test_an_endpoint_that_never_recovers_ends_dead_and_visible(
    platform: Platform, receiver: Receiver
) -> None:
    receiver.script = [500] * 1000
    created = subscribe(platform, receiver.url, "bureau-dead")
    incident_id = report(platform)
    bureau = platform.session("bureau", sub="bureau-dead", scopes=["notify.subscriptions"])
    log_url = f"{platform.url}{NOTIFY}/subscriptions/{created['id']}/deliveries"
    dead = wait_for(
        lambda: bureau.get(log_url, params={"status": "dead"}, timeout=10).json()["items"],
        what="the delivery to be dead after the (short, test) retry horizon",
    )
    assert dead[0]["subject_ref"] == incident_id
    assert dead[0]["last_error"] == "HTTP 500 from the endpoint"
    admin = platform.session("admin")
    listed = admin.get(
        f"{platform.url}{NOTIFY}/deliveries", params={"status": "dead", "kind": "subscription"},
        timeout=10,
    ).json()["items"]  # fmt: skip
    assert dead[0]["id"] in {d["id"] for d in listed}


def test_a_paused_subscription_receives_nothing_until_resumed_and_a_rotated_secret_signs(
    platform: Platform, receiver: Receiver
) -> None:
    created = subscribe(platform, receiver.url, "bureau-pause")
    bureau = platform.session("bureau", sub="bureau-pause", scopes=["notify.subscriptions"])
    base = f"{platform.url}{NOTIFY}/subscriptions/{created['id']}"
    assert bureau.post(f"{base}/pause", timeout=10).json()["status"] == "paused"
    incident_id = report(platform)
    wait_for(
        lambda: [
            d
            for d in bureau.get(f"{base}/deliveries", timeout=10).json()["items"]
            if d["subject_ref"] == incident_id and d["status"] == "paused"
        ],
        what="the delivery parked while paused",
    )
    assert mine(receiver, incident_id) == []
    rotated = bureau.post(f"{base}/rotate-secret", timeout=10).json()
    assert rotated["secret"] != created["secret"]
    assert bureau.post(f"{base}/resume", timeout=10).json()["status"] == "active"
    (got,) = wait_for(lambda: mine(receiver, incident_id), what="the delivery after resuming")
    assert verify(rotated["secret"], got["headers"], got["body"])
    assert not verify(created["secret"], got["headers"], got["body"])


def test_an_admin_rule_with_a_new_template_changes_what_is_sent(platform: Platform) -> None:
    """Counts from the next event, though notify keeps its rules in memory
    (``routing.py``; the tests' platform lets them age for an hour)."""
    admin = platform.session("admin")
    staff = platform.session("community_staff")
    url = f"{platform.url}{NOTIFY}/notifications"
    before = report(platform, cell="qy-03")
    wait_for(
        lambda: staff.get(url, params={"subject_ref": before}, timeout=10).json()["items"],
        what="notify handling a report under the old rules",
    )
    put = admin.put(
        f"{platform.url}{NOTIFY}/templates/e2e.cell_alert",
        json={"body": {"zh-CN": "E2E {{ grid_cell }} {{ incident_id }}"}},
        timeout=10,
    )
    assert put.status_code == 200, put.text
    rule = admin.put(
        f"{platform.url}{NOTIFY}/rules/e2e-cell",
        json={
            "event_type": "shequ.grid.incident.reported",
            "audiences": ["staff"],
            "template": "e2e.cell_alert",
            "urgency": "immediate",
        },
        timeout=10,
    )
    assert rule.status_code == 200, rule.text
    try:
        incident_id = report(platform, cell="qy-03")
        found = wait_for(
            lambda: [
                n
                for n in staff.get(url, params={"subject_ref": incident_id}, timeout=10).json()[
                    "items"
                ]
                if n["rule"] == "e2e-cell" and n["status"] == "sent"
            ],
            what="the new rule's notification",
        )
        assert found[0]["recipient"] == f"staff:{COMMUNITY}"
        assert found[0]["text"] == f"E2E qy-03 {incident_id}"
    finally:
        admin.delete(f"{platform.url}{NOTIFY}/rules/e2e-cell", timeout=10)


def problem(response: requests.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    return dict(response.json())


def test_bad_rules_and_templates_are_refused_with_per_field_errors(platform: Platform) -> None:
    admin = platform.session("admin")
    rules = f"{platform.url}{NOTIFY}/rules"
    errors = problem(
        admin.put(
            f"{rules}/bad",
            json={
                "event_type": "shequ.grid.incident.reported",
                "audiences": ["department"],
                "template": "no.such.template",
            },
            timeout=10,
        )
    )["errors"]
    assert set(errors) == {"audiences", "template"}
    assert "department" in errors["audiences"][0]

    errors = problem(
        admin.put(
            f"{rules}/bad",
            json={"event_type": "shequ.nobody.thing.done", "audiences": ["staff"], "template": "x"},
            timeout=10,
        )
    )["errors"]
    assert set(errors) == {"event_type", "template"}
    errors = problem(
        admin.put(
            f"{rules}/bad",
            json={"event_type": "shequ.grid.incident.reported", "audiences": ["mayor"],
                  "template": "incident.acknowledged", "urgency": "whenever"},
            timeout=10,
        )
    )["errors"]  # fmt: skip
    assert set(errors) == {"audiences", "urgency"}
    assert admin.get(f"{rules}", timeout=10).json()["items"]
    assert "bad" not in {r["id"] for r in admin.get(rules, timeout=10).json()["items"]}

    # A template used by the seeded incident.reported rule may not name a field
    # that event lacks; nothing is stored.
    templates = f"{platform.url}{NOTIFY}/templates"
    errors = problem(
        admin.put(
            f"{templates}/incident.acknowledged",
            json={"body": {"zh-CN": "{{ incident_id }}", "en": "{{ department }}"}},
            timeout=10,
        )
    )["errors"]
    assert list(errors["body"]) == ["en"] and "department" in errors["body"]["en"][0]
    errors = problem(
        admin.put(f"{templates}/t.syntax", json={"body": {"zh-CN": "{% if %}"}}, timeout=10)
    )["errors"]
    assert errors["body"]["zh-CN"][0].startswith("line 1:")
    stored = admin.get(templates, timeout=10).json()["items"]
    ack = next(t for t in stored if t["id"] == "incident.acknowledged")
    assert "{{ department }}" not in ack["body"]["en"]
    assert "t.syntax" not in {t["id"] for t in stored}
    staff = platform.session("community_staff")
    assert problem(staff.put(f"{rules}/x", json={}, timeout=10), 403)


def test_bad_subscriptions_and_contacts_are_refused(platform: Platform) -> None:
    bureau = platform.session("bureau", sub="bureau-bad", scopes=["notify.subscriptions"])
    errors = problem(
        bureau.post(
            f"{platform.url}{NOTIFY}/subscriptions",
            json={"url": "http://bureau.example/hook", "event_types": ["shequ.grid.nothing"]},
            timeout=10,
        )
    )["errors"]
    assert errors["url"] == ["http is allowed only to a loopback host; use https"]
    assert "0" in errors["event_types"]
    resident = platform.session("resident", sub="resident-42")
    contacts = f"{platform.url}{NOTIFY}/contacts"
    errors = problem(
        resident.put(
            f"{contacts}/resident-42",
            json={
                "channels": [
                    {"kind": "pigeon", "address": "x"},
                    {"kind": "email", "address": "no"},
                ],
                "quiet_hours": {"start": "25:00", "end": "07:00"},
            },
            timeout=10,
        )
    )["errors"]
    assert set(errors) == {"quiet_hours"}
    errors = problem(
        resident.put(
            f"{contacts}/resident-42",
            json={
                "channels": [
                    {"kind": "pigeon", "address": "x"},
                    {"kind": "email", "address": "no"},
                    {"kind": "webhook", "address": "http://bureau.example/h"},
                ]
            },
            timeout=10,
        )
    )["errors"]
    assert set(errors["channels"]) == {"0", "1", "2"}
    assert "kind" in errors["channels"]["0"] and "address" in errors["channels"]["2"]
    assert resident.get(f"{contacts}/resident-42", timeout=10).status_code == 404
    ok = resident.put(
        f"{contacts}/resident-42",
        json={"channels": [{"kind": "email", "address": "r42@example.org"}], "digest": True},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    assert resident.get(f"{contacts}/resident-42", timeout=10).json()["digest"] is True
    assert problem(resident.get(f"{contacts}/resident-43", timeout=10), 403)


def test_the_audit_pages_with_cursors_bound_to_their_filters(platform: Platform) -> None:
    report(platform)
    staff = platform.session("community_staff")
    url = f"{platform.url}{NOTIFY}/deliveries"
    wait_for(
        lambda: len(staff.get(url, params={"status": "sent"}, timeout=10).json()["items"]) >= 2,
        what="two sent deliveries",
    )
    first = staff.get(url, params={"status": "sent", "limit": 1}, timeout=10).json()
    assert first["next_cursor"]
    second = staff.get(
        url, params={"status": "sent", "limit": 1, "cursor": first["next_cursor"]}, timeout=10
    ).json()
    assert second["items"][0]["id"] != first["items"][0]["id"]
    assert second["items"][0]["created_at"] <= first["items"][0]["created_at"]
    other = staff.get(
        url, params={"status": "dead", "limit": 1, "cursor": first["next_cursor"]}, timeout=10
    )
    assert problem(other)["errors"]["cursor"]
