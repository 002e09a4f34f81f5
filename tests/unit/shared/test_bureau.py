"""Bureau provisioning's pure parts: names, event patterns and the permission regexes."""

from __future__ import annotations

import re

import pytest

from shequ.bureau import BureauError, check_name, management_from, parse_pattern, permissions


def test_a_pattern_may_name_one_event_or_use_a_wildcard_word() -> None:
    assert parse_pattern("shequ.grid.incident.reported").routing_key == "incident.reported"
    assert parse_pattern("grid.incident.*").routing_key == "incident.*"
    assert parse_pattern("grid.*").routing_key == "*.*"


@pytest.mark.parametrize(
    "text", ["grid", "grid.#", "*.incident.reported", "grid.Incident.x", "a.b.c.d"]
)
def test_a_malformed_pattern_is_refused(text: str) -> None:
    with pytest.raises(BureauError, match="bad event pattern"):
        parse_pattern(text)


def test_a_pattern_matching_no_registered_event_is_refused() -> None:
    with pytest.raises(BureauError, match="matches no known event type"):
        parse_pattern("grid.incident.vanished")


@pytest.mark.parametrize("name", ["a", "Civil", "civil.affairs", "civil_affairs", "1st", "x" * 40])
def test_a_bad_bureau_name_is_refused(name: str) -> None:
    with pytest.raises(BureauError, match="bad bureau name"):
        check_name(name)


def test_the_regexes_admit_only_the_bureaus_queues_and_allowed_exchanges() -> None:
    perms = permissions(
        "civil", [parse_pattern("grid.incident.*"), parse_pattern("mediation.case.closed")]
    )
    configure, write, read = (re.compile(perms[k]) for k in ("configure", "write", "read"))
    assert configure.match("bureau.civil.events") and write.match("bureau.civil.events")
    for resource in ("bureau.civilx.events", "bureau.other.events", "grid.events", "amq.default"):
        assert not configure.match(resource) and not write.match(resource), resource
    assert read.match("grid.events") and read.match("mediation.events")
    assert read.match("bureau.civil.events")
    for resource in ("notify.events", "evt-grid-incident.reported--notify.on_incident_reported"):
        assert not read.match(resource), resource


def test_topic_permissions_admit_only_the_patterns_routing_keys() -> None:
    perms = permissions(
        "civil", [parse_pattern("grid.incident.*"), parse_pattern("mediation.case.closed")]
    )
    topics = {t["exchange"]: re.compile(t["read"]) for t in perms["topics"]}
    assert topics["grid.events"].match("incident.reported")
    assert topics["grid.events"].match("incident.*")
    assert not topics["grid.events"].match("#")
    assert topics["mediation.events"].match("case.closed")
    assert not topics["mediation.events"].match("case.*")


def test_the_admin_credentials_come_from_the_management_url_or_the_amqp_uri() -> None:
    management, vhost = management_from(
        "http://127.0.0.1:15672", "amqp://ops:pw@127.0.0.1:5672/prod"
    )
    assert vhost == "prod" and "pw" not in management.url
    _, vhost = management_from("http://a:b@127.0.0.1:15672", "amqp://ops:pw@127.0.0.1:5672/")
    assert vhost == "/"


def test_the_printed_uri_keeps_the_vhost_and_takes_the_public_address() -> None:
    from shequ.bureau import uri_with

    admin = "amqp://ops:pw@10.0.0.5:5672/shequ"
    assert (
        uri_with(admin, "bureau-civil", "s/cret")
        == "amqp://bureau-civil:s%2Fcret@10.0.0.5:5672/shequ"
    )
    assert (
        uri_with(admin, "bureau-civil", "x", "amqps://mq.district.example:5671")
        == "amqps://bureau-civil:x@mq.district.example:5671/shequ"
    )
