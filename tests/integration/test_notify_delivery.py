"""Notify's delivery worker on the real store, against real local HTTP and SMTP servers.

The worker runs with a controlled clock (and the jitter's random draw fixed
at its maximum), so the retry schedule, quiet hours and digests are checked
at the times they are meant to happen without waiting for them. Contact
addresses are sealed at rest: the raw contact documents do not contain them,
yet the worker reaches them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY as METRICS

from shequ import audit, sealing
from shequ.contracts import grid as grid_events
from shequ.contracts import new_event, parse_event
from shequ.embedded import free_port
from shequ_services.notify.channels import load_channels
from shequ_services.notify.delivery import (
    BUREAUS,
    PEOPLE,
    DeliveryWorker,
    Settings,
    record_event,
)
from shequ_services.notify.domain import (
    Contact,
    ContactChannel,
    QuietHours,
    RetryPolicy,
    Template,
)
from shequ_services.notify.routing import CachedRouting
from shequ_services.notify.service import SEED_FILE, load_seed
from shequ_services.notify.store import NotifyRepository
from tests.conftest import Servers

pytestmark = pytest.mark.integration

# 2026-03-10 10:00 in Shanghai (UTC+8).
START = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=10, factor=2, max_delay_seconds=60, horizon_seconds=120)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def at(self, moment: datetime) -> None:
        self.now = moment


@dataclass
class Endpoint:
    """A local HTTP server that answers with a scripted list of statuses, then 200."""

    url: str
    script: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    reply: bytes = b"{}"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = state.script.pop(0) if state.script else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if 300 <= status < 400:
                self.send_header("Location", "/redirected")
            self.end_headers()
            self.wfile.write(state.reply)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            state.received.append({"path": self.path, "headers": dict(self.headers), "body": b""})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mailbox
    controller.stop()


OLD_KEY, NEW_KEY = sealing.new_key(), sealing.new_key()
KEYRING = sealing.Keyring.from_config(
    f"k1:{OLD_KEY},k2:{NEW_KEY}", "k1", "", service="notify", index_required=False
)


@pytest.fixture
def repo(servers: Servers) -> Iterator[NotifyRepository]:
    client = servers.mongo()
    name = f"notify_{uuid.uuid4().hex[:8]}"
    db = client[name]
    for collection, models in NotifyRepository.INDEXES.items():
        db[collection].create_indexes(models)
    repository = NotifyRepository(db, service="notify", district="test")
    repository.keyring = KEYRING
    rules, templates = load_seed(SEED_FILE)
    repository.seed(rules, templates, START)
    yield repository
    client.drop_database(name)
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(
    repo: NotifyRepository, clock: Clock, endpoint: Endpoint, smtp: tuple[int, Mailbox]
) -> DeliveryWorker:
    config = {
        "NOTIFY_SMS_GATEWAY_URL": f"{endpoint.url}/sms",
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": smtp[0],
        "NOTIFY_HTTP_TIMEOUT_SECONDS": 5,
    }
    settings = Settings(
        retry=POLICY, subscription_retry=POLICY, rate_limit=3, rate_window=timedelta(hours=1)
    )
    return DeliveryWorker(
        repo,
        load_channels(config),
        settings,
        resolve_reporter=lambda incident_id: "resident-7",
        clock=clock,
        rand=lambda: 1.0,
    )


def reported(incident_id: str = "INC-1", cell: str = "qy-01") -> Any:
    return new_event(
        grid_events.INCIDENT_REPORTED_V1,
        district="test",
        subject=incident_id,
        sequence=1,
        data={
            "incident_id": incident_id,
            "category": {
                "code": "facility_damaged",
                "name_zh": "设施损坏",
                "opens_mediation": False,
                "volunteer_task": False,
                "sensitive": False,
            },
            "community": "c1",
            "grid_cell": cell,
            "channel": "patrol",
            "urgency": "normal",
            "reported_at": START,
        },
    )


def alert(kind: str, incident_id: str = "INC-1") -> Any:
    return new_event(
        grid_events.ALERT_SPECS[kind],
        district="test",
        subject=incident_id,
        sequence=2,
        data={
            "incident_id": incident_id,
            "category": "facility_damaged",
            "community": "c1",
            "grid_cell": "qy-01",
            "clock": "resolve",
            "deadline": START,
            "department": None,
        },
    )


def handled(incident_id: str) -> Any:
    return new_event(
        grid_events.TRANSITION_SPECS["incident.handled"],
        district="test",
        subject=incident_id,
        sequence=3,
        data={
            "incident_id": incident_id,
            "category": "facility_damaged",
            "community": "c1",
            "grid_cell": "qy-01",
            "action": "report_handled",
            "from_state": "in_progress",
            "to_state": "handled",
            "department": "water",
            "at": START,
        },
    )


def record(repo: NotifyRepository, event: Any, clock: Clock) -> None:
    """Record an event as the handler receives it: parsed from its JSON form."""
    received = parse_event(json.loads(json.dumps(event.to_json_dict())))
    repo.run_in_transaction(lambda: record_event(repo, received, clock()))


def contact(recipient: str, *channels: tuple[str, str], **more: Any) -> Contact:
    return Contact(
        recipient=recipient,
        channels=tuple(ContactChannel(kind, address) for kind, address in channels),
        **more,
    )


def delivery_to(repo: NotifyRepository, recipient: str) -> dict[str, Any]:
    (found,) = repo.deliveries({"recipient": recipient}, 10)[0]
    return found


def outcomes(repo: NotifyRepository, recipient: str) -> list[tuple[str, str]]:
    attempts = repo.attempts({"recipient": recipient}, 50)[0]
    return [(a["channel"], a["outcome"]) for a in reversed(attempts)]


def count(channel: str, outcome: str) -> float:
    labels = {"channel": channel, "outcome": outcome}
    return METRICS.get_sample_value("shequ_notifications_total", labels) or 0.0


@pytest.mark.parametrize("kind", ["webhook", "sms", "wecom"])
def test_each_http_channel_delivers_the_rendered_text_to_a_real_server(
    kind: str, repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    address = {"webhook": f"{endpoint.url}/hook", "sms": "+8613800000000", "wecom": endpoint.url}
    endpoint.reply = b'{"errcode": 0}'
    repo.save_contact(contact("grid_worker:qy-01", (kind, address[kind])), START)
    before = count(kind, "sent")
    record(repo, reported(), clock)
    worker.run_once()

    (request,) = [r for r in endpoint.received]
    body = json.loads(request["body"])
    text = {"webhook": body.get("text"), "sms": body.get("text"), "wecom": body.get("text")}[kind]
    if kind == "wecom":
        assert body["msgtype"] == "text"
        text = body["text"]["content"]
    if kind == "sms":
        assert body["to"] == "+8613800000000" and request["path"] == "/sms"
    assert "网格 qy-01 有新上报事项 INC-1" in text
    assert delivery_to(repo, "grid_worker:qy-01")["status"] == "sent"
    assert outcomes(repo, "grid_worker:qy-01") == [(kind, "sent")]
    assert count(kind, "sent") == before + 1


def test_the_email_channel_sends_through_a_real_smtp_server(
    repo: NotifyRepository, worker: DeliveryWorker, smtp: tuple[int, Mailbox], clock: Clock
) -> None:
    repo.save_contact(contact("resident-7", ("email", "r7@example.org"), language="en"), START)
    record(repo, reported(), clock)
    worker.run_once()

    (message,) = smtp[1].messages
    assert message.rcpt_tos == ["r7@example.org"]
    stored = repo.db["contacts"].find_one({"_id": "resident-7"})
    assert "r7@example.org" not in json.dumps(stored, default=str)
    assert sealing.is_sealed(stored["channels"][0]["address"]) and stored["kids"] == ["k1"]
    text = message.content.decode("utf-8")
    assert "Subject: Your report was received" in text
    assert "Your report INC-1 was received" in text
    # The reporter was asked of grid by incident; the audit names the subject id.
    assert outcomes(repo, "resident-7") == [("email", "sent")]


def test_a_failing_channel_falls_back_to_the_recipients_next_one(
    repo: NotifyRepository,
    worker: DeliveryWorker,
    endpoint: Endpoint,
    smtp: tuple[int, Mailbox],
    clock: Clock,
) -> None:
    endpoint.script = [500]
    repo.save_contact(
        contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/hook"), ("email", "gw@x.org")),
        START,
    )
    record(repo, reported(), clock)
    worker.run_once()

    assert outcomes(repo, "grid_worker:qy-01") == [("webhook", "fallback"), ("email", "sent")]
    assert len(smtp[1].messages) == 1
    attempts = repo.attempts({"recipient": "grid_worker:qy-01"}, 10)[0]
    failed = next(a for a in attempts if a["outcome"] == "fallback")
    assert failed["error"] == "HTTP 500 from the endpoint"
    assert failed["event_id"] == delivery_to(repo, "grid_worker:qy-01")["event_id"]


def test_recording_the_same_event_twice_records_each_notification_once(
    repo: NotifyRepository, clock: Clock
) -> None:
    event = reported()
    record(repo, event, clock)
    record(repo, event, clock)
    found = repo.deliveries({"event_id": event.id}, 50)[0]
    assert sorted(d["recipient"] for d in found) == ["grid_worker:qy-01", "reporter-of:INC-1"]


def verify(secret: str, headers: dict[str, str], body: bytes, now: int, window: int = 300) -> bool:
    """The receiver's side, written from the documented rule, not from notify's code."""
    timestamp = headers["X-Shequ-Timestamp"]
    if abs(now - int(timestamp)) > window:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers["X-Shequ-Signature"], "sha256=" + expected.hexdigest())


def test_a_subscription_retries_on_the_backoff_schedule_until_the_endpoint_recovers(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    endpoint.script = [503, 503]
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s3cret", "b1", START
    )
    event = reported()
    record(repo, event, clock)
    recipient = f"subscription:{sub['id']}"

    worker.run_once()
    assert delivery_to(repo, recipient)["due_at"] == START + timedelta(seconds=10)
    clock.advance(seconds=9)
    worker.run_once()
    assert len(endpoint.received) == 1
    clock.advance(seconds=1)
    worker.run_once()
    assert delivery_to(repo, recipient)["due_at"] == clock.now + timedelta(seconds=20)
    clock.advance(seconds=20)
    worker.run_once()

    assert outcomes(repo, recipient) == [("subscription", o) for o in ("failed", "failed", "sent")]
    sent = [a["at"] for a in reversed(repo.attempts({"recipient": recipient}, 10)[0])]
    assert [later - earlier for earlier, later in zip(sent, sent[1:], strict=False)] == [
        timedelta(seconds=10),
        timedelta(seconds=20),
    ]
    last = endpoint.received[-1]
    assert verify("s3cret", last["headers"], last["body"], int(clock.now.timestamp()))
    assert not verify("other", last["headers"], last["body"], int(clock.now.timestamp()))
    assert not verify("s3cret", last["headers"], last["body"], int(clock.now.timestamp()) + 301)
    cloud_event = json.loads(last["body"])
    assert cloud_event["id"] == event.id
    assert cloud_event["type"] == "shequ.grid.incident.reported"
    assert cloud_event["data"]["incident_id"] == "INC-1"


def test_a_subscription_delivery_is_dead_after_the_retry_horizon(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    endpoint.script = [500] * 50
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s", "b1", START
    )
    record(repo, reported(), clock)
    recipient = f"subscription:{sub['id']}"
    for _ in range(20):
        worker.run_once()
        if delivery_to(repo, recipient)["status"] == "dead":
            break
        clock.at(delivery_to(repo, recipient)["due_at"])

    dead = delivery_to(repo, recipient)
    assert dead["status"] == "dead"
    assert dead["last_error"] == "HTTP 500 from the endpoint"
    # Attempts at 0, 10, 30 and 70 s; the next would come at 130 s, past the 120 s horizon.
    assert [o for _, o in outcomes(repo, recipient)] == ["failed"] * 3 + ["dead"]
    assert repo.deliveries({"status": "dead", "subscription": sub["id"]}, 10)[0]


def test_a_paused_subscription_gets_its_events_when_resumed(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s", "b1", START
    )
    repo.set_subscription_status(sub["id"], "paused", START)
    record(repo, reported(), clock)
    worker.run_once()
    assert endpoint.received == []
    repo.set_subscription_status(sub["id"], "active", clock.now)
    worker.run_once()
    assert len(endpoint.received) == 1


def test_quiet_hours_hold_a_normal_message_but_not_an_overdue_alert(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    quiet = QuietHours(time(22, 0), time(7, 0))
    for recipient in ("grid_worker:qy-01", "staff:c1"):
        repo.save_contact(
            contact(recipient, ("webhook", f"{endpoint.url}/{recipient}"), quiet_hours=quiet),
            START,
        )
    clock.at(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    record(repo, reported(), clock)
    record(repo, alert("overdue"), clock)
    worker.run_once()

    assert [r["path"] for r in endpoint.received] == ["/staff:c1"]
    held = delivery_to(repo, "grid_worker:qy-01")
    assert (held["status"], held["waiting_for"]) == ("pending", "quiet hours")
    seven_am = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)
    assert held["due_at"] == seven_am
    clock.at(seven_am)
    worker.run_once()
    assert [r["path"] for r in endpoint.received] == ["/staff:c1", "/grid_worker:qy-01"]


def test_a_recipient_over_its_rate_limit_waits_for_the_window(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    repo.save_contact(contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/h")), START)
    for n in range(4):
        record(repo, reported(f"INC-{n}"), clock)
    worker.run_once()
    assert len(endpoint.received) == 3
    clock.advance(hours=1, seconds=1)
    worker.run_once()
    assert len(endpoint.received) == 4


def test_opted_in_staff_get_one_digest_the_next_morning(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    repo.save_contact(contact("staff:c1", ("webhook", f"{endpoint.url}/staff"), digest=True), START)
    record(repo, handled("INC-1"), clock)
    clock.advance(minutes=1)
    record(repo, handled("INC-2"), clock)
    worker.run_once()
    assert endpoint.received == []
    assert worker.run_digests() == 0

    clock.at(datetime(2026, 3, 11, 0, 0, tzinfo=UTC))  # 08:00 the next day in Shanghai
    assert worker.run_digests() == 1
    worker.run_once()

    (request,) = endpoint.received
    text = json.loads(request["body"])["text"]
    assert text.startswith("2026-03-10 每日汇总：共 2 条通知")
    assert "1. 事项 INC-1" in text and "2. 事项 INC-2" in text
    statuses = sorted(d["status"] for d in repo.deliveries({"recipient": "staff:c1"}, 10)[0])
    assert statuses == ["digested", "digested", "sent"]


def test_a_staff_member_who_opts_out_gets_held_items_one_by_one(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    staff = contact("staff:c1", ("webhook", f"{endpoint.url}/staff"), digest=True)
    repo.save_contact(staff, START)
    record(repo, handled("INC-1"), clock)
    worker.run_once()
    repo.save_contact(contact("staff:c1", ("webhook", f"{endpoint.url}/staff")), START)
    worker.run_digests()
    worker.run_once()
    assert len(endpoint.received) == 1
    assert delivery_to(repo, "staff:c1")["status"] == "sent"


def test_a_template_that_fails_on_real_data_kills_the_delivery_with_its_error(
    repo: NotifyRepository, worker: DeliveryWorker, clock: Clock
) -> None:
    # Stored around the API's check: the sample's id has 18 characters, this one 14.
    failing = Template(
        id="incident.new_in_cell", body={"zh-CN": "{{ 1 // (incident_id|length - 14) }}"}
    )
    repo.save_template(failing, START)
    record(repo, reported("INC-1234567890"), clock)
    worker.run_once()
    dead = delivery_to(repo, "grid_worker:qy-01")
    assert dead["status"] == "dead"
    assert dead["last_error"].startswith("the template failed: ZeroDivisionError")
    assert outcomes(repo, "grid_worker:qy-01") == [("template", "dead")]


def test_the_audit_pages_through_attempts_newest_first_without_repeats(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    endpoint.script = [500] * 3
    repo.save_contact(contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/h")), START)
    record(repo, reported(), clock)
    for _ in range(4):
        worker.run_once()
        clock.at(delivery_to(repo, "grid_worker:qy-01")["due_at"])
    seen: list[str] = []
    after = None
    while True:
        page, more = repo.attempts({"recipient": "grid_worker:qy-01"}, 2, after)
        seen.extend(a["id"] for a in page)
        if not more:
            break
        after = (page[-1]["at"], page[-1]["id"])
    assert len(seen) == 4 and len(set(seen)) == 4
    assert [a["outcome"] for a in repo.attempts({"recipient": "grid_worker:qy-01"}, 10)[0]] == [
        "sent", "failed", "failed", "failed",
    ]  # fmt: skip


def test_people_and_bureaus_are_sent_by_separate_passes(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    repo.save_contact(contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/person")), START)
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s", "b1", START
    )
    record(repo, reported(), clock)
    worker.run_once(PEOPLE)
    assert [r["path"] for r in endpoint.received] == ["/person"]
    assert delivery_to(repo, f"subscription:{sub['id']}")["attempts"] == 0
    worker.run_once(BUREAUS)
    assert [r["path"] for r in endpoint.received] == ["/person", "/bureau"]


def test_a_stopping_worker_sends_what_it_claimed_and_leaves_the_rest_due(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    repo.save_contact(contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/person")), START)
    repo.save_contact(contact("grid_worker:qy-02", ("webhook", f"{endpoint.url}/person")), START)
    record(repo, reported("INC-1", "qy-01"), clock)
    record(repo, reported("INC-2", "qy-02"), clock)
    # The process is told to stop once the first send is under way; one
    # lane, so the second recipient's delivery is not already being sent.
    stopping = replace_stopping(worker, lambda: bool(endpoint.received))
    stopping.settings = replace(worker.settings, concurrency=1)
    stopping.run_once(PEOPLE)
    assert len(endpoint.received) == 1
    untouched = [d for d in repo.deliveries({}, 50)[0] if d["attempts"] == 0]
    assert any(d["recipient"] == "grid_worker:qy-02" for d in untouched)
    # The next process sends the rest.
    worker.run_once(PEOPLE)
    assert len(endpoint.received) == 2
    assert delivery_to(repo, "grid_worker:qy-02")["status"] == "sent"


class Gate:
    """A channel that holds each send until ``wanted`` sends are under way at once.

    It waits at most ``patience`` seconds for them, so a worker sending one
    at a time gets through, slowly, and the test sees how many overlapped.
    Each send's span is kept in the order of starts and ends, to tell which
    sends overlapped.
    """

    name = "gate"

    def __init__(self, wanted: int, patience: float = 5.0) -> None:
        self.wanted = wanted
        self.patience = patience
        self.changed = threading.Condition()
        self.under_way: set[str] = set()
        self.most = 0
        self.clock = 0
        self.spans: dict[str, tuple[int, int]] = {}

    def send(self, message: Any) -> None:
        with self.changed:
            self.clock += 1
            started = self.clock
            self.under_way.add(message.delivery_id)
            self.most = max(self.most, len(self.under_way))
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= self.wanted, timeout=self.patience)
            self.under_way.discard(message.delivery_id)
            self.clock += 1
            self.spans[message.delivery_id] = (started, self.clock)


def test_deliveries_to_different_recipients_go_side_by_side_and_one_recipients_in_turn(
    repo: NotifyRepository, worker: DeliveryWorker, clock: Clock
) -> None:
    # Three reports in one cell: its grid worker is told three times (one
    # lane), and each report's reporter once (three lanes, as the reporter
    # is not known until grid answers). Each send waits for all six to be
    # under way, which only a worker sending the grid worker's side by side
    # would reach, and is let go after a second.
    gate = Gate(wanted=6, patience=1.0)
    lanes = DeliveryWorker(
        repo,
        {"gate": gate},
        replace(worker.settings, default_channels=("gate",), concurrency=8, rate_limit=100),
        resolve_reporter=worker.resolve_reporter,
        clock=clock,
        rand=worker.rand,
    )
    for n in range(3):
        record(repo, reported(f"INC-{n}", "qy-01"), clock)

    assert lanes.run_once(PEOPLE) == 6
    deliveries = repo.deliveries({}, 50)[0]
    assert [d["status"] for d in deliveries] == ["sent"] * 6
    assert gate.most >= 3  # side by side
    spans = sorted(gate.spans[d["id"]] for d in deliveries if d["recipient"] == "grid_worker:qy-01")
    assert len(spans) == 3
    assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(spans)), spans


def replace_stopping(worker: DeliveryWorker, stopping: Any) -> DeliveryWorker:
    """The same worker, told by ``stopping`` when its process is shutting down."""
    return DeliveryWorker(
        worker.repo,
        worker.channels,
        worker.settings,
        resolve_reporter=worker.resolve_reporter,
        clock=worker.clock,
        rand=worker.rand,
        stopping=stopping,
    )


def test_a_grid_that_does_not_answer_makes_a_failed_attempt_that_is_retried(
    repo: NotifyRepository, worker: DeliveryWorker, clock: Clock
) -> None:
    answers: list[str | None] = []

    def grid_down_then_up(incident_id: str) -> str | None:
        if not answers:
            answers.append(None)
            raise TimeoutError("no reply from grid")
        return "resident-7"

    worker.resolve_reporter = grid_down_then_up
    record(repo, reported(), clock)
    worker.run_once(PEOPLE)
    waiting = delivery_to(repo, "reporter-of:INC-1")
    assert (waiting["status"], waiting["last_error"]) == ("pending", "asking grid: TimeoutError")
    clock.at(waiting["due_at"])
    worker.run_once(PEOPLE)
    assert delivery_to(repo, "reporter-of:INC-1")["status"] == "sent"
    assert outcomes(repo, "reporter-of:INC-1") == [("resolve", "failed")]
    assert outcomes(repo, "resident-7") == [("log", "sent")]


def test_a_rule_without_fallback_retries_the_first_channel_instead(
    repo: NotifyRepository,
    worker: DeliveryWorker,
    endpoint: Endpoint,
    smtp: tuple[int, Mailbox],
    clock: Clock,
) -> None:
    (rule,) = [r for r in repo.rules() if r.id == "reported-cell"]
    repo.save_rule(replace(rule, fallback=False), START)
    endpoint.script = [500]
    repo.save_contact(
        contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/hook"), ("email", "gw@x.org")),
        START,
    )
    record(repo, reported(), clock)
    worker.run_once(PEOPLE)
    clock.at(delivery_to(repo, "grid_worker:qy-01")["due_at"])
    worker.run_once(PEOPLE)
    assert outcomes(repo, "grid_worker:qy-01") == [("webhook", "failed"), ("webhook", "sent")]
    assert smtp[1].messages == []


def test_the_delay_from_event_to_sent_is_measured_by_channel(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    labels = {"channel": "webhook"}
    before = METRICS.get_sample_value("shequ_notification_delay_seconds_sum", labels) or 0.0
    repo.save_contact(contact("grid_worker:qy-01", ("webhook", f"{endpoint.url}/h")), START)
    record(repo, reported(), clock)
    clock.advance(seconds=90)
    worker.run_once(PEOPLE)
    after = METRICS.get_sample_value("shequ_notification_delay_seconds_sum", labels)
    assert after == before + 90


def test_a_redirect_is_a_failed_attempt_not_followed(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    endpoint.script = [302]
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s", "b1", START
    )
    record(repo, reported(), clock)
    worker.run_once(BUREAUS)
    failed = delivery_to(repo, f"subscription:{sub['id']}")
    assert (failed["status"], failed["last_error"]) == ("pending", "HTTP 302 from the endpoint")
    assert len(endpoint.received) == 1


class _ObservedEvent(threading.Event):
    """An event that also says when somebody started waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited_on.set()
        return super().wait(timeout)


def test_an_event_that_arrives_before_the_seed_is_planned_with_the_seeded_rules(
    servers: Servers,
) -> None:
    """The handler waits for the rules before its transaction starts, not inside it.

    A transaction reads the store as it was when it began: waiting inside it
    for the seed would still find no rule, and the event would be marked
    handled with nobody told (found by the fault suite's SIGTERM case).
    """
    from types import SimpleNamespace

    from shequ_services.notify.service import NotifyService

    client = servers.mongo()
    name = f"notify_{uuid.uuid4().hex[:8]}"
    db = client[name]
    try:
        for collection, models in NotifyRepository.INDEXES.items():
            db[collection].create_indexes(models)
        seeded = _ObservedEvent()
        repo = NotifyRepository(db, service="notify", district="test")
        routing = CachedRouting(repo.routing_table, max_age=3600)
        assert routing.rules_for(event_type=reported().type) == []  # read before the seed
        woken = threading.Event()
        host = SimpleNamespace(
            notifications=repo,
            delivery=SimpleNamespace(seeded=seeded, routing=routing, wake=woken.set),
        )
        host._wait_for_rules = lambda: NotifyService._wait_for_rules(host)  # type: ignore[arg-type]
        event = reported("INC-early")
        handler = threading.Thread(
            target=NotifyService.on_incident_reported, args=(host, event.to_json_dict())
        )
        handler.start()
        assert seeded.waited_on.wait(30), "the handler never waited for the rules"
        rules, templates = load_seed(SEED_FILE)
        NotifyRepository(db, service="notify", district="test").seed(rules, templates, START)
        routing.changed()  # as the service's start does, before it lets handlers in
        seeded.set()
        handler.join(timeout=60)
        assert not handler.is_alive()
        assert db["processed_events"].count_documents({"subject": "INC-early"}) == 1
        assert db["deliveries"].count_documents({"subject_ref": "INC-early"}) >= 1
        assert woken.is_set()  # the delivery pass is started once the handler has committed
    finally:
        client.drop_database(name)
        client.close()


def test_contact_addresses_are_sealed_at_rest_and_read_back_as_saved(
    repo: NotifyRepository,
) -> None:
    saved = contact(
        "resident-9", ("sms", "+8613900003333"), ("email", "r9@example.org"), digest=True
    )
    record = repo.save_contact(saved, START)
    assert [c["address"] for c in record["channels"]] == ["+8613900003333", "r9@example.org"]
    raw = json.dumps(list(repo.db["contacts"].find()), default=str)
    assert "13900003333" not in raw and "r9@example.org" not in raw
    assert repo.contact("resident-9") == saved
    assert repo.contact_record("resident-9") == record


def test_an_address_moved_to_another_channel_does_not_open(repo: NotifyRepository) -> None:
    repo.save_contact(contact("resident-9", ("sms", "+8613900003333"), ("email", "a@b.cn")), START)
    channels = repo.db["contacts"].find_one({"_id": "resident-9"})["channels"]
    channels.reverse()
    repo.db["contacts"].update_one({"_id": "resident-9"}, {"$set": {"channels": channels}})
    with pytest.raises(sealing.UnsealError):
        repo.contact("resident-9")


def test_rotation_reseals_old_keys_and_contacts_stored_in_the_clear(
    repo: NotifyRepository,
) -> None:
    repo.save_contact(contact("resident-1", ("email", "one@example.org")), START)
    # A contact saved by a release before sealing: the address in the clear, no kids.
    repo.db["contacts"].insert_one(
        {
            "_id": "resident-2",
            "channels": [{"kind": "sms", "address": "+8613700004444"}],
            "language": "zh-CN",
            "timezone": "Asia/Shanghai",
            "quiet_hours": None,
            "digest": False,
            "updated_at": START,
        }
    )
    assert repo.contact("resident-2") == contact("resident-2", ("sms", "+8613700004444"))
    repo.keyring = replace(KEYRING, active="k2")
    assert repo.reseal_batch(limit=10) == 2
    assert repo.reseal_batch(limit=10) == 0
    raw = json.dumps(list(repo.db["contacts"].find()), default=str)
    assert "13700004444" not in raw and "one@example.org" not in raw
    assert {tuple(d["kids"]) for d in repo.db["contacts"].find()} == {("k2",)}
    assert repo.contact("resident-2") == contact("resident-2", ("sms", "+8613700004444"))
    assert repo.contact("resident-1") == contact("resident-1", ("email", "one@example.org"))


def trail(repo: NotifyRepository, kind: str, object_id: str) -> list[dict[str, Any]]:
    found = repo.db[audit.AUDIT].find({"object.kind": kind, "object.id": object_id})
    return list(found.sort("seq", 1))


def test_a_delivery_is_recorded_at_its_final_state_and_its_requeue_not_at_each_retry(
    repo: NotifyRepository, worker: DeliveryWorker, endpoint: Endpoint, clock: Clock
) -> None:
    endpoint.script = [500] * 50
    sub = repo.add_subscription(
        f"{endpoint.url}/bureau", [grid_events.INCIDENT_REPORTED_V1.type], "s", "b1", START
    )
    record(repo, reported(), clock)
    recipient = f"subscription:{sub['id']}"
    delivery_id = delivery_to(repo, recipient)["id"]
    assert trail(repo, "delivery", delivery_id) == []  # recorded by the handler: not a record
    for _ in range(20):
        worker.run_once()
        if delivery_to(repo, recipient)["status"] == "dead":
            break
        clock.at(delivery_to(repo, recipient)["due_at"])
    (dead,) = trail(repo, "delivery", delivery_id)  # three failed attempts before: no records
    assert dead["before"] and dead["after"]

    repo.actor, repo.action = {"sub": "admin-1", "roles": ["admin"]}, "notify.delivery.retry"
    assert repo.requeue(delivery_id, clock.now)
    requeued = trail(repo, "delivery", delivery_id)[-1]
    assert (requeued["action"], requeued["before"]) == ("notify.delivery.retry", dead["after"])
    stored = repo.db["deliveries"].find_one({"_id": delivery_id})
    assert requeued["after"] == audit.object_hash(stored)
    assert audit.verify(repo.db) == []


def test_subscription_and_contact_changes_are_recorded_without_their_secrets(
    repo: NotifyRepository, clock: Clock
) -> None:
    sub = repo.add_subscription("https://bureau.example/hook", ["x"], "s3cret-value", "b1", START)
    repo.set_subscription_status(sub["id"], "paused", START)
    record(repo, reported(), clock)  # no rule matches "x": no delivery to move
    repo.rotate_secret(sub["id"], "n3w-secret", START)
    repo.delete_subscription(sub["id"], START)
    records = trail(repo, "subscription", sub["id"])
    assert len(records) == 4 and records[0]["before"] is None
    assert [r["before"] for r in records[1:]] == [r["after"] for r in records[:-1]]
    repo.save_contact(contact("resident-9", ("sms", "13800001111")), START)
    assert repo.delete_contact("resident-9")
    saved, deleted = trail(repo, "contact", "resident-9")
    assert (saved["before"], deleted["after"]) == (None, None)
    assert deleted["before"] == saved["after"]
    text = json.dumps(list(repo.db[audit.AUDIT].find()), default=str)
    assert "s3cret-value" not in text and "13800001111" not in text
    assert audit.verify(repo.db) == []


def test_the_routing_table_holds_the_stored_rules_live_subscriptions_and_templates(
    repo: NotifyRepository, clock: Clock
) -> None:
    """What the service keeps in memory is what the handler read from the store before."""
    reported_type = grid_events.INCIDENT_REPORTED_V1.type
    live = repo.add_subscription("https://a.example/", [reported_type], "s", "b1", START)
    paused = repo.add_subscription("https://b.example/", [reported_type], "s", "b2", START)
    gone = repo.add_subscription("https://c.example/", [reported_type], "s", "b3", START)
    repo.set_subscription_status(paused["id"], "paused", START)
    repo.delete_subscription(gone["id"], START)
    table = repo.routing_table()
    assert sorted(table.subscriptions[reported_type]) == sorted([live["id"], paused["id"]])
    assert sorted(table.subscriptions[reported_type]) == sorted(repo.subscribed_to(reported_type))
    for event_type in {r.event_type for r in repo.rules()}:
        assert list(table.rules[event_type]) == repo.rules_for(event_type)
    assert set(table.templates) == repo.template_ids()
    template_id = next(iter(table.templates))
    assert table.templates[template_id] == repo.template(template_id)

    # Recording through the table plans what recording through the store does.
    routing = CachedRouting(repo.routing_table, max_age=3600)
    received = parse_event(json.loads(json.dumps(reported("INC-R").to_json_dict())))
    repo.run_in_transaction(lambda: record_event(repo, received, clock(), routing))
    planned = {(d["audience"], d["rule"]) for d in repo.about("INC-R", 100)}
    subscribed = repo.deliveries({"subscription": live["id"]}, 10)[0]
    assert [d["event_id"] for d in subscribed] == [received.id]
    received_again = parse_event(json.loads(json.dumps(reported("INC-S").to_json_dict())))
    repo.run_in_transaction(lambda: record_event(repo, received_again, clock()))
    assert planned and planned == {(d["audience"], d["rule"]) for d in repo.about("INC-S", 100)}


def test_workers_racing_for_the_same_deliveries_claim_each_once(
    repo: NotifyRepository, clock: Clock
) -> None:
    """Four workers read the same due deliveries at once and all try to lease
    each one: every delivery goes to exactly one of them, with its lease."""
    for n in range(10):
        record(repo, reported(f"INC-{n}"), clock)
    due = repo.due(clock(), PEOPLE, limit=100)
    assert len(due) >= 10
    start = threading.Barrier(4)
    won: dict[str, list[timedelta]] = {}
    lock = threading.Lock()

    def worker(number: int) -> None:
        mine, lease = repo.sibling(), timedelta(minutes=2, seconds=number)
        start.wait()
        for candidate in due:
            claimed = mine.claim(candidate, clock(), lease)
            if claimed is not None:
                with lock:
                    won.setdefault(claimed["_id"], []).append(lease)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == sorted(candidate["_id"] for candidate in due)
    assert all(len(leases) == 1 for leases in won.values()), won
    for delivery_id, (lease,) in won.items():
        assert (
            repo.db["deliveries"].find_one({"_id": delivery_id})["lease_until"] == clock() + lease
        )
    # Leased now: a claim with the lease read before is refused.
    assert repo.claim(due[0], clock(), timedelta(minutes=2)) is None


class Slow:
    """A channel whose every send takes ``seconds`` of the worker's clock."""

    name = "slow"

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def send(self, message: Any) -> None:
        self.clock.advance(seconds=self.seconds)


def test_a_delivery_is_sent_when_the_channel_took_it_not_when_the_attempt_began(
    repo: NotifyRepository, clock: Clock, worker: DeliveryWorker
) -> None:
    slow = DeliveryWorker(
        repo,
        {"slow": Slow(clock, 30)},
        replace(worker.settings, default_channels=("slow",), concurrency=1),  # one clock
        resolve_reporter=worker.resolve_reporter,
        clock=clock,
        rand=worker.rand,
    )
    record(repo, reported("INC-1", "qy-01"), clock)
    assert slow.run_once(PEOPLE) == 2
    sent = list(repo.db["deliveries"].find({"status": "sent"}))
    assert len(sent) == 2
    for delivery in sent:
        # The attempt is dated when it began, the delivery when the channel
        # had it: thirty seconds of the clock apart, the send's own time.
        (attempt,) = repo.db["attempts"].find({"delivery_id": delivery["_id"]})
        assert delivery["sent_at"] - attempt["at"] == timedelta(seconds=30)
