import json
from datetime import UTC, datetime

import pytest

from shequ.contracts import REGISTRY, EnvelopeError, new_event, parse_event
from shequ.contracts import grid as grid_events

PAYLOAD = {
    "incident_id": "INC-1",
    "category": {
        "code": "alley_unclean",
        "name_zh": "背街小巷不洁",
        "opens_mediation": False,
        "volunteer_task": True,
        "sensitive": False,
    },
    "community": "c1",
    "grid_cell": "g1",
    "channel": "patrol",
    "urgency": "simple",
    "reported_at": datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
}


def event_body(**overrides: object) -> dict:
    event = new_event(
        grid_events.INCIDENT_REPORTED_V1, district="d1", subject="INC-1", sequence=1, data=PAYLOAD
    )
    body = json.loads(json.dumps(event.to_json_dict()))
    body.update(overrides)
    return body


def test_an_event_has_the_cloudevents_attributes_of_the_contract() -> None:
    body = event_body()
    assert body["specversion"] == "1.0"
    assert body["type"] == "shequ.grid.incident.reported"
    assert body["source"] == "/shequ/d1/grid"
    assert body["dataschema"] == "urn:shequ:schema:grid.incident.reported:v1"
    assert body["sequence"] == 1


def test_fields_outside_the_contract_are_never_published() -> None:
    event = new_event(
        grid_events.INCIDENT_REPORTED_V1,
        district="d1",
        subject="INC-1",
        sequence=1,
        data={**PAYLOAD, "reporter_phone": "13800000000", "description": "张三"},
    )
    assert "reporter_phone" not in json.dumps(event.to_json_dict(), ensure_ascii=False)
    assert "张三" not in json.dumps(event.to_json_dict(), ensure_ascii=False)


def test_a_payload_missing_a_required_field_is_refused_at_the_producer() -> None:
    with pytest.raises(EnvelopeError, match="community"):
        new_event(
            grid_events.INCIDENT_REPORTED_V1,
            district="d1",
            subject="INC-1",
            sequence=1,
            data={k: v for k, v in PAYLOAD.items() if k != "community"},
        )


def test_a_parsed_event_round_trips_its_payload() -> None:
    event = parse_event(event_body())
    assert event.data["reported_at"] == PAYLOAD["reported_at"]
    assert event.spec is grid_events.INCIDENT_REPORTED_V1


def test_unknown_payload_fields_from_a_newer_producer_are_ignored() -> None:
    body = event_body()
    body["data"]["added_later"] = 1
    assert "added_later" not in parse_event(body).data


@pytest.mark.parametrize(
    "overrides",
    [{"specversion": "0.3"}, {"id": "not-a-uuid"}, {"dataschema": "urn:shequ:schema:x:v9"}],
)
def test_a_broken_envelope_is_an_envelope_error(overrides: dict) -> None:
    with pytest.raises(EnvelopeError):
        parse_event(event_body(**overrides))


def test_a_body_that_is_not_an_object_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError):
        parse_event(["not", "an", "event"])


def test_every_registered_type_follows_the_naming_contract() -> None:
    for spec in REGISTRY.all():
        assert spec.type == f"shequ.{spec.service}.{spec.name}"
        entity, verb = spec.name.split(".")
        assert entity.isidentifier()
        assert verb.endswith("ed") or verb in {"sent", "overdue"}, f"{spec.name}: not past tense"
