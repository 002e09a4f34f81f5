"""The soak run (``make soak``): many reports, random consumer kills, one broker restart.

A stack of its own (broker, store, every service) takes ``--incidents``
reports from a few concurrent reporters while a chaos thread SIGKILLs a
random consumer now and then (the supervisor restarts it, as ``shequ up``
and Kubernetes do) and restarts RabbitMQ once, half way. Then it waits for
``shequ reconcile`` to come out clean and prints what was sent, what was
injected, and what was lost or duplicated, also into
``bench/results/soak.json`` and the generated part of docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import requests

from shequ.auth import mint_token
from shequ.discovery import discover_services, load_service
from shequ.embedded import free_port
from shequ.reconcile import reconcile
from shequ.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
CONSUMERS = ("notify", "disclosure", "mediation", "volunteer")
MIX = [
    ("neighbour_dispute", "qy-02"),
    ("alley_unclean", "qy-03"),
    ("resident_hospitalised", "qy-01"),
    ("facility_damaged", "qy-01"),
]


def main() -> int:
    # The stack's servers and services run in sessions of their own, so a
    # SIGTERM would leave them running: exit through the cleanup instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--reporters", type=int, default=4)
    # A consumer killed inside its transaction leaves that transaction open on
    # the store until the store's transaction lifetime runs out (60 s on
    # MongoDB and SecantusDB); meanwhile the disclosure log, which has one
    # writer at a time, waits. Kills closer together than that measure the
    # waiting, not the delivery (docs/reliability.md).
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--settle", type=float, default=1800.0, help="max seconds to reconcile")
    # A bound on the reporting, for a machine or a session that cannot give a
    # full run its hours: fewer reports, still every fault and a reconciliation.
    parser.add_argument(
        "--report-seconds", type=float, help="stop reporting after this long, then reconcile"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the front door's access lines
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="shequ-soak-") as data_dir:
        stack = Stack(
            Path(data_dir),
            port=free_port(),
            extra_env={"SHEQU_OUTBOX_LEASE_SECONDS": "5"},
        )
        print(f"starting a stack of its own in {data_dir} ...", flush=True)
        stack.start()
        try:
            result = soak(stack, args, rng)
        finally:
            stack.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_doc(result)
    print(json.dumps(result, indent=2))
    return 0 if result["reconciled"] and result["duplicated"] == 0 else 1


def soak(stack: Stack, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    token = mint_token(stack.jwt_secret(), roles=("grid_worker",), sub="gw-soak",
                       communities=("hx-qingyuan",))  # fmt: skip
    grid = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)["grid"]
    numbers = iter(range(args.incidents))
    lock = threading.Lock()
    made = [0]
    kills: list[str] = []
    broker_restarts = [0]
    done = threading.Event()
    reported = threading.Event()
    started = time.monotonic()

    def report(number: int) -> None:
        category, cell = MIX[number % len(MIX)]
        description = f"soak {number}"
        for _ in range(20):
            try:
                response = requests.post(
                    f"{stack.url}/api/v1/grid/incidents",
                    json={"category": category, "grid_cell": cell, "description": description},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                if response.status_code == 201:
                    return
            except requests.RequestException:
                pass
            # Unknown whether it was stored: look before sending again.
            time.sleep(0.5)
            if grid["incidents"].find_one({"description": description}, {"_id": 1}):
                return
        raise RuntimeError(f"report {number} could not be made")

    def out_of_time() -> bool:
        return bool(args.report_seconds) and time.monotonic() - started >= args.report_seconds

    def reporter() -> None:
        while not done.is_set() and not out_of_time():
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            report(number)
            with lock:
                made[0] += 1
                if made[0] % 500 == 0:
                    rate = made[0] / (time.monotonic() - started)
                    print(f"  {made[0]} reports ({rate:.1f}/s), {len(kills)} kills, "
                          f"{broker_restarts[0]} broker restart", flush=True)  # fmt: skip

    def chaos() -> None:
        next_kill = time.monotonic() + args.kill_every
        while not done.is_set():
            stack.supervise_once()
            half_way = made[0] >= args.incidents // 2 or (
                bool(args.report_seconds) and time.monotonic() - started >= args.report_seconds / 2
            )
            if not broker_restarts[0] and half_way:
                print("  restarting RabbitMQ ...", flush=True)
                assert stack.rabbit is not None
                stack.rabbit.restart()
                broker_restarts[0] += 1
            if time.monotonic() >= next_kill and not reported.is_set():
                victim = rng.choice(CONSUMERS)
                process = stack.processes[victim].process
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    kills.append(victim)
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
            done.wait(0.5)

    supervisor = threading.Thread(target=chaos, daemon=True)
    supervisor.start()
    workers = [threading.Thread(target=reporter) for _ in range(args.reporters)]
    for worker in workers:
        worker.start()
    try:
        found, reported_in = settle(stack, args, workers, made, reported, started)
    finally:
        # Also when interrupted (SIGTERM, Ctrl-C): the kills and the supervisor
        # stop before the stack does, or the supervisor starts again what the
        # stop ends.
        done.set()
        supervisor.join(timeout=30)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs",
        "incidents": made[0],
        "incidents_asked": args.incidents,
        "report_seconds": args.report_seconds,
        "events_sent": found.reports - found.unpublished,
        "effects_checked": dict(found.effects),
        "faults": {
            "consumer_kills": len(kills),
            "broker_restarts": broker_restarts[0],
            "killed": {name: kills.count(name) for name in CONSUMERS},
        },  # fmt: skip
        # Missing effects are only losses once nothing is in flight: a run
        # that did not reconcile within --settle says so instead.
        "reconciled": found.clean,
        "lost": len(found.missing) + found.unpublished if found.clean else None,
        "missing_at_deadline": len(found.missing) + found.unpublished,
        "duplicated": len(found.duplicated),
        "examples": {"missing": found.missing[:5], "duplicated": found.duplicated[:5]},
        "seconds": {"reporting": round(reported_in), "total": round(time.monotonic() - started)},
    }


def _bounds(result: dict[str, Any]) -> str:
    """How the run was asked to be shorter than the default, in words."""
    asked = f", {result['incidents_asked']:,} reports asked"
    if result.get("report_seconds"):
        asked += f", reporting bounded to {result['report_seconds']:g} s"
    return asked


def settle(
    stack: Stack,
    args: argparse.Namespace,
    workers: list[threading.Thread],
    made: list[int],
    reported: threading.Event,
    started: float,
) -> tuple[Any, float]:
    """Wait for the reporters, then for reconciliation to come out clean (or ``--settle``).

    Reconciliation reads every report and every consumer's effects; on the
    embedded store that costs seconds at a few thousand reports, and run
    back to back it took the store from the consumers it waits for. So the
    next look waits four times as long as the last one took, at least 5 s.
    """
    for worker in workers:
        worker.join()
    reported.set()  # the faults stop with the traffic; reconciliation waits for the backlog
    reported_in = time.monotonic() - started
    print(f"{made[0]} reports in {reported_in:.0f} s; reconciling ...", flush=True)
    consumers = [load_service(name) for name in sorted(discover_services())]
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    deadline = time.monotonic() + args.settle
    while True:
        stack.supervise_once()
        looked = time.monotonic()
        found = reconcile(client, None, consumers)
        if (found.clean and found.reports >= made[0]) or time.monotonic() > deadline:
            return found, reported_in
        time.sleep(max(5.0, 4 * (time.monotonic() - looked)))


def write_doc(result: dict[str, Any]) -> None:
    table = "\n".join(
        [
            BEGIN,
            f"Last soak run ({result['measured_at']}, {result['machine']}, `make soak`"
            f"{_bounds(result)}):",
            "",
            "| incidents | events sent | consumer kills | broker restarts | lost | duplicated |"
            " reporting | in all |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['incidents']} | {result['events_sent']} | "
            f"{result['faults']['consumer_kills']} | {result['faults']['broker_restarts']} | "
            f"{result['lost'] if result['reconciled'] else 'not reconciled in time'} | "
            f"{result['duplicated']} | {result['seconds']['reporting']} s | "
            f"{result['seconds']['total']} s |",
            END,
        ]
    )
    text = DOC.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + table + text[text.index(END) + len(END) :]
        DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
