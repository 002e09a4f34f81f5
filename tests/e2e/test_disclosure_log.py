"""The disclosure log through the front door: proofs, checkpoints, witnesses, the guard.

Proofs are checked with the cryptography library and the Merkle verifier of
the test support code, never with the service's answers about itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shequ.cli import main as shequ
from shequ.contracts import mediation, volunteer
from shequ_services.disclosure import domain
from tests.conftest import WITNESS, Platform, wait_for
from tests.e2e.test_incident_fanout import report
from tests.support import rfc9162
from tests.support.events import publish_event

pytestmark = pytest.mark.e2e

API = "/api/v1/disclosure"
COMMUNITY = "hx-guihua"


def staff(platform: Platform, community: str = COMMUNITY) -> requests.Session:
    return platform.session("community_staff", communities=(community,))


def publish_notice(platform: Platform, **changes: Any) -> requests.Response:
    body = {
        "kind": "notice",
        "cadence": "ad_hoc",
        "community": COMMUNITY,
        "period": "2026-11",
        "title": "停水通知",
        "body": {"text": "11月25日9时至12时桂花苑停水检修。"},
        **changes,
    }
    return staff(platform).post(f"{platform.url}{API}/entries", json=body, timeout=10)


def sign_now(platform: Platform) -> dict[str, Any]:
    response = staff(platform).post(f"{platform.url}{API}/checkpoints", timeout=10)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def public(platform: Platform, path: str, **params: Any) -> Any:
    response = requests.get(f"{platform.url}{API}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def log_size(platform: Platform) -> int:
    head = platform.db("disclosure")["log_head"].find_one({"_id": "head"})
    return head["size"] if head else 0


def test_a_report_is_an_entry_whose_proof_holds_against_the_signed_checkpoint(
    platform: Platform,
) -> None:
    reported = report(
        platform,
        {"category": "facility_damaged", "grid_cell": "gh-01", "description": "路灯不亮"},
    )
    assert reported.status_code == 201, reported.text
    incident = reported.json()
    entry = wait_for(
        lambda: next(
            (
                e
                for e in public(platform, "/entries", order="desc", limit=1000)["items"]
                if incident["id"] in e["references"]
            ),
            None,
        ),
        what="the report's disclosure entry",
    )
    checkpoint = sign_now(platform)
    key = public(platform, "/public-key")
    Ed25519PublicKey.from_public_bytes(unb64(key["public_key"])).verify(
        unb64(checkpoint["signature"]),
        f"{checkpoint['origin']}\n{checkpoint['size']}\n{checkpoint['root_hash']}\n".encode(),
    )
    leaf = unb64(entry["leaf"])
    assert json.loads(leaf)["references"] == [incident["id"]]
    assert unb64(entry["leaf_hash"]) == hashlib.sha256(b"\x00" + leaf).digest()
    proof = public(platform, f"/entries/{entry['index']}/proof")
    assert proof["tree_size"] == checkpoint["size"]
    assert rfc9162.verify_inclusion(
        hashlib.sha256(b"\x00" + leaf).digest(),
        entry["index"],
        checkpoint["size"],
        [unb64(h) for h in proof["audit_path"]],
        unb64(checkpoint["root_hash"]),
    )


def test_two_checkpoints_are_consistent_and_a_proof_can_name_an_older_size(
    platform: Platform,
) -> None:
    assert publish_notice(platform).status_code == 201
    first = sign_now(platform)
    assert publish_notice(platform, title="停电通知").status_code == 201
    second = sign_now(platform)
    assert second["size"] > first["size"]
    proof = public(platform, "/consistency", first=first["size"], second=second["size"])
    assert rfc9162.verify_consistency(
        first["size"],
        second["size"],
        [unb64(h) for h in proof["consistency_path"]],
        unb64(first["root_hash"]),
        unb64(second["root_hash"]),
    )
    older = public(platform, "/entries/0/proof", size=first["size"])
    leaf = unb64(public(platform, "/entries/0")["leaf"])
    assert rfc9162.verify_inclusion(
        hashlib.sha256(b"\x00" + leaf).digest(),
        0,
        first["size"],
        [unb64(h) for h in older["audit_path"]],
        unb64(first["root_hash"]),
    )


def test_a_staff_entry_with_personal_data_is_refused_naming_field_and_kind(
    platform: Platform,
) -> None:
    before = log_size(platform)
    refused = publish_notice(
        platform,
        title="调解结果公示",
        body={"text": "当事人张三丰（身份证110101199003078515）已达成协议。"},
        parties=["张三丰"],
    )
    assert refused.status_code == 422
    assert refused.headers["Content-Type"] == "application/problem+json"
    errors = refused.json()["errors"]
    assert set(errors) == {"body.text"}
    message = " ".join(errors["body.text"])
    assert "身份证" in message or "resident ID" in message
    assert log_size(platform) == before


def test_the_parties_named_for_the_guard_are_never_stored(platform: Platform) -> None:
    published = publish_notice(platform, parties=["李四光"])
    assert published.status_code == 201, published.text
    stored = platform.db("disclosure")["entries"].find_one({"_id": published.json()["index"]})
    assert "李四光" not in json.dumps(stored, default=str, ensure_ascii=False)


def test_a_correction_is_a_new_entry_and_both_stay_visible(platform: Platform) -> None:
    original = publish_notice(platform, title="停水通知（9时）").json()
    correction = publish_notice(
        platform, title="停水通知（10时，更正）", supersedes=original["index"]
    ).json()
    assert correction["index"] > original["index"]
    assert correction["supersedes"] == original["index"]
    assert public(platform, f"/entries/{original['index']}")["title"] == "停水通知（9时）"
    missing = publish_notice(platform, supersedes=10**9)
    assert missing.status_code == 422 and "supersedes" in missing.json()["errors"]


def test_only_the_communitys_staff_or_an_admin_may_publish(platform: Platform) -> None:
    url = f"{platform.url}{API}/entries"
    body = {"kind": "notice", "cadence": "ad_hoc", "community": COMMUNITY, "period": "2026-11",
            "title": "通知", "body": {}}  # fmt: skip
    assert requests.post(url, json=body, timeout=10).status_code == 401
    resident = platform.session("resident", sub="r-board")
    assert resident.post(url, json=body, timeout=10).status_code == 403
    other = staff(platform, "hx-qingyuan")
    assert other.post(url, json=body, timeout=10).status_code == 403
    admin = platform.session("admin")
    assert admin.post(url, json=body, timeout=10).status_code == 201


def test_event_kinds_cannot_be_written_by_staff(platform: Platform) -> None:
    refused = publish_notice(platform, kind="incident_closed")
    assert refused.status_code == 422 and "kind" in refused.json()["errors"]


def test_a_downloaded_copy_verifies_and_a_tampered_log_fails(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish_notice(platform).status_code == 201
    sign_now(platform)
    key = public(platform, "/public-key")["public_key"]
    copy = tmp_path / "copy.json"
    assert shequ(["disclosure", "fetch", platform.url, "-o", str(copy)]) == 0
    assert shequ(["disclosure", "verify", str(copy), "--public-key", key]) == 0
    assert "verified:" in capsys.readouterr().out

    entries = platform.db("disclosure")["entries"]
    target = entries.find_one({"_id": 0})
    try:
        # A quiet edit of what the board shows: the fields no longer match the bytes.
        entries.update_one({"_id": 0}, {"$set": {"title": "（已改）"}})
        assert shequ(["disclosure", "fetch", platform.url, "-o", str(copy)]) == 0
        assert shequ(["disclosure", "verify", str(copy), "--public-key", key]) == 1
        assert "entry 0: title" in capsys.readouterr().out
        # An edit of the bytes too: the tree no longer has the signed root.
        content = json.loads(bytes(target["leaf"]))
        content["title"] = "（已改）"
        forged = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        entries.update_one({"_id": 0}, {"$set": {"leaf": forged.encode()}})
        assert shequ(["disclosure", "fetch", platform.url, "-o", str(copy)]) == 0
        assert shequ(["disclosure", "verify", str(copy), "--public-key", key]) == 1
        assert "do not make the signed tree" in capsys.readouterr().out
    finally:
        entries.replace_one({"_id": 0}, target)
    # A removed entry: the copy no longer covers the checkpoint.
    saved = json.loads(copy.read_text(encoding="utf-8"))
    del saved["entries"][0]
    copy.write_text(json.dumps(saved), encoding="utf-8")
    assert shequ(["disclosure", "verify", str(copy), "--public-key", key]) == 1


def test_a_witness_cosigns_only_what_is_consistent_with_what_it_signed_before(
    platform: Platform, tmp_path: Path
) -> None:
    key_file, state = tmp_path / "witness.key", tmp_path / "witness.json"
    key_file.write_text(platform.witness_key, encoding="utf-8")
    witness = ["disclosure", "witness", platform.url, "--name", WITNESS,
               "--key-file", str(key_file), "--state", str(state)]  # fmt: skip
    assert publish_notice(platform).status_code == 201
    sign_now(platform)
    assert shequ(witness) == 0
    assert publish_notice(platform).status_code == 201
    signed = sign_now(platform)
    assert shequ(witness) == 0
    latest = public(platform, "/checkpoint")
    assert latest["size"] == signed["size"]
    assert [c["witness"] for c in latest["cosignatures"]] == [WITNESS]
    # The witness remembers a root the log never had at that size: a fork.
    state.write_text(
        json.dumps({"size": latest["size"], "root_hash": base64.b64encode(b"x" * 32).decode()}),
        encoding="utf-8",
    )
    assert shequ(witness) == 1


def test_a_cosignature_from_an_unknown_or_wrong_key_is_refused(platform: Platform) -> None:
    assert publish_notice(platform).status_code == 201
    signed = sign_now(platform)
    url = f"{platform.url}{API}/checkpoints/{signed['size']}/cosignatures"
    bogus = {"timestamp": 1, "signature": base64.b64encode(b"\x00" * 64).decode()}
    assert requests.post(url, json={**bogus, "witness": "stranger"}, timeout=10).status_code == 403
    wrong = requests.post(url, json={**bogus, "witness": WITNESS}, timeout=10)
    assert wrong.status_code == 422 and "signature" in wrong.json()["errors"]


def test_a_proof_beyond_the_log_is_404_and_reversed_sizes_are_422(platform: Platform) -> None:
    sign_now(platform)
    size = log_size(platform)
    beyond = requests.get(f"{platform.url}{API}/entries/0/proof?size={size + 10}", timeout=10)
    assert beyond.status_code == 404
    reversed_sizes = requests.get(
        f"{platform.url}{API}/consistency", params={"first": 3, "second": 2}, timeout=10
    )
    assert reversed_sizes.status_code == 422


def test_monthly_figures_count_mediation_and_volunteer_events_and_reproduce_from_the_log(
    platform: Platform,
) -> None:
    community = "hx-figures"
    now = datetime.now(UTC)
    month = domain.month_of(now)
    for number, outcome in enumerate(("agreed", "agreed", "failed", "withdrawn")):
        publish_event(
            platform.servers.amqp_uri,
            mediation.CASE_CLOSED_V1,
            {
                "case_id": f"MED-{number}",
                "community": community,
                "dispute_type": "neighbour",
                "outcome": outcome,
                "at": now,
            },  # fmt: skip
            subject=f"MED-{number}",
        )
    publish_event(
        platform.servers.amqp_uri,
        volunteer.HOURS_APPROVED_V1,
        {"ledger_id": "L-1", "community": community, "minutes": 90, "at": now},
        subject="L-1",
    )
    tallies = platform.db("disclosure")["tallies"]
    wait_for(
        lambda: (
            (tallies.find_one({"_id": f"mediation|{community}|{month}"}) or {}).get("closed", {})
            == {"agreed": 2, "failed": 1, "withdrawn": 1}
            and tallies.find_one({"_id": f"volunteer|{community}|{month}"})
        ),
        what="disclosure to count the mediation and volunteer events",
    )
    admin = platform.session("admin")
    answer = admin.post(
        f"{platform.url}{API}/figures", json={"community": community, "month": month}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    figures = answer.json()["figures"]["body"]
    assert figures["mediation_closed"] == {"agreed": 2, "failed": 1, "withdrawn": 1}
    assert figures["mediation_agreement_rate"] == {
        "numerator": 2, "denominator": 3, "permille": 667,
    }  # fmt: skip
    assert (figures["volunteer_minutes"], figures["volunteer_records"]) == (90, 1)
    assert len(answer.json()["published"]) == 3  # mediation counts, volunteer time, figures
    again = admin.post(
        f"{platform.url}{API}/figures", json={"community": community, "month": month}, timeout=10
    )
    assert again.json()["published"] == []  # unchanged: nothing new is appended
    # Anyone can recompute the figures from the month's entries and their hashed bytes.
    items = public(platform, "/entries", community=community, period=month, limit=1000)["items"]
    recomputed = domain.monthly_figures(
        [_entry_from_leaf(item) for item in items], community=community, month=month
    )
    assert recomputed == figures


def _entry_from_leaf(item: dict[str, Any]) -> domain.Entry:
    content = json.loads(base64.b64decode(item["leaf"]))
    return domain.Entry(
        index=content["index"],
        kind=content["kind"],
        cadence=content["cadence"],
        community=content["community"],
        period=content["period"],
        title=content["title"],
        body=content["body"],
        references=tuple(content["references"]),
        supersedes=content["supersedes"],
        published_at=datetime.fromisoformat(content["published_at"]),
        leaf=base64.b64decode(item["leaf"]),
        origin=content["origin"],
    )


def step(platform: Platform, who: requests.Session, incident: dict[str, Any], **body: Any) -> Any:
    response = who.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/transitions",
        json={"expected_version": incident["version"], **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def entries_about(platform: Platform, incident_id: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        items = public(platform, "/entries", community=COMMUNITY, order="desc", limit=1000)
        mine = [e for e in items["items"] if incident_id in e["references"]]
        return sorted(mine, key=lambda e: e["index"]) if len(mine) >= count else None

    return wait_for(found, what=f"{count} disclosure entries about {incident_id}")


def test_closing_rating_and_rejecting_publish_entries_that_the_figures_count(
    platform: Platform,
) -> None:
    staff_session = staff(platform)
    department = platform.session("department", sub="dept-m", department="municipal")
    month = domain.month_of(datetime.now(UTC))
    admin = platform.session("admin")
    url = f"{platform.url}{API}/figures"
    before = admin.post(url, json={"community": COMMUNITY, "month": month}, timeout=10).json()

    body = {"category": "facility_damaged", "grid_cell": "gh-01", "description": "井盖松动"}
    incident = report(platform, body, "resident").json()
    incident = step(platform, staff_session, incident, action="accept")
    incident = step(platform, staff_session, incident, action="dispatch", department="municipal")
    incident = step(platform, department, incident, action="start")
    incident = step(platform, department, incident, action="report_handled", feedback="已修复")
    incident = step(platform, staff_session, incident, action="check", outcome="resolved")
    reporter = platform.session("resident", sub="gw-1", communities=(COMMUNITY,))
    rated = reporter.post(
        f"{platform.url}/api/v1/grid/incidents/{incident['id']}/rating",
        json={"expected_version": incident["version"], "score": 5},
        timeout=10,
    )
    assert rated.status_code in (200, 201), rated.text
    rejected = report(platform, body).json()
    step(platform, staff_session, rejected, action="reject", reason="不属于本社区")

    received, closed, evaluated = entries_about(platform, incident["id"], 3)
    assert (received["kind"], closed["kind"], evaluated["kind"]) == (
        "incident_summary", "incident_closed", "staff_evaluation",
    )  # fmt: skip
    assert closed["body"] == {
        "category": "facility_damaged", "outcome": "closed_resolved", "answered_in_time": True,
    }  # fmt: skip
    assert evaluated["body"]["score"] == 5
    [_, refusal] = entries_about(platform, rejected["id"], 2)
    assert refusal["body"]["outcome"] == "rejected"

    after = admin.post(url, json={"community": COMMUNITY, "month": month}, timeout=10).json()
    counted, earlier = after["figures"]["body"], (before["figures"] or {"body": {}})["body"]

    def grew(*path: str) -> int:
        def value(figures: dict[str, Any]) -> int:
            for key in path:
                figures = figures.get(key, {}) if isinstance(figures, dict) else {}
            return figures if isinstance(figures, int) else 0

        return value(counted) - value(earlier)

    assert grew("concluded", "closed_resolved") >= 1 and grew("concluded", "rejected") >= 1
    assert grew("satisfaction_rate", "numerator") >= 1
    assert grew("response_rate", "denominator") >= 2
    if before["figures"] is not None:
        assert after["figures"]["supersedes"] == before["figures"]["index"]
