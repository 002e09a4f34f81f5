"""``shequ demo``: a scripted morning in a community, then what happened where.

Grid workers and residents report incidents of several categories through the
front door. The demo then waits (bounded) for each incident's effects in
every service that should react, and prints, per incident, which service did
what and how long each hop took from the report's acceptance to the
consumer's committed record.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shequ.auth import mint_token

COMMUNITY = "hx-qingyuan"

SCRIPT = [
    # (who, category, cell, description)
    ("grid_worker", "facility_damaged", "qy-01", "3号楼东侧路灯损坏，夜间无照明。"),
    ("resident", "neighbour_dispute", "qy-02", "楼上装修噪音扰民，双方多次争吵。"),
    ("grid_worker", "alley_unclean", "qy-03", "清源里背街垃圾堆积，需要清理。"),
    ("grid_worker", "resident_hospitalised", "qy-01", "独居老人住院，需要探访。"),
    ("resident", "safety_hazard", "qy-02", "小区消防通道被杂物堵塞。"),
]


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
        note = f"{len(items)} notifications (log channel)"
        return first["created_at"], {**first, "note": note}
    if service == "disclosure":
        entries = _call("GET", f"{base_url}/api/v1/disclosure/entries?limit=500", token)["items"]
        found = [e for e in entries if iid in e["references"]]
        if not found:
            return None
        entry = found[0]
        return entry["published_at"], {**entry, "note": f"entry #{entry['seq']} {entry['title']}"}
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
