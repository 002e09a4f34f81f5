"""Notify's pure rules: planning, rule checks, templates, back-off, quiet hours, digests."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, time, timedelta

import pytest

from shequ_services.notify import domain, signing, templates
from shequ_services.notify.channels import UnsafeUrl, check_url
from shequ_services.notify.delivery import Settings, by_recipient
from shequ_services.notify.domain import Contact, ContactChannel, QuietHours, RetryPolicy, Rule
from shequ_services.notify.schemas import sample_context
from shequ_services.notify.service import CONSUMED, SEED_FILE, check_rule, load_seed

REPORTED = "shequ.grid.incident.reported"
DISPATCHED = "shequ.grid.incident.dispatched"
SHANGHAI = "Asia/Shanghai"


def rule(**overrides: object) -> Rule:
    fields = {
        "id": "r1",
        "event_type": REPORTED,
        "audiences": ("reporter", "grid_worker"),
        "template": "t1",
    }
    fields.update(overrides)
    return Rule(**fields)  # type: ignore[arg-type]


def contact(**overrides: object) -> Contact:
    fields = {"recipient": "u1", "channels": (ContactChannel("log", ""),), "timezone": SHANGHAI}
    fields.update(overrides)
    return Contact(**fields)  # type: ignore[arg-type]


def shanghai(hour: int, minute: int = 0, day: int = 10) -> datetime:
    # Shanghai is UTC+8 all year.
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


def test_a_report_plans_one_notification_per_audience_with_stable_keys() -> None:
    data = {"incident_id": "INC-1", "grid_cell": "qy-01"}
    planned = domain.plan([rule()], event_id="e1", event_type=REPORTED, subject="INC-1", data=data)
    assert [p.recipient for p in planned] == ["reporter-of:INC-1", "grid_worker:qy-01"]
    again = domain.plan([rule()], event_id="e1", event_type=REPORTED, subject="INC-1", data=data)
    assert [p.key for p in again] == [p.key for p in planned]


def test_disabled_rules_and_other_event_types_plan_nothing() -> None:
    rules = [rule(enabled=False), rule(id="r2", event_type=DISPATCHED)]
    data = {"incident_id": "INC-1", "grid_cell": "qy-01"}
    assert domain.plan(rules, event_id="e", event_type=REPORTED, subject="x", data=data) == []


def test_co_departments_become_one_recipient_each() -> None:
    data = {"co_departments": ["water", "power", "water"]}
    assert domain.recipients_for("co_departments", data) == ["department:water", "department:power"]


def test_an_event_without_a_department_has_no_department_recipient() -> None:
    assert domain.recipients_for("department", {"department": None}) == []


def test_a_rule_for_an_audience_the_event_cannot_name_is_refused() -> None:
    with pytest.raises(domain.RuleError) as refused:
        domain.check_rule(rule(audiences=("department",)), ["incident_id", "grid_cell"], {"t1"})
    assert "department" in refused.value.errors["audiences"][0]


def test_a_rule_for_an_unknown_event_type_and_template_lists_both_errors() -> None:
    with pytest.raises(domain.RuleError) as refused:
        domain.check_rule(rule(event_type="shequ.grid.nothing"), None, set())
    assert set(refused.value.errors) == {"event_type", "template"}


def test_every_seeded_rule_renders_against_its_events_sample() -> None:
    rules, seeded = load_seed(SEED_FILE)
    by_id = {t.id: t for t in seeded}
    for item in rules:
        check_rule(item, by_id)
    assert {r.event_type for r in rules} <= set(CONSUMED)


def test_a_template_naming_a_field_the_event_lacks_is_refused_with_its_language() -> None:
    bad = domain.Template(id="t", body={"zh-CN": "{{ incident_id }}", "en": "{{ reporter }}"})
    errors = templates.check(bad, {REPORTED: sample_context(CONSUMED[REPORTED])})
    assert list(errors["body"]) == ["en"]
    assert "reporter" in errors["body"]["en"][0]


def test_a_template_syntax_error_names_its_line() -> None:
    bad = domain.Template(id="t", body={"zh-CN": "第一行\n{% if %}"})
    errors = templates.check(bad, {})
    assert errors["body"]["zh-CN"][0].startswith("line 2:")


def test_the_sandbox_refuses_reaching_into_python_internals() -> None:
    bad = domain.Template(id="t", body={"en": "{{ incident_id.__class__.__mro__ }}"})
    errors = templates.check(bad, {REPORTED: sample_context(CONSUMED[REPORTED])})
    assert "body" in errors


def test_rendering_falls_back_to_zh_cn_then_english() -> None:
    both = domain.Template(id="t", body={"zh-CN": "事项 {{ n }}", "en": "item {{ n }}"})
    english_only = domain.Template(id="t", body={"en": "item {{ n }}"})
    assert templates.render(both, {"n": 1}, "en")[1] == "item 1"
    assert templates.render(both, {"n": 1}, "fr")[1] == "事项 1"
    assert templates.render(english_only, {"n": 1}, "zh-CN")[1] == "item 1"


def test_backoff_doubles_within_its_jitter_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(base_seconds=10, factor=2, max_delay_seconds=60, horizon_seconds=3600)
    assert domain.backoff_seconds(1, policy, lambda: 0.0) == 5
    assert domain.backoff_seconds(1, policy, lambda: 1.0) == 10
    assert domain.backoff_seconds(3, policy, lambda: 1.0) == 40
    assert domain.backoff_seconds(9, policy, lambda: 1.0) == 60


def test_no_retry_is_scheduled_past_the_horizon() -> None:
    policy = RetryPolicy(base_seconds=10, factor=2, max_delay_seconds=60, horizon_seconds=100)
    first = datetime(2026, 3, 1, tzinfo=UTC)
    inside = domain.next_retry(
        attempt=1, first_attempt_at=first, now=first, policy=policy, rand=lambda: 1.0
    )
    assert inside == first + timedelta(seconds=10)
    late = first + timedelta(seconds=95)
    assert domain.next_retry(attempt=2, first_attempt_at=first, now=late, policy=policy) is None


def test_quiet_hours_over_midnight_hold_until_their_local_end() -> None:
    quiet = contact(quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    assert domain.quiet_until(shanghai(23, 30), quiet) == shanghai(7, 0, day=11)
    assert domain.quiet_until(shanghai(6, 0), quiet) == shanghai(7, 0)
    assert domain.quiet_until(shanghai(12, 0), quiet) is None


def test_urgent_messages_ignore_quiet_hours_and_rate_limits() -> None:
    quiet = contact(quiet_hours=QuietHours(time(22, 0), time(7, 0)))
    now = shanghai(23, 0)
    busy = [now - timedelta(minutes=m) for m in range(5)]
    common = {"now": now, "contact": quiet, "recent_sends": busy, "rate_limit": 2}
    window = timedelta(hours=1)
    assert domain.not_before(urgency="immediate", rate_window=window, **common) is None
    assert domain.not_before(urgency="normal", rate_window=window, **common) == (
        shanghai(7, 0, day=11),
        "quiet hours",
    )


def test_only_a_non_urgent_message_to_a_known_contact_can_wait() -> None:
    """The worker reads a recipient's recent sends only when this says they can matter."""
    assert domain.can_wait("normal", contact())
    assert domain.can_wait("digest", contact())
    assert not domain.can_wait("immediate", contact())
    assert not domain.can_wait("normal", None)
    busy = [shanghai(12, 0) - timedelta(minutes=m) for m in range(5)]
    assert (
        domain.not_before(
            urgency="normal",
            now=shanghai(12, 0),
            contact=None,
            recent_sends=busy,
            rate_limit=1,
            rate_window=timedelta(hours=1),
        )  # fmt: skip
        is None
    )


def test_a_wait_names_the_reason_that_holds_longest() -> None:
    now = shanghai(12, 0)
    busy = [now - timedelta(minutes=1)]
    assert domain.not_before(
        urgency="normal", now=now, contact=contact(), recent_sends=busy, rate_limit=1,
        rate_window=timedelta(hours=1),
    ) == (now + timedelta(minutes=59), "rate limit")  # fmt: skip


def test_a_busy_recipient_waits_until_the_oldest_counted_send_leaves_the_window() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    sends = [now - timedelta(minutes=50), now - timedelta(minutes=10)]
    until = domain.rate_limited_until(sends, now, limit=2, window=timedelta(hours=1))
    assert until == now + timedelta(minutes=10)
    assert domain.rate_limited_until(sends[1:], now, limit=2, window=timedelta(hours=1)) is None


def test_a_digest_goes_out_at_the_digest_hour_of_the_next_local_day() -> None:
    someone = contact(digest=True)
    day = date(2026, 3, 10)
    assert not domain.digest_due(shanghai(23, 0, day=10), someone, day, 8)
    assert not domain.digest_due(shanghai(7, 59, day=11), someone, day, 8)
    assert domain.digest_due(shanghai(8, 0, day=11), someone, day, 8)
    assert domain.digest_day(shanghai(0, 30, day=11), someone) == date(2026, 3, 11)


def test_a_digest_numbers_its_lines() -> None:
    subject, body = domain.compose_digest(date(2026, 3, 10), ["甲", "乙"], "zh-CN")
    assert "共 2 条" in subject
    assert body.splitlines()[1:] == ["1. 甲", "2. 乙"]


def test_the_signature_matches_an_independent_hmac() -> None:
    body = b'{"id":"e1"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signing.signature("s3cret", 1700000000, body) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://bureau.example/hook", True),
        ("http://127.0.0.1:9000/hook", True),
        ("http://localhost/hook", True),
        ("http://bureau.example/hook", False),
        ("ftp://127.0.0.1/hook", False),
        ("not a url", False),
    ],
)
def test_urls_must_be_https_except_http_to_loopback_when_allowed(url: str, allowed: bool) -> None:
    if allowed:
        check_url(url, allow_http_loopback=True)
    else:
        with pytest.raises(UnsafeUrl):
            check_url(url, allow_http_loopback=True)


def test_http_to_loopback_is_refused_without_the_flag() -> None:
    with pytest.raises(UnsafeUrl):
        check_url("http://127.0.0.1:9000/hook", allow_http_loopback=False)


def test_the_seeded_rules_tell_the_reporter_and_flag_an_urgent_report_to_the_cell() -> None:
    rules, seeded = load_seed(SEED_FILE)
    by_id = {t.id: t for t in seeded}
    data = {
        "incident_id": "INC-1",
        "grid_cell": "g1",
        "urgency": "urgent",
        "category": {"code": "safety_hazard", "name_zh": "安全隐患"},
    }
    planned = domain.plan(rules, event_id="e1", event_type=REPORTED, subject="INC-1", data=data)
    assert [p.audience for p in planned] == ["reporter", "grid_worker"]
    texts = [templates.render(by_id[p.template], data, "zh-CN")[1] for p in planned]
    assert texts[1].startswith("【紧急】")
    assert all("INC-1" in text for text in texts)


def test_settings_read_the_configs_strings_and_default_the_rest() -> None:
    settings = Settings.from_config(
        {
            "NOTIFY_SUBSCRIPTION_RETRY_HORIZON_SECONDS": "4",
            "NOTIFY_RETRY_BASE_SECONDS": "0.2",
            "NOTIFY_DEFAULT_CHANNELS": "log,webhook",
            "NOTIFY_RATE_LIMIT": "",
        }
    )
    assert settings.subscription_retry.horizon_seconds == 4
    assert settings.retry.base_seconds == 0.2
    assert settings.retry.horizon_seconds == 6 * 3600
    assert settings.default_channels == ("log", "webhook")
    assert settings.rate_limit == 20
    assert settings.concurrency == 8


@pytest.mark.parametrize("value", ["0", 0, "-2", "eight", "1.5", 1.5, True])
def test_a_delivery_concurrency_below_one_or_not_a_whole_number_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"NOTIFY_DELIVERY_CONCURRENCY must be a whole number"):
        Settings.from_config({"NOTIFY_DELIVERY_CONCURRENCY": value})


def test_due_deliveries_share_a_lane_per_recipient_in_their_order() -> None:
    due = [
        {"_id": "d1", "recipient": "grid_worker:qy-01"},
        {"_id": "d2", "recipient": "reporter-of:INC-1", "resolved": "resident-7"},
        {"_id": "d3", "recipient": "grid_worker:qy-02"},
        {"_id": "d4", "recipient": "grid_worker:qy-01"},
        {"_id": "d5", "recipient": "reporter-of:INC-2", "resolved": "resident-7"},
        {"_id": "d6", "recipient": "reporter-of:INC-3"},
    ]
    lanes = [[d["_id"] for d in lane] for lane in by_recipient(due)]
    assert lanes == [["d1", "d4"], ["d2", "d5"], ["d3"], ["d6"]]


def test_a_volunteer_offer_goes_to_that_volunteer_at_once_and_a_session_to_the_parties() -> None:
    rules, _ = load_seed(SEED_FILE)
    offer = domain.plan(
        rules, event_id="e2", event_type="shequ.volunteer.task.offered", subject="VT-1",
        data={"task_id": "VT-1", "volunteer_id": "vol-7", "grid_cell": "qy-01", "kind": "visit",
              "community": "hx-qingyuan", "deadline": "2026-11-23T12:00:00+00:00"},
    )  # fmt: skip
    assert [(p.recipient, p.urgency) for p in offer] == [("vol-7", "immediate")]
    session = domain.plan(
        rules, event_id="e3", event_type="shequ.mediation.case.session_scheduled",
        subject="MED-1", data={"case_id": "MED-1", "community": "hx-qingyuan"},
    )  # fmt: skip
    assert [p.recipient for p in session] == ["mediation_parties:MED-1"]
