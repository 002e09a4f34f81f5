"""Plant and grep: personal data sent through every API that takes it leaks nowhere.

One run plants values that cannot occur by chance (a made-up name, a mobile
number, a valid resident ID number, an address, an e-mail address, Open311's
device and account ids) through every route of the platform that accepts
personal data, drives the flows so the events fan out to every consumer, and
then searches, for each value and its digits:

* every service's log file (the stack's ``logs/`` directory), also for the
  values as JSON escapes and URL-encoded, as a log line might quote them;
* every event in every service's outbox (all of them, whatever the run);
* the disclosure log: every document of its database, and its public
  answers (the entries listing, each entry, its proof, the board's pages,
  entries JSON and Atom feed);
* every service's ``/metrics``;
* notify's deliveries and attempts about the planted reports (what it
  rendered and sent, and each attempt's error).

and, at rest, the three services that seal personal data (mediation's cases,
volunteer's registry, notify's contacts): their raw documents, read through
pymongo, contain none of the values.

The routes that accept personal data, derived from the services' request
schemas (free text counts: a resident writes their neighbour's name into a
description), and what this test sends through each:

grid
  * ``POST /api/v1/grid/incidents``: ``description`` (free text); the
    reporter is the token's subject. Planted.
  * ``POST .../incidents/{id}/transitions``: ``reason``, ``feedback``,
    ``note`` (free text). Planted: ``feedback``, ``note`` of a start, and
    ``reason`` of a rejection.
  * ``POST .../incidents/{id}/rating``: ``comment``. Planted.
  * ``POST /open311/v2/requests.json``: ``first_name``, ``last_name``,
    ``phone``, ``email``, ``device_id``, ``account_id``, ``address_string``,
    ``description``. All planted.
  * ``POST /api/v1/grid/registry/grid-workers``: a grid worker's ``name``. Planted.
mediation
  * ``PUT /api/v1/mediation/mediators/{id}``: ``name``, ``relatives``. Planted.
  * ``POST /api/v1/mediation/cases``: parties (name, phone, ID number,
    address), ``facts``. Planted.
  * ``POST .../cases/{id}/parties``: the same, for parties added later. Planted.
  * ``POST .../cases/{id}/transitions``: ``place``, ``notes``, ``reason``,
    the agreement's texts. Planted: ``place``, ``notes``, an extension's
    ``reason``, the agreement (responsibilities included). Not planted:
    ``override_reason`` of an assignment against the roster's choice.
volunteer
  * ``POST /api/v1/volunteer/volunteers``, ``PATCH .../volunteers/{id}``:
    ``name``, ``phone``. Planted.
  * ``POST /api/v1/volunteer/hours/{id}/corrections``: ``reason`` (free
    text). Planted, on the hours of a task the planted volunteer served.
notify
  * ``PUT /api/v1/notify/contacts/{recipient}``: channel addresses (phone,
    e-mail). Planted, for the reporter, so their notifications try them.
disclosure
  * ``POST /api/v1/disclosure/entries``: free text, refused (422) when it
    holds personal data. Planted, and refused.

Routes not listed take ids, codes, times and numbers only (teams, households,
tasks and their answers, rules, templates, subscriptions, checkpoints,
figures, registry kinds other than grid workers).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from shequ.auth import mint_token
from shequ.cli import main
from shequ.outbox import unpublished_count
from tests.conftest import Platform, wait_for
from tests.support.personal_data import resident_id, traces

pytestmark = pytest.mark.e2e

GRID, MEDIATION, VOLUNTEER, NOTIFY, DISCLOSURE = (
    f"/api/v1/{s}" for s in ("grid", "mediation", "volunteer", "notify", "disclosure")
)
COMMUNITY = "hx-liushu"
#: Rarely used characters, so a planted name cannot be some other test's data.
RARE = "夔龑彧翯婠媞嫄鬯黉鼐昶暻烜焘曦珣琤璆瓒"


@dataclass(frozen=True)
class Planted:
    name: str
    other_name: str
    phone: str
    id_number: str
    address: str
    email: str
    device_id: str
    account_id: str

    def values(self) -> list[str]:
        return [
            self.name, self.other_name, self.phone, self.id_number, self.address, self.email,
            self.device_id, self.account_id,
        ]  # fmt: skip

    def needles(self) -> set[str]:
        """Every form a value could take in stored or logged text."""
        # Numbers also by their digits alone (a log may strip the +86 or the spaces);
        # the digits of an address or an id would match unrelated numbers.
        forms = [*traces(self.phone), *traces(self.id_number), *self.values()]
        return {
            form
            for value in forms
            for form in (value, json.dumps(value)[1:-1], quote(value), quote_plus(value))
        }


def plant() -> Planted:
    draw = random.Random(uuid.uuid4().int)
    born = date(1950, 1, 1) + timedelta(days=draw.randrange(20000))
    tag = uuid.uuid4().hex[:8]
    return Planted(
        name="欧阳" + "".join(draw.sample(RARE, 2)),
        other_name="司马" + "".join(draw.sample(RARE, 2)),
        phone="139" + "".join(draw.choices("0123456789", k=8)),
        id_number=resident_id("110105", born.strftime("%Y%m%d"), f"{draw.randrange(1000):03d}"),
        address="".join(draw.sample(RARE, 2)) + f"苑{draw.randrange(1, 40)}幢2单元{tag[:3]}室",
        email=f"pii.{tag}@example.cn",
        device_id=f"dev-{tag}",
        account_id=f"wx-{tag}",
    )


def ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


def department(platform: Platform, name: str = "municipal") -> requests.Session:
    session = requests.Session()
    token = mint_token(
        platform.stack.jwt_secret(), roles=["department"], sub=f"dept-{name}", department=name
    )
    session.headers["Authorization"] = f"Bearer {token}"
    return session


# -- planting, route by route --------------------------------------------------------------


def plant_in_grid(platform: Platform, p: Planted, resident: str) -> list[str]:
    """Two reports by the resident: one resolved and rated, one rejected; the ids."""
    reporter = platform.session("resident", sub=resident)
    staff = platform.session("community_staff", sub="staff-pii", communities=(COMMUNITY,))
    text = f"{p.name}家门口井盖松动，电话{p.phone}，住{p.address}"
    incidents = f"{platform.url}{GRID}/incidents"
    body = {"category": "facility_damaged", "grid_cell": "ls-01", "description": text}
    resolved = ok(reporter.post(incidents, json=body, timeout=10), 201)

    def step(session: requests.Session, incident: dict[str, Any], **fields: Any) -> Any:
        fields["expected_version"] = incident["version"]
        url = f"{incidents}/{incident['id']}/transitions"
        return ok(session.post(url, json=fields, timeout=10))

    resolved = step(staff, resolved, action="accept")
    resolved = step(staff, resolved, action="dispatch", department="municipal")
    resolved = step(
        department(platform), resolved, action="start", note=f"{p.name}不在家，{p.phone}"
    )
    resolved = step(
        department(platform), resolved, action="report_handled",
        feedback=f"已联系{p.name}（{p.phone}）更换井盖",
    )  # fmt: skip
    resolved = step(staff, resolved, action="check", outcome="resolved")
    rating = {
        "score": 5,
        "comment": f"我是{p.name}，{p.email}",
        "expected_version": resolved["version"],
    }
    ok(reporter.post(f"{incidents}/{resolved['id']}/rating", json=rating, timeout=10), 201)

    rejected = ok(reporter.post(incidents, json={**body, "description": f"{p.other_name}乱停车"},
                                timeout=10), 201)  # fmt: skip
    step(staff, rejected, action="reject", reason=f"{p.other_name}已搬走，身份证{p.id_number}")
    return [resolved["id"], rejected["id"]]


def plant_in_open311(platform: Platform, p: Planted, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHEQU_MONGO_URI", platform.servers.mongo_uri)
        patch.setenv("SHEQU_MONGO_DATABASE_PREFIX", platform.db_prefix)
        assert main(["apikey", "add", f"pii-{uuid.uuid4().hex[:6]}"]) == 0
    key = capsys.readouterr().out.strip()
    form = {
        "api_key": key,
        "service_code": "facility_damaged",
        "attribute[facility_type]": "manhole",
        "lat": "30.2721",
        "long": "120.1561",
        "address_string": p.address,
        "description": f"{p.name}说井盖坏了，回电{p.phone}",
        "email": p.email,
        "device_id": p.device_id,
        "account_id": p.account_id,
        "first_name": p.name[2:],
        "last_name": p.name[:2],
        "phone": p.phone,
    }
    response = requests.post(f"{platform.url}/open311/v2/requests.json", data=form, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()[0]["service_request_id"])


def plant_in_registry(platform: Platform, p: Planted) -> None:
    admin = platform.session("admin", sub="admin-pii")
    body = {"id": f"gw-pii-{uuid.uuid4().hex[:6]}", "name": p.other_name, "cells": ["ls-01"]}
    ok(admin.post(f"{platform.url}{GRID}/registry/grid-workers", json=body, timeout=10), 201)


def plant_in_mediation(platform: Platform, p: Planted) -> str:
    """A walk-in case with planted parties, a party added later, run to its close."""
    community = f"hx-p{uuid.uuid4().hex[:6]}"
    admin = platform.session("admin", sub="root")
    office = platform.session("community_staff", sub=f"staff-{community}", communities=(community,))
    url = f"{platform.url}{MEDIATION}"
    for suffix, name, building, relatives in (
        ("a", p.other_name, "ls-01-b02", [p.name]),
        ("b", "赵淑珍", "ls-02-b01", []),
    ):
        mediator = {"name": name, "community": community, "expertise": ["neighbour_dispute"],
                    "building": building, "relatives": relatives}  # fmt: skip
        ok(admin.put(f"{url}/mediators/{community}-{suffix}", json=mediator, timeout=10))
    applicant = {"role": "applicant", "name": p.name, "phone": p.phone, "id_number": p.id_number,
                 "address": p.address, "building": "ls-01-b02"}  # fmt: skip
    respondent = {"role": "respondent", "name": p.other_name, "phone": p.phone,
                  "address": p.address}  # fmt: skip
    opened = {"community": community, "dispute_type": "neighbour_dispute",
              "facts": f"{p.name}家漏水，{p.phone}", "parties": [applicant]}  # fmt: skip
    case = ok(office.post(f"{url}/cases", json=opened, timeout=10), 201)
    added = {"expected_version": case["version"], "parties": [respondent],
             "facts": f"{p.other_name}住{p.address}"}  # fmt: skip
    case = ok(office.post(f"{url}/cases/{case['id']}/parties", json=added, timeout=10))
    assign = {"expected_version": case["version"]}
    case = ok(office.post(f"{url}/cases/{case['id']}/assignment", json=assign, timeout=10))
    assert case["mediator_id"] == f"{community}-b", "the relative's and neighbour's recusal"
    me = platform.session("mediator", sub=case["mediator_id"], communities=(community,))

    def step(session: requests.Session, action: str, **body: Any) -> Any:
        body.update(action=action, expected_version=case["version"])
        return ok(session.post(f"{url}/cases/{case['id']}/transitions", json=body, timeout=10))

    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    case = step(me, "schedule_session", session_at=at, place=p.address)
    case = step(me, "record_session", session_id="S1", attendance=["P1", "P2"],
                notes=f"{p.name}情绪激动，{p.id_number}")  # fmt: skip
    case = step(office, "extend", days=15, reason=f"{p.other_name}出差，{p.phone}",
                parties_consent=True)  # fmt: skip
    today = datetime.now(UTC).date().isoformat()
    agreement = {
        "facts": f"{p.name}家漏水", "issues": f"{p.other_name}是否赔偿",
        "responsibilities": f"{p.other_name}负主要责任",
        "obligations": [{"party_id": "P2", "obligation": f"向{p.name}赔偿800元",
                         "manner": f"转账至{p.phone}", "due_on": "2026-12-31"}],
        "signatures": [{"party_id": x, "signed": True} for x in ("P1", "P2")],
        "mediator_signed": True, "signed_on": today,
    }  # fmt: skip
    case = step(me, "agree", agreement=agreement)
    case = step(office, "file_confirmation", court="hx-court", filed_on=today)
    case = step(office, "decide_confirmation", decision="confirmed")
    case = step(office, "close")
    return str(case["id"])


def plant_in_volunteer(platform: Platform, p: Planted) -> tuple[str, list[str]]:
    """A volunteer registered and renamed, who serves a task whose hours are corrected."""
    staff = platform.session("community_staff", sub="staff-pii", communities=(COMMUNITY,))
    url = f"{platform.url}{VOLUNTEER}"
    vid = f"v-pii-{uuid.uuid4().hex[:6]}"
    body = {"id": vid, "community": COMMUNITY, "name": p.other_name, "phone": "13700000000",
            "home_cell": "ls-01", "consent_to_contact": False}  # fmt: skip
    ok(staff.post(f"{url}/volunteers", json=body, timeout=10), 201)
    change = {"name": p.name, "phone": p.phone}
    ok(staff.patch(f"{url}/volunteers/{vid}", json=change, timeout=10))

    task = {"kind": "assist", "community": COMMUNITY, "grid_cell": "ls-01"}
    task_id = ok(staff.post(f"{url}/tasks", json=task, timeout=10), 201)["id"]
    ok(staff.post(f"{url}/tasks/{task_id}/assign", json={"volunteer_id": vid}, timeout=10))
    me = platform.session("volunteer", sub=vid, communities=(COMMUNITY,))
    ok(me.post(f"{url}/tasks/{task_id}/check-in", timeout=10))
    entry = ok(me.post(f"{url}/tasks/{task_id}/check-out", timeout=10))["entry"]
    ok(staff.post(f"{url}/hours/{entry['id']}/approval", timeout=10))
    fix = {"minutes_delta": 30, "reason": f"{p.name}补记，电话{p.phone}"}
    corrected = ok(staff.post(f"{url}/hours/{entry['id']}/corrections", json=fix, timeout=10), 201)
    ok(staff.post(f"{url}/hours/{corrected['id']}/approval", timeout=10))
    return vid, [entry["id"], corrected["id"]]


def plant_in_notify(platform: Platform, p: Planted, resident: str) -> None:
    me = platform.session("resident", sub=resident)
    body = {
        "channels": [{"kind": "sms", "address": p.phone}, {"kind": "email", "address": p.email}]
    }
    ok(me.put(f"{platform.url}{NOTIFY}/contacts/{resident}", json=body, timeout=10))


def plant_in_disclosure(platform: Platform, p: Planted) -> None:
    staff = platform.session("community_staff", communities=(COMMUNITY,))
    body = {
        "kind": "notice", "cadence": "ad_hoc", "community": COMMUNITY, "period": "2026-11",
        "title": f"{p.name}的通知",
        "body": {"text": f"联系{p.phone}，{p.email}，{p.id_number}，{p.address}"},
        "parties": [p.name],
    }  # fmt: skip
    size = platform.db("disclosure")["entries"].count_documents({})
    refused = staff.post(f"{platform.url}{DISCLOSURE}/entries", json=body, timeout=10)
    assert refused.status_code == 422, refused.text
    assert platform.db("disclosure")["entries"].count_documents({}) == size


# -- waiting for the fan-out ----------------------------------------------------------------


def settled(platform: Platform, incidents: list[str], case_id: str, entries: list[str]) -> bool:
    """Our events are handled: disclosure's and grid's marks, notify's deliveries done.

    ``incidents`` is the resolved and rated report (three events disclosure
    handles), the rejected one (two) and the Open311 one (one); ``entries``
    the volunteer's approved hours and their approved correction (one each).
    """
    marks = platform.db("disclosure")["processed_events"]
    if marks.count_documents({"subject": {"$in": entries}}) < len(entries):
        return False
    wanted = zip(incidents, (3, 2, 1), strict=True)
    if any(marks.count_documents({"subject": i}) < n for i, n in wanted):
        return False
    if not marks.count_documents({"subject": case_id}):
        return False
    if not platform.db("grid")["processed_events"].count_documents({"subject": case_id}):
        return False
    about = list(platform.db("notify")["deliveries"].find({"subject_ref": {"$in": incidents}}))
    return bool(about) and all(d["status"] != "pending" for d in about)


def all_outboxes_relayed(platform: Platform) -> bool:
    return all(unpublished_count(platform.db(s)) == 0 for s in platform.stack.processes)


# -- searching ------------------------------------------------------------------------------


def texts(platform: Platform, incidents: list[str]) -> Iterator[tuple[str, str]]:
    """(where, text) for every place personal data must not reach."""
    logs = platform.stack.data_dir / "logs"
    for path in sorted(logs.glob("*.log")):
        yield f"log {path.name}", path.read_bytes().decode("utf-8", errors="replace")
    for service in platform.stack.processes:
        for event in platform.db(service)["outbox"].find():
            yield f"{service} outbox {event['_id']}", dump(event)
    disclosure = platform.db("disclosure")
    for collection in disclosure.list_collection_names():
        for document in disclosure[collection].find():
            yield f"disclosure {collection} {document['_id']}", dump(document)
    base = f"{platform.url}{DISCLOSURE}"
    listing = requests.get(f"{base}/entries", params={"limit": 1000, "order": "desc"}, timeout=10)
    yield "GET entries", listing.text
    ours = [e for e in listing.json()["items"] if set(e["references"]) & set(incidents)]
    assert ours, "the incidents' disclosure entries"
    for entry in ours:
        for path in (f"/entries/{entry['index']}", f"/entries/{entry['index']}/proof"):
            yield f"GET {path}", requests.get(f"{base}{path}", timeout=10).text
        board = f"{platform.url}/board/entries/{entry['index']}"
        yield f"GET {board}", requests.get(board, timeout=10).text
    for path in ("/board/", "/board/entries.json", "/board/feed.atom"):
        page = requests.get(f"{platform.url}{path}", params={"community": COMMUNITY}, timeout=10)
        assert page.status_code == 200, (path, page.text)
        yield f"GET {path}", page.text
    for service, process in platform.stack.processes.items():
        yield f"{service} /metrics", requests.get(f"{process.url}/metrics", timeout=10).text
    notify = platform.db("notify")
    deliveries = list(notify["deliveries"].find({"subject_ref": {"$in": incidents}}))
    assert deliveries, "notify's deliveries about the planted reports"
    for delivery in deliveries:
        yield f"notify delivery {delivery['_id']}", dump(delivery)
        for attempt in notify["attempts"].find({"delivery_id": delivery["_id"]}):
            yield f"notify attempt {attempt['_id']}", dump(attempt)


def dump(document: Any) -> str:
    return json.dumps(document, default=str, ensure_ascii=False)


def leaks(needles: set[str], places: Iterator[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(where, needle) for where, text in places for needle in needles if needle in text]


# -- the test -------------------------------------------------------------------------------


def test_planted_personal_data_reaches_no_log_event_disclosure_entry_or_metric(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    p = plant()
    resident = f"resident-pii-{uuid.uuid4().hex[:6]}"
    plant_in_notify(platform, p, resident)
    incidents = plant_in_grid(platform, p, resident)
    incidents.append(plant_in_open311(platform, p, capsys))
    plant_in_registry(platform, p)
    case_id = plant_in_mediation(platform, p)
    volunteer_id, entries = plant_in_volunteer(platform, p)
    plant_in_disclosure(platform, p)

    wait_for(lambda: settled(platform, incidents, case_id, entries), timeout=90,
             what="the planted reports' events to reach disclosure and notify")  # fmt: skip
    wait_for(lambda: all_outboxes_relayed(platform), timeout=60, what="every outbox relayed")

    # The data went in, and its owners still read it back in the clear.
    staff = platform.session("community_staff", sub="staff-pii", communities=(COMMUNITY,))
    volunteer = ok(staff.get(f"{platform.url}{VOLUNTEER}/volunteers/{volunteer_id}", timeout=10))
    assert (volunteer["name"], volunteer["phone"]) == (p.name, p.phone)
    me = platform.session("resident", sub=resident)
    contact = ok(me.get(f"{platform.url}{NOTIFY}/contacts/{resident}", timeout=10))
    assert [c["address"] for c in contact["channels"]] == [p.phone, p.email]

    needles = p.needles()
    found = leaks(needles, texts(platform, incidents))
    assert not found, f"planted personal data found: {found[:20]}"

    at_rest = [
        ("mediation cases", dump(platform.db("mediation")["cases"].find_one({"_id": case_id}))),
        ("volunteer", dump(platform.db("volunteer")["volunteers"].find_one({"_id": volunteer_id}))),
        ("notify contacts", dump(platform.db("notify")["contacts"].find_one({"_id": resident}))),
    ]
    assert not leaks(needles, iter(at_rest))
