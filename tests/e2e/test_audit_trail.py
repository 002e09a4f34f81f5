"""The audit trail on the running platform: one record per change, queried by the auditor.

The changing routes come from the grid's OpenAPI document (every operation
that is not a GET and names an action); each has a recipe here that makes it
succeed, and the test fails when a new one appears without its recipe. The
volunteer service's routes are checked against its store in
tests/integration/test_volunteer_store.py instead: on the session platform its
dispatch offers tasks to the seed's volunteers, so a recipe per route would
race the offer timer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.conftest import Platform, wait_for
from tests.e2e.test_mediation import (
    APPLICANT,
    assign,
    new_community,
    roster_of_two,
    walk_in,
)
from tests.e2e.test_mediation import mediator as mediator_session
from tests.e2e.test_mediation import staff as mediation_staff
from tests.e2e.test_mediation import step as mediation_step

pytestmark = pytest.mark.e2e

AUDITED = ("grid", "disclosure", "mediation", "notify")
SAME = "hx-liushu"
API = "/api/v1/grid"
REPORTER = f"mx-audit-{uuid.uuid4().hex[:8]}"


def staff(platform: Platform) -> requests.Session:
    return platform.session("community_staff", sub="mx-audit-staff", communities=(SAME,))


def ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


def report(platform: Platform) -> dict[str, Any]:
    body = {"category": "facility_damaged", "grid_cell": "ls-01", "description": "路灯坏了",
            "location": {"lat": 39.9, "lon": 116.4}}  # fmt: skip
    session = platform.session("resident", sub=REPORTER)
    return ok(session.post(f"{platform.url}{API}/incidents", json=body, timeout=10), 201)


def step(
    platform: Platform, session: requests.Session, incident: dict[str, Any], **body: Any
) -> dict[str, Any]:
    url = f"{platform.url}{API}/incidents/{incident['id']}/transitions"
    return ok(session.post(url, json={**body, "expected_version": incident["version"]}, timeout=10))


def closed(platform: Platform) -> dict[str, Any]:
    department = platform.session("department", sub="mx-audit-dept", department="municipal")
    incident = step(platform, staff(platform), report(platform), action="accept")
    incident = step(platform, staff(platform), incident, action="dispatch", department="municipal")
    incident = step(platform, department, incident, action="start")
    incident = step(platform, department, incident, action="report_handled", feedback="修好了")
    return step(platform, staff(platform), incident, action="check", outcome="resolved")


def records(
    platform: Platform, service: str, kind: str, object_id: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    auditor = platform.session("auditor", sub="mx-audit-auditor")
    params = {"object_kind": kind, "object_id": object_id, "limit": 1000}
    if since is not None:
        params["from"] = since.isoformat()
    url = f"{platform.url}/api/v1/{service}/audit"
    return list(ok(auditor.get(url, params=params, timeout=10))["items"])


@dataclass(frozen=True)
class Change:
    """What a recipe changed: the object's kind and id, and who changed it."""

    kind: str
    object_id: str
    actor: str
    created: bool
    deleted: bool = False


# (service, operationId): prepare (returns what change needs), change (changes one object once).
Recipe = tuple[Callable[[Platform], Any], Callable[[Platform, Any], Change]]


def _report(platform: Platform, _: Any) -> Change:
    return Change("incident", report(platform)["id"], REPORTER, created=True)


def _transition(platform: Platform, incident: dict[str, Any]) -> Change:
    step(platform, staff(platform), incident, action="accept")
    return Change("incident", incident["id"], "mx-audit-staff", created=False)


def _rate(platform: Platform, incident: dict[str, Any]) -> Change:
    url = f"{platform.url}{API}/incidents/{incident['id']}/rating"
    body = {"score": 5, "expected_version": incident["version"]}
    ok(platform.session("resident", sub=REPORTER).post(url, json=body, timeout=10), 201)
    return Change("incident", incident["id"], REPORTER, created=False)


def _department(platform: Platform) -> str:
    key = f"mx-audit-{uuid.uuid4().hex[:6]}"
    body = {"id": key, "name_zh": "审计测试科", "name_en": "Audit test"}
    admin = platform.session("admin", sub="mx-audit-admin")
    ok(admin.post(f"{platform.url}{API}/registry/departments", json=body, timeout=10), 201)
    return key


def _create_entry(platform: Platform, _: Any) -> Change:
    return Change("registry.departments", _department(platform), "mx-audit-admin", created=True)


def _change_entry(platform: Platform, key: str) -> Change:
    admin = platform.session("admin", sub="mx-audit-admin")
    url = f"{platform.url}{API}/registry/departments/{key}"
    ok(admin.patch(url, json={"name_en": "Audit test, renamed"}, timeout=10))
    return Change("registry.departments", key, "mx-audit-admin", created=False)


def _publish(platform: Platform, _: Any = None) -> Change:
    body = {"kind": "notice", "cadence": "ad_hoc", "community": SAME, "period": "2026-11",
            "title": "审计测试通知"}  # fmt: skip
    url = f"{platform.url}/api/v1/disclosure/entries"
    entry = ok(staff(platform).post(url, json=body, timeout=10), 201)
    return Change("entry", str(entry["index"]), "mx-audit-staff", created=True)


def _sign(platform: Platform, _: Any) -> Change:
    url = f"{platform.url}/api/v1/disclosure/checkpoints"
    checkpoint = ok(staff(platform).post(url, timeout=10), 201)
    return Change("checkpoint", str(checkpoint["size"]), "mx-audit-staff", created=True)


def _figures(platform: Platform, _: Any) -> Change:
    community = f"mx-audit-{uuid.uuid4().hex[:6]}"
    session = platform.session("community_staff", sub="mx-audit-staff", communities=(community,))
    body = {"community": community, "month": "2026-01"}
    result = ok(session.post(f"{platform.url}/api/v1/disclosure/figures", json=body, timeout=10))
    (entry,) = result["published"]
    return Change("entry", str(entry["index"]), "mx-audit-staff", created=True)


MEDIATION = "/api/v1/mediation"
NOTIFY = "/api/v1/notify"


def _walk_in(platform: Platform, _: Any = None) -> Change:
    community = new_community()
    case = walk_in(platform, community)
    return Change("case", case["id"], f"staff-{community}", created=True)


def _open_case(platform: Platform) -> tuple[dict[str, Any], str]:
    community = new_community()
    return walk_in(platform, community), community


def _add_parties(platform: Platform, opened: tuple[dict[str, Any], str]) -> Change:
    case, community = opened
    third = {**APPLICANT, "role": "third_party", "name": "王芳"}
    third.pop("id_number")
    body = {"parties": [third], "facts": None, "expected_version": case["version"]}
    url = f"{platform.url}{MEDIATION}/cases/{case['id']}/parties"
    ok(mediation_staff(platform, community).post(url, json=body, timeout=10))
    return Change("case", case["id"], f"staff-{community}", created=False)


def _rostered_case(platform: Platform) -> tuple[dict[str, Any], str]:
    community = new_community()
    roster_of_two(platform, community)
    return walk_in(platform, community), community


def _assign(platform: Platform, opened: tuple[dict[str, Any], str]) -> Change:
    case, community = opened
    ok(assign(platform, case, community))
    return Change("case", case["id"], f"staff-{community}", created=False)


def _assigned_case(platform: Platform) -> tuple[dict[str, Any], str]:
    case, community = _rostered_case(platform)
    return ok(assign(platform, case, community)), community


def _schedule(platform: Platform, assigned: tuple[dict[str, Any], str]) -> Change:
    case, community = assigned
    me = mediator_session(platform, case["mediator_id"], community)
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    ok(mediation_step(me, platform, case, "schedule_session", session_at=at, place="调解室"))
    return Change("case", case["id"], case["mediator_id"], created=False)


def _put_mediator(platform: Platform, _: Any) -> Change:
    key = f"mx-audit-{uuid.uuid4().hex[:6]}"
    body = {"name": "审计调解员", "community": new_community(), "expertise": ["neighbour_dispute"]}
    url = f"{platform.url}{MEDIATION}/mediators/{key}"
    ok(platform.session("admin", sub="mx-audit-admin").put(url, json=body, timeout=10))
    return Change("mediator", key, "mx-audit-admin", created=True)


def admin(platform: Platform) -> requests.Session:
    return platform.session("admin", sub="mx-audit-admin")


def _put_template(platform: Platform, _: Any = None) -> Change:
    key = f"mx-audit.{uuid.uuid4().hex[:6]}"
    body = {"body": {"zh-CN": "审计 {{ incident_id }}"}}
    ok(admin(platform).put(f"{platform.url}{NOTIFY}/templates/{key}", json=body, timeout=10))
    return Change("template", key, "mx-audit-admin", created=True)


def _put_rule(platform: Platform, _: Any = None) -> Change:
    template = _put_template(platform).object_id
    key = f"mx-audit-{uuid.uuid4().hex[:6]}"
    # Disabled: the rule must not notify anyone while other tests report incidents.
    body = {"event_type": "shequ.grid.incident.reported", "audiences": ["staff"],
            "template": template, "enabled": False}  # fmt: skip
    ok(admin(platform).put(f"{platform.url}{NOTIFY}/rules/{key}", json=body, timeout=10))
    return Change("rule", key, "mx-audit-admin", created=True)


def _delete_rule(platform: Platform, rule: Change) -> Change:
    url = f"{platform.url}{NOTIFY}/rules/{rule.object_id}"
    ok(admin(platform).delete(url, timeout=10))
    return Change("rule", rule.object_id, "mx-audit-admin", created=False, deleted=True)


def _put_contact(platform: Platform, _: Any = None) -> Change:
    recipient = f"mx-audit-{uuid.uuid4().hex[:6]}"
    body = {"channels": [{"kind": "email", "address": f"{recipient}@example.org"}]}
    url = f"{platform.url}{NOTIFY}/contacts/{recipient}"
    ok(admin(platform).put(url, json=body, timeout=10))
    return Change("contact", recipient, "mx-audit-admin", created=True)


def _delete_contact(platform: Platform, contact: Change) -> Change:
    url = f"{platform.url}{NOTIFY}/contacts/{contact.object_id}"
    ok(admin(platform).delete(url, timeout=10))
    return Change("contact", contact.object_id, "mx-audit-admin", created=False, deleted=True)


BUREAU = "mx-audit-bureau"


def bureau(platform: Platform) -> requests.Session:
    return platform.session("bureau", sub=BUREAU, scopes=["notify.subscriptions"])


def _subscribe(platform: Platform, _: Any = None) -> Change:
    # Nothing listens on port 9 of the loopback: a delivery there never succeeds.
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["shequ.grid.incident.reported"]}
    created = ok(bureau(platform).post(f"{platform.url}{NOTIFY}/subscriptions", json=body,
                                       timeout=10), 201)  # fmt: skip
    return Change("subscription", created["id"], BUREAU, created=True)


def _paused(platform: Platform) -> Change:
    subscription = _subscribe(platform)
    url = f"{platform.url}{NOTIFY}/subscriptions/{subscription.object_id}/pause"
    ok(bureau(platform).post(url, timeout=10))
    return subscription


def _subscription_step(path: str, *, method: str = "post") -> Callable[[Platform, Change], Change]:
    def change(platform: Platform, subscription: Change) -> Change:
        url = f"{platform.url}{NOTIFY}/subscriptions/{subscription.object_id}{path}"
        ok(getattr(bureau(platform), method)(url, timeout=10))
        return Change("subscription", subscription.object_id, BUREAU, created=False)

    return change


def _dead_delivery(platform: Platform) -> str:
    """A delivery of a paused subscription, dead once the subscription is deleted."""
    subscription = _paused(platform)
    base = f"{platform.url}{NOTIFY}/subscriptions/{subscription.object_id}"
    report(platform)
    (delivery, *_) = wait_for(
        lambda: ok(bureau(platform).get(f"{base}/deliveries", timeout=10))["items"],
        what="a delivery for the paused subscription",
    )
    ok(bureau(platform).delete(base, timeout=10))
    return str(delivery["id"])


def _retry(platform: Platform, delivery_id: str) -> Change:
    url = f"{platform.url}{NOTIFY}/deliveries/{delivery_id}/retry"
    ok(admin(platform).post(url, timeout=10))
    return Change("delivery", delivery_id, "mx-audit-admin", created=False)


RECIPES: dict[tuple[str, str], Recipe] = {
    ("grid", "report_incident"): (lambda platform: None, _report),
    ("grid", "transition"): (report, _transition),
    ("grid", "rate_incident"): (closed, _rate),
    ("grid", "create_registry_entry"): (lambda platform: None, _create_entry),
    ("grid", "change_registry_entry"): (_department, _change_entry),
    ("disclosure", "publish_entry"): (lambda platform: None, _publish),
    ("disclosure", "sign_checkpoint_now"): (_publish, _sign),
    ("disclosure", "publish_figures"): (lambda platform: None, _figures),
    ("mediation", "open_case"): (lambda platform: None, _walk_in),
    ("mediation", "add_parties"): (_open_case, _add_parties),
    ("mediation", "assign"): (_rostered_case, _assign),
    ("mediation", "transition"): (_assigned_case, _schedule),
    ("mediation", "put_mediator"): (lambda platform: None, _put_mediator),
    ("notify", "put_rule"): (lambda platform: None, _put_rule),
    ("notify", "delete_rule"): (_put_rule, _delete_rule),
    ("notify", "put_template"): (lambda platform: None, _put_template),
    ("notify", "put_contact"): (lambda platform: None, _put_contact),
    ("notify", "delete_contact"): (_put_contact, _delete_contact),
    ("notify", "create_subscription"): (lambda platform: None, _subscribe),
    ("notify", "pause_subscription"): (_subscribe, _subscription_step("/pause")),
    ("notify", "resume_subscription"): (_paused, _subscription_step("/resume")),
    ("notify", "delete_subscription"): (_subscribe, _subscription_step("", method="delete")),
    ("notify", "rotate_secret"): (_subscribe, _subscription_step("/rotate-secret")),
    ("notify", "retry_delivery"): (_dead_delivery, _retry),
}


def changing_operations(platform: Platform, service: str) -> dict[str, str]:
    """operationId: action, for every operation of ``service`` that changes something."""
    spec = ok(requests.get(f"{platform.url}/api/v1/{service}/openapi.json", timeout=10))
    return {
        operation["operationId"]: operation["x-shequ-action"]
        for items in spec["paths"].values()
        for method, operation in items.items()
        if method != "get" and "x-shequ-action" in operation
    }


def test_every_changing_route_of_an_audited_service_has_a_recipe(platform: Platform) -> None:
    found = {
        (service, operation)
        for service in AUDITED
        for operation in changing_operations(platform, service)
    }
    assert found == set(RECIPES)


@pytest.mark.parametrize(("service", "operation"), sorted(RECIPES))
def test_each_changing_route_writes_exactly_one_record(
    platform: Platform, service: str, operation: str
) -> None:
    action = changing_operations(platform, service)[operation]
    prepare, change = RECIPES[(service, operation)]
    prepared = prepare(platform)
    since = datetime.now(UTC)
    done = change(platform, prepared)
    try:
        # A caller's changes only: a worker may change the object next under its own
        # actor (notify's worker finishes a requeued delivery), and a route that
        # answers with sensitive data also records that read (no before, no after).
        found = [
            r
            for r in records(platform, service, done.kind, done.object_id, since)
            if "sub" in r["actor"] and (r["before"] or r["after"])
        ]
        assert len(found) == 1, found
        (record,) = found
        assert record["action"] == action
        assert record["actor"]["sub"] == done.actor
        assert record["object"] == {"kind": done.kind, "id": done.object_id}
        assert (record["after"] is None) == done.deleted
        assert record["after"] is None or len(record["after"]) == 64
        assert (record["before"] is None) == done.created
    finally:
        if done.kind == "subscription" and operation != "delete_subscription":
            # Left active, it would take every later report on the shared
            # platform and fail to deliver it, in other tests' view of their events.
            bureau(platform).delete(f"{platform.url}{NOTIFY}/subscriptions/{done.object_id}",
                                    timeout=10)  # fmt: skip


def test_the_trail_is_for_auditors_and_admins_and_holds_no_personal_data(
    platform: Platform,
) -> None:
    incident = report(platform)
    for role in ("resident", "community_staff", "grid_worker"):
        response = platform.session(role, sub=REPORTER, communities=(SAME,)).get(
            f"{platform.url}{API}/audit", timeout=10
        )
        assert response.status_code == 403, role
    found = records(platform, "grid", "incident", incident["id"])
    assert found and "路灯" not in str(found) and "39.9" not in str(found)


def test_a_read_of_sensitive_data_leaves_a_record_with_the_purpose(platform: Platform) -> None:
    body = {"category": "new_pregnancy", "grid_cell": "ls-01", "description": "孕检登记",
            "location": {"lat": 39.9, "lon": 116.4}}  # fmt: skip
    resident = platform.session("resident", sub=REPORTER)
    incident = ok(resident.post(f"{platform.url}{API}/incidents", json=body, timeout=10), 201)
    url = f"{platform.url}{API}/incidents/{incident['id']}"
    since = datetime.now(UTC)
    without = platform.session("community_staff", sub="mx-audit-reader", communities=(SAME,))
    assert without.get(url, timeout=10).status_code == 404
    reader = platform.session(
        "community_staff", sub="mx-audit-reader", communities=(SAME,), purpose="casework"
    )
    assert ok(reader.get(url, timeout=10))["description"] == "孕检登记"
    found = records(platform, "grid", "incident", incident["id"], since)
    assert [(r["action"], r["actor"]) for r in found] == [
        (
            "grid.incident.read_sensitive",
            {"sub": "mx-audit-reader", "roles": ["community_staff"], "purpose": "casework"},
        )
    ]
    assert found[0]["before"] is None and found[0]["after"] is None
