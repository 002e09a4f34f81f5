"""A handler that keeps failing: retries with back-off, then the dead-letter queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pika
import pytest
import requests

from shequ.cli import main as shequ
from shequ.contracts import new_event
from shequ.deadletters import list_dead_letters
from shequ.stack import Stack
from tests.conftest import Servers, stack_on, wait_for
from tests.support.flaky import THING_HAPPENED_V1

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def flaky(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = stack_on(
        servers, tmp_path_factory.mktemp("flaky"), services=["tests.support.flaky:FlakyService"]
    )
    stack.start()
    yield stack
    stack.stop()


def publish(servers: Servers, body: bytes, message_id: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(servers.amqp_uri))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        "testsource.events",
        "thing.happened",
        body,
        pika.BasicProperties(
            content_type="application/cloudevents+json", delivery_mode=2, message_id=message_id
        ),
    )
    connection.close()


def thing(servers: Servers, thing_id: str, poison: bool) -> str:
    event = new_event(
        THING_HAPPENED_V1,
        district="test",
        subject=thing_id,
        sequence=1,
        data={"thing_id": thing_id, "poison": poison},
    )
    publish(servers, json.dumps(event.to_json_dict()).encode(), event.id)
    return event.id


def db(stack: Stack, servers: Servers):  # type: ignore[no-untyped-def]
    prefix = stack.extra_env["SHEQU_MONGO_DATABASE_PREFIX"]
    return servers.mongo()[f"{prefix}flaky"]


def handled(stack: Stack, servers: Servers) -> set[str]:
    return {doc["thing_id"] for doc in db(stack, servers)["handled"].find()}


def test_a_failing_event_is_retried_then_dead_lettered_while_the_next_is_handled(
    flaky: Stack, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    db(flaky, servers)["switch"].replace_one({"_id": "switch"}, {"fail_poison": True}, upsert=True)
    poison_id = thing(servers, "poison-1", poison=True)
    thing(servers, "good-1", poison=False)

    wait_for(lambda: "good-1" in handled(flaky, servers), what="the good event to be handled")
    letters = wait_for(
        lambda: [
            letter
            for letter in list_dead_letters(servers.amqp_uri, "flaky")
            if letter.message_id == poison_id
        ],
        what="the poison event in flaky.dead-letters",
    )
    assert letters[0].attempts == 3  # the first try and two retries
    assert "RuntimeError: refusing poison thing poison-1" in (letters[0].error or "")
    assert letters[0].queue == "evt-testsource-thing.happened--flaky.on_thing_happened"
    assert "poison-1" not in handled(flaky, servers)

    metrics = requests.get(f"{flaky.processes['flaky'].url}/metrics", timeout=10).text
    assert (
        'shequ_dead_letters_total{event_type="thing.happened",handler="on_thing_happened",'
        'reason="retries_exhausted",service="flaky"} 1.0' in metrics
    )
    assert (
        'shequ_event_retries_total{event_type="thing.happened",handler="on_thing_happened",'
        'service="flaky"} 2.0' in metrics
    )

    # The operator fixes the cause and replays: the event is handled once.
    db(flaky, servers)["switch"].replace_one({"_id": "switch"}, {"fail_poison": False})
    monkeypatch.setenv("SHEQU_AMQP_URI", servers.amqp_uri)
    assert shequ(["dlq", "replay", "flaky", "--id", poison_id]) == 0
    wait_for(lambda: "poison-1" in handled(flaky, servers), what="the replayed event")
    assert list_dead_letters(servers.amqp_uri, "flaky") == []


def test_a_malformed_event_goes_to_dead_letters_without_retries(
    flaky: Stack, servers: Servers
) -> None:
    message_id = str(uuid.uuid4())
    publish(servers, json.dumps({"specversion": "1.0", "type": "nonsense"}).encode(), message_id)
    letters = wait_for(
        lambda: [
            letter
            for letter in list_dead_letters(servers.amqp_uri, "flaky")
            if letter.message_id == message_id
        ],
        what="the malformed event in flaky.dead-letters",
    )
    assert letters[0].attempts == 1
    assert "PoisonMessage" in (letters[0].error or "")
