"""``shequ.startup.wait_through``, and when the broker counts as away: pure logic."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import amqp.exceptions
import kombu.exceptions
import pytest

from shequ import startup
from shequ.events import broker_away


class Away(Exception):
    pass


@pytest.fixture(autouse=True)
def short_delays(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(startup, "FIRST_DELAY_SECONDS", 0.001)
    monkeypatch.setattr(startup, "MAX_DELAY_SECONDS", 0.002)
    yield
    startup.SHUTDOWN.clear()


def failing(times: int, error: Exception, result: str = "done") -> tuple[list[int], object]:
    calls: list[int] = []

    def step() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return calls, step


def wait(step: object, timeout: float = 30.0, **kwargs: object) -> object:
    return startup.wait_through(
        step,  # type: ignore[arg-type]
        away=lambda exc: isinstance(exc, Away),
        server="the server",
        what="doing a step",
        timeout=timeout,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_step_is_run_again_while_its_server_is_away(caplog: pytest.LogCaptureFixture) -> None:
    calls, step = failing(3, Away("refused"))
    assert wait(step) == "done"
    assert len(calls) == 4
    waits = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(waits) == 3
    assert waits[0].startswith("the server is not reachable while doing a step")
    assert "refused" not in waits[0]  # the type only: a message may carry a URI


def test_any_other_failure_is_raised_at_once() -> None:
    calls, step = failing(1, ValueError("wrong"))
    with pytest.raises(ValueError, match="wrong"):
        wait(step)
    assert len(calls) == 1


def test_a_server_away_for_the_whole_wait_stops_the_start_with_the_last_error() -> None:
    calls, step = failing(10**9, Away("refused"))
    with pytest.raises(startup.ServerAway, match="did not answer for 0.05 s while doing") as info:
        wait(step, timeout=0.05)
    assert isinstance(info.value.__cause__, Away)
    assert len(calls) >= 2


@pytest.mark.parametrize("process_wide", [False, True])
def test_a_stop_ends_the_wait(process_wide: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "FIRST_DELAY_SECONDS", 60.0)
    monkeypatch.setattr(startup, "MAX_DELAY_SECONDS", 60.0)
    stopping = threading.Event()
    calls, step = failing(10**9, Away("refused"))
    stopper = threading.Timer(0.05, (startup.SHUTDOWN if process_wide else stopping).set)
    stopper.start()
    try:
        with pytest.raises(startup.ServerAway, match="stopped while doing a step"):
            wait(step, timeout=600, stopping=stopping)
    finally:
        stopper.cancel()
    assert len(calls) == 1


def test_a_stop_already_asked_for_raises_the_failure_itself() -> None:
    startup.SHUTDOWN.set()
    calls, step = failing(1, Away("refused"))
    with pytest.raises(Away):
        wait(step)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (kombu.exceptions.OperationalError("[Errno 111] Connection refused"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (amqp.exceptions.ConnectionForced("shutdown"), True),
        (amqp.exceptions.AccessRefused("login refused"), False),
        (amqp.exceptions.NotFound("no exchange"), False),
        (RuntimeError("the topology is missing"), False),
    ],
)
def test_the_broker_is_away_when_it_cannot_be_reached_not_when_it_refuses(
    error: Exception, away: bool
) -> None:
    assert broker_away(error) is away
