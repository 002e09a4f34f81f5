"""``shequ demo``: a scripted day in a community, then what happened where.

In the morning grid workers and residents report incidents of several
categories through the front door. The demo waits (bounded) for each
incident's effects in every service that should react, and prints, per
incident, which service did what and how long each hop took from the report's
acceptance to the consumer's committed record.

In the afternoon the community works the cases through the lifecycle with
the same API a client would use (``CASEWORK``): accept, dispatch, a department
sending a case back, handling, the on-site check, the reporter's rating. One
report is left unacknowledged so its clock runs out while you watch: the demo
runs the grid's own policy with one change, a drill on the acknowledge clock
(``drill_policy``), seconds instead of four hours. Last come the community's
three public rates for the day.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from shequ.auth import mint_token

# The acknowledge clock's drill: limit and escalation levels in seconds, so the
# overdue escalation happens within the demo. Every other clock keeps its real limit.
DRILL_ACKNOWLEDGE = {
    "starts_on": ["reported"],
    "stops_on": ["accepted", "rejected", "merged"],
    "limit": {"amount": 8, "unit": "seconds"},
    "escalations": [
        {"after": {"amount": 2, "unit": "seconds"}, "to": "sub_district"},
        {"after": {"amount": 4, "unit": "seconds"}, "to": "district"},
    ],
}
SHANGHAI = ZoneInfo("Asia/Shanghai")
#: The morning's report nobody acknowledges: its drill clock runs out.
LEFT_UNACKNOWLEDGED = "resident_hospitalised"
#: The afternoon's rating: the resident who reported the fire lane rates its closure.
RATING = ("safety_hazard", 5, "通道当天就清理了，处理及时。")

COMMUNITY = "hx-qingyuan"

SCRIPT = [
    # (who, category, cell, description)
    ("grid_worker", "facility_damaged", "qy-01", "3号楼东侧路灯损坏，夜间无照明。"),
    ("resident", "neighbour_dispute", "qy-02", "楼上装修噪音扰民，双方多次争吵。"),
    ("grid_worker", "alley_unclean", "qy-03", "清源里背街垃圾堆积，需要清理。"),
    ("grid_worker", "resident_hospitalised", "qy-01", "独居老人住院，需要探访。"),
    ("resident", "safety_hazard", "qy-02", "小区消防通道被杂物堵塞。"),
]


# The afternoon: who takes which steps on which of the morning's incidents.
# (actor, action, fields); actors are the keys of ``_casework_tokens``.
CASEWORK: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "safety_hazard": [
        ("staff", "accept", {}),
        ("staff", "dispatch", {"department": "city_management"}),
        ("city_management", "start", {}),
        ("city_management", "report_handled", {"feedback": "已清理消防通道杂物，张贴禁停提示。"}),
        ("grid_worker", "check", {"outcome": "resolved", "note": "现场复核通道畅通。"}),
    ],
    "facility_damaged": [
        ("staff", "accept", {}),
        ("staff", "dispatch", {"department": "city_management"}),
        ("city_management", "return_case", {"reason": "路灯属市政设施，不属城管职责。"}),
        ("staff", "dispatch", {"department": "municipal"}),
        ("municipal", "start", {}),
        ("municipal", "report_handled", {"feedback": "灯杆锈蚀需整体更换，已报采购。"}),
        ("grid_worker", "check", {"outcome": "unresolved", "note": "暂未恢复照明。"}),
    ],
    "neighbour_dispute": [
        ("staff", "accept", {}),
        ("staff", "dispatch", {"department": "justice"}),
        ("justice", "start", {}),
    ],
    "alley_unclean": [
        ("grid_worker", "accept", {}),
        ("staff", "dispatch", {"department": "city_management"}),
    ],
}


@dataclass
class Outcome:
    incident_id: str
    category: str
    reported_at: datetime
    hops: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class DemoError(RuntimeError):
    pass


def _call(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise DemoError(f"{method} {url} -> {exc.code}: {exc.read().decode()}") from exc


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run_scenario(base_url: str, secret: str, timeout: float = 60.0) -> list[Outcome]:
    """Report the scripted incidents and collect each one's effects."""
    tokens = {
        "grid_worker": mint_token(secret, roles=["grid_worker"], sub="gw-qy-001",
                                  communities=[COMMUNITY]),
        "resident": mint_token(secret, roles=["resident"], sub="resident-1024"),
    }  # fmt: skip
    staff = mint_token(secret, roles=["community_staff", "mediator", "volunteer"],
                       sub="staff-qy-01", communities=[COMMUNITY])  # fmt: skip
    outcomes = []
    for who, category, cell, description in SCRIPT:
        created = _call(
            "POST",
            f"{base_url}/api/v1/grid/incidents",
            tokens[who],
            {"category": category, "grid_cell": cell, "description": description},
        )
        outcomes.append(Outcome(created["id"], category, _at(created["reported_at"])))
    categories = {c["code"]: c for c in _call("GET", f"{base_url}/api/v1/grid/categories", staff)}
    deadline = time.monotonic() + timeout
    for outcome in outcomes:
        category = categories[outcome.category]
        expected = {"notify"}
        if category["sensitive"]:
            # Published without category or reference: not linkable, by design.
            outcome.notes["disclosure"] = "sensitive: published anonymously, not linkable"
        else:
            expected.add("disclosure")
        if category["opens_mediation"]:
            expected.add("mediation")
        if category["volunteer_task"]:
            expected.add("volunteer")
        while expected - set(outcome.hops) and time.monotonic() < deadline:
            _collect(base_url, staff, outcome, expected)
            if expected - set(outcome.hops):
                time.sleep(0.2)
        for missing in expected - set(outcome.hops):
            outcome.hops[missing] = None
    return outcomes


def _first_effect(base_url: str, token: str, service: str, iid: str) -> tuple[str, dict] | None:
    """The committed-at time and record of a service's first effect of an incident."""
    if service == "notify":
        url = f"{base_url}/api/v1/notify/notifications?subject_ref={iid}"
        items = _call("GET", url, token)["items"]
        if not items:
            return None
        first = min(items, key=lambda n: _at(n["created_at"]))
        note = f"{len(items)} notifications to {', '.join(sorted({n['audience'] for n in items}))}"
        return first["created_at"], {**first, "note": note}
    if service == "disclosure":
        entries = _call(
            "GET", f"{base_url}/api/v1/disclosure/entries?limit=1000&order=desc", token
        )["items"]
        found = [e for e in entries if iid in e["references"]]
        if not found:
            return None
        entry = min(found, key=lambda e: e["index"])
        return entry["published_at"], {**entry, "note": f"entry #{entry['index']} {entry['title']}"}
    path, at, describe = {
        "mediation": ("mediation/cases", "opened_at", lambda r: f"case {r['id']}"),
        "volunteer": ("volunteer/tasks", "created_at", lambda r: f"task {r['id']} ({r['kind']})"),
    }[service]
    items = _call("GET", f"{base_url}/api/v1/{path}?incident_id={iid}", token)["items"]
    if not items:
        return None
    return items[0][at], {**items[0], "note": describe(items[0])}


def _collect(base_url: str, token: str, outcome: Outcome, expected: set[str]) -> None:
    for service in sorted(expected - set(outcome.hops)):
        found = _first_effect(base_url, token, service, outcome.incident_id)
        if found is not None:
            at, record = found
            outcome.hops[service] = (_at(at) - outcome.reported_at).total_seconds()
            outcome.notes[service] = record["note"]


def summary(outcomes: list[Outcome]) -> str:
    lines = ["", "What happened where (hop = report accepted -> consumer's record committed):"]
    for outcome in outcomes:
        lines.append(f"  {outcome.incident_id}  [{outcome.category}]")
        for service in ("notify", "disclosure", "mediation", "volunteer"):
            if service not in outcome.hops:
                if service in outcome.notes:
                    lines.append(f"      -> {service:<10} {'':>11}  {outcome.notes[service]}")
                continue
            hop = outcome.hops[service]
            shown = f"{hop * 1000:8.0f} ms" if hop is not None else "  MISSING"
            lines.append(f"      -> {service:<10} {shown}  {outcome.notes.get(service, '')}")
    hops = [h for o in outcomes for h in o.hops.values() if h is not None]
    missing = sum(1 for o in outcomes for h in o.hops.values() if h is None)
    if hops:
        lines.append(
            f"  {len(outcomes)} incidents, {len(hops)} effects, slowest hop "
            f"{max(hops) * 1000:.0f} ms, missing effects: {missing}"
        )
    return "\n".join(lines)


@dataclass
class Casework:
    """What the afternoon did to one incident: the states it went through."""

    incident_id: str
    category: str
    path: list[str] = field(default_factory=list)
    version: int = 1


def _casework_tokens(secret: str) -> dict[str, str]:
    people = {
        "staff": (["community_staff"], "staff-qy-01", None),
        "grid_worker": (["grid_worker"], "gw-qy-001", None),
        "resident": (["resident"], "resident-1024", None),
        **{dept: (["department"], f"dept-{dept}", dept) for dept in _departments()},
    }
    tokens = {
        actor: mint_token(secret, roles=roles, sub=sub, communities=[COMMUNITY], department=dept)
        for actor, (roles, sub, dept) in people.items()
    }
    # Sensitive cases (a hospitalised resident) are shown only for a declared purpose.
    tokens["caseworker"] = mint_token(
        secret, roles=["community_staff"], sub="staff-qy-01", communities=[COMMUNITY],
        purpose="casework",
    )  # fmt: skip
    return tokens


def _departments() -> set[str]:
    return {
        fields["department"]
        for steps in CASEWORK.values()
        for _, action, fields in steps
        if action == "dispatch"
    }


def work_cases(base_url: str, secret: str, outcomes: list[Outcome]) -> list[Casework]:
    """Take the morning's incidents through the afternoon's steps (``CASEWORK``)."""
    tokens = _casework_tokens(secret)
    done = []
    for outcome in outcomes:
        steps = CASEWORK.get(outcome.category)
        if steps is None:
            continue
        work = Casework(outcome.incident_id, outcome.category, ["reported"])
        url = f"{base_url}/api/v1/grid/incidents/{outcome.incident_id}/transitions"
        for actor, action, fields in steps:
            body = {"action": action, "expected_version": work.version, **fields}
            updated = _call("POST", url, tokens[actor], body)
            work.version = updated["version"]
            shown = updated["status"]
            if action == "dispatch":
                shown += f"({fields['department']})"
            elif action == "return_case":
                shown = f"returned→{shown}"
            work.path.append(shown)
        done.append(work)
    return done


def casework_summary(work: list[Casework]) -> str:
    lines = ["", "The afternoon's casework (each step a versioned transition and an event):"]
    for case in work:
        lines.append(f"  {case.incident_id}  [{case.category}]")
        lines.append(f"      {' → '.join(case.path)}")
    return "\n".join(lines)


def drill_policy(grid_policy: Path, into: Path) -> Path:
    """The grid's policy with the acknowledge clock as ``DRILL_ACKNOWLEDGE``, saved to ``into``."""
    policy = yaml.safe_load(grid_policy.read_text(encoding="utf-8"))
    policy["clocks"]["acknowledge"] = DRILL_ACKNOWLEDGE
    into.write_text(
        "# Written by `shequ demo`: the grid's policy with the acknowledge clock as a drill.\n"
        + yaml.safe_dump(policy, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return into


def demo_env(data_dir: Path) -> dict[str, str]:
    """The demo stack's grid: its own policy with the drill clock, scanned every second."""
    data_dir.mkdir(parents=True, exist_ok=True)
    grid_policy = Path(str(files("shequ_services.grid") / "policy.yaml"))
    policy = drill_policy(grid_policy, data_dir / "demo-policy.yaml")
    return {"SHEQU_GRID_POLICY_FILE": str(policy), "SHEQU_GRID_DEADLINE_SCAN_SECONDS": "1"}


def rate_closure(base_url: str, secret: str, work: list[Casework]) -> str:
    """The reporter rates the closed case of ``RATING``; returns a line for the summary."""
    category, score, comment = RATING
    case = next(c for c in work if c.category == category)
    resident = _casework_tokens(secret)["resident"]
    url = f"{base_url}/api/v1/grid/incidents/{case.incident_id}/rating"
    body = {"score": score, "comment": comment, "expected_version": case.version}
    rated = _call("POST", url, resident, body)
    case.version = rated["version"]
    return f"  {case.incident_id}  [{category}]  rated {score}/5 by its reporter"


def watch_escalation(
    base_url: str, secret: str, outcomes: list[Outcome], timeout: float = 60.0
) -> dict[str, Any]:
    """Wait (bounded) until the unacknowledged report's drill clock raised every alert."""
    outcome = next(o for o in outcomes if o.category == LEFT_UNACKNOWLEDGED)
    caseworker = _casework_tokens(secret)["caseworker"]
    url = f"{base_url}/api/v1/grid/incidents/{outcome.incident_id}"
    deadline = time.monotonic() + timeout
    while True:
        clock = _call("GET", url, caseworker)["clocks"]["acknowledge"]
        raised = clock["warned_at"] and clock["overdue_at"]
        if raised and all(level["raised_at"] for level in clock["escalations"]):
            return {"incident_id": outcome.incident_id, "clock": clock}
        if time.monotonic() > deadline:
            raise DemoError(f"the drill clock of {outcome.incident_id} did not run out in time")
        time.sleep(0.5)


def escalation_summary(watched: dict[str, Any]) -> str:
    clock = watched["clock"]
    started = _at(clock["started"])

    def after(moment: str) -> str:
        return f"+{(_at(moment) - started).total_seconds():4.1f} s"

    lines = [
        "",
        "An overdue escalation (acknowledge clock as a drill: 8 s instead of 4 h):",
        f"  {watched['incident_id']}  [{LEFT_UNACKNOWLEDGED}]  nobody accepted it",
        f"      warned     {after(clock['warned_at'])}",
        f"      overdue    {after(clock['overdue_at'])}   (deadline {after(clock['deadline'])})",
    ]
    for level in clock["escalations"]:
        lines.append(
            f"      escalated  {after(level['raised_at'])}   level {level['level']} → {level['to']}"
        )
    return "\n".join(lines)


def public_rates(base_url: str, secret: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """The community's three public rates for the days the demo's reports were made.

    The period is the reports' own local days, not the day of reading: a demo
    that runs across midnight in Shanghai still counts its own reports.
    """
    staff = _casework_tokens(secret)["staff"]
    days = sorted({o.reported_at.astimezone(SHANGHAI).date().isoformat() for o in outcomes})
    query = f"community={COMMUNITY}&from={days[0]}&to={days[-1]}"
    return _call("GET", f"{base_url}/api/v1/grid/rates?{query}", staff)


def rates_summary(rates: dict[str, Any]) -> str:
    group = rates["groups"][0] if rates["groups"] else None
    period = rates["period"]
    day = period["from"] if period["from"] == period["to"] else f"{period['from']}..{period['to']}"
    lines = ["", f"The three public rates of {COMMUNITY} for {day} (docs/rates.md defines them):"]
    if group is None:
        lines.append("  no incidents reported then")
        return "\n".join(lines)
    for key, label in (
        ("response_rate", "响应率 response"),
        ("resolution_rate", "解决率 resolution"),
        ("satisfaction_rate", "满意率 satisfaction"),
    ):
        rate = group[key]
        shown = "  n/a" if rate["value"] is None else f"{rate['value'] * 100:5.1f} %"
        lines.append(f"  {label:<22} {shown}   ({rate['numerator']} of {rate['denominator']})")
    return "\n".join(lines)


def public_record(base_url: str, secret: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """The evening's public record: the month's figures, a signed checkpoint, a checked copy.

    It checks the log the way an outsider would: an inclusion proof of the
    morning's first entry against the signed root, and a downloaded copy of
    the whole log verified offline against the published key.
    """
    from shequ_services.disclosure import client, merkle, verify
    from shequ_services.disclosure.checkpoint import unb64

    staff = _casework_tokens(secret)["staff"]
    month = outcomes[0].reported_at.astimezone(SHANGHAI).strftime("%Y-%m")
    api = f"{base_url}/api/v1/disclosure"
    figures = _call("POST", f"{api}/figures", staff, {"community": COMMUNITY, "month": month})
    checkpoint = _call("POST", f"{api}/checkpoints", staff)
    first = min(
        (e for e in _call("GET", f"{api}/entries?limit=1000", staff)["items"]
         if e["community"] == COMMUNITY),
        key=lambda e: e["index"],
    )  # fmt: skip
    proof = _call("GET", f"{api}/entries/{first['index']}/proof", staff)
    included = merkle.verify_inclusion(
        unb64(proof["leaf_hash"]),
        proof["leaf_index"],
        proof["tree_size"],
        [unb64(h) for h in proof["audit_path"]],
        unb64(checkpoint["root_hash"]),
    )
    key = unb64(_call("GET", f"{api}/public-key", staff)["public_key"])
    report = verify.verify_copy(client.download(base_url), pinned_key=key)
    return {
        "month": month,
        "figures": figures["figures"],
        "checkpoint": checkpoint,
        "proof": {**proof, "verified": included},
        "copy": report,
    }


def record_summary(record: dict[str, Any]) -> str:
    figures, checkpoint, proof = record["figures"], record["checkpoint"], record["proof"]
    body = figures["body"]
    rates = "  ".join(
        f"{label} {body[key]['numerator']}/{body[key]['denominator']}"
        for key, label in (
            ("response_rate", "响应率"), ("resolution_rate", "解决率"),
            ("satisfaction_rate", "满意率"),
        )
    )  # fmt: skip
    report = record["copy"]
    copy_line = (
        f"{report.checked_entries} entries make the signed tree of size {report.size}"
        if report.ok
        else "FAILED: " + "; ".join(report.problems)
    )
    return "\n".join(
        [
            "",
            "The public record (docs/disclosure.md):",
            f"  entry #{figures['index']}  {figures['title']}: received "
            f"{sum(body['received'].values())}, concluded {sum(body['concluded'].values())}; "
            f"{rates}",
            f"  checkpoint  {checkpoint['size']} entries, root {checkpoint['root_hash'][:16]}…, "
            f"signed with Ed25519",
            f"  entry #{proof['leaf_index']}  inclusion proof of {len(proof['audit_path'])} "
            + (
                "hashes: verified against the signed root"
                if proof["verified"]
                else "hashes: FAILED"
            ),
            f"  a copy of the whole log, checked offline: {copy_line}",
        ]
    )


def notifications(
    base_url: str, secret: str, outcomes: list[Outcome], timeout: float = 30.0
) -> dict[str, list[dict[str, Any]]]:
    """Each incident's notifications once none is waiting any more (bounded wait)."""
    staff = _casework_tokens(secret)["staff"]
    deadline = time.monotonic() + timeout
    while True:
        found = {
            o.incident_id: _call(
                "GET", f"{base_url}/api/v1/notify/notifications?subject_ref={o.incident_id}", staff
            )["items"]
            for o in outcomes
        }
        waiting = [n for items in found.values() for n in items if n["status"] == "pending"]
        if not waiting or time.monotonic() > deadline:
            return found


def notify_summary(found: dict[str, list[dict[str, Any]]]) -> str:
    """Who was told what, through which channel (services/notify/rules.yaml says whom)."""
    lines = ["", "What notify told whom (rules: services/notify/rules.yaml; channel: the log"
             " unless a contact point is set):"]  # fmt: skip
    states: dict[str, int] = {}
    for incident_id, items in found.items():
        lines.append(f"  {incident_id}")
        for note in items:
            states[note["status"]] = states.get(note["status"], 0) + 1
            text = (note.get("text") or "").replace("\n", " ")
            shown = text if len(text) <= 40 else text[:39] + "…"
            lines.append(
                f"      {note['event_type'].rsplit('.', 1)[-1]:<11} → {note['recipient']:<38} "
                f"{note['status']:<8} {note['channel'] or '':<5} {shown}"
            )
    total = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    lines.append(f"  {sum(states.values())} notifications: {total}")
    return "\n".join(lines)


def reconciliation(mongo_uri: str, timeout: float = 30.0) -> Any:
    """``shequ reconcile`` over the day: every report's effects, exactly once."""
    import pymongo

    from shequ.discovery import discover_services, load_service
    from shequ.reconcile import reconcile

    consumers = [load_service(name) for name in sorted(discover_services())]
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri, tz_aware=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = reconcile(client, None, consumers)
            if found.clean or time.monotonic() > deadline:
                return found
            time.sleep(0.5)
    finally:
        client.close()


def reconciliation_summary(found: Any) -> str:
    effects = sum(found.effects.values())
    if found.clean:
        verdict = "nothing lost, nothing doubled"
    else:
        verdict = (
            f"{found.unpublished} unpublished, {len(found.missing)} missing, "
            f"{len(found.duplicated)} duplicated"
        )
    return (
        f"\nReconciled (shequ reconcile, docs/reliability.md): {found.reports} reports, "
        f"{effects} effects in the consumers' databases; {verdict}"
    )
