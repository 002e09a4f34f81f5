"""``WakeableTimer``: fired by a wake at once, by its interval otherwise, and stopped cleanly.

A real nameko container with a timer-only service (no broker needed): the
timer's loop is the code under test, so it runs as nameko runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import eventlet
import pytest
from nameko.containers import ServiceContainer

from shequ.timers import WakeableTimer, wake_timers, wakeable_timer

TICKS: list[float] = []


class Ticking:
    name = "ticking"

    @wakeable_timer("TICK_SECONDS", 3600)
    def tick(self) -> None:
        TICKS.append(time.monotonic())


def eventually(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Yield to the container's green threads until ``condition`` holds or time is up."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        eventlet.sleep(0.01)
    return True


def run(config: dict[str, Any]) -> Iterator[ServiceContainer]:
    TICKS.clear()
    container = ServiceContainer(Ticking, config)
    container.start()
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture
def hour_timer() -> Iterator[ServiceContainer]:
    yield from run({"TICK_SECONDS": 3600})


@pytest.fixture
def quick_timer() -> Iterator[ServiceContainer]:
    yield from run({"TICK_SECONDS": 0.05})


def test_a_wake_fires_the_timer_long_before_its_interval(hour_timer: ServiceContainer) -> None:
    eventlet.sleep(0.05)
    assert TICKS == []
    wake_timers(hour_timer)
    assert eventually(lambda: len(TICKS) == 1)


def test_wakes_during_a_pass_make_one_more_pass_not_one_each(
    hour_timer: ServiceContainer,
) -> None:
    timer = next(e for e in hour_timer.entrypoints if isinstance(e, WakeableTimer))
    for _ in range(5):
        timer.wake()
    assert eventually(lambda: len(TICKS) == 1)
    eventlet.sleep(0.1)
    assert len(TICKS) == 1


def test_without_a_wake_the_interval_still_fires_it(quick_timer: ServiceContainer) -> None:
    assert eventually(lambda: len(TICKS) >= 3)


def test_stopping_does_not_wait_for_the_interval() -> None:
    container = ServiceContainer(Ticking, {"TICK_SECONDS": 3600})
    container.start()
    stopper = eventlet.spawn(container.stop)
    assert eventually(lambda: stopper.dead, within=10.0)
