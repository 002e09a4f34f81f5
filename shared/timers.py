"""Timer entrypoints whose interval is configuration, not code.

nameko's ``timer`` takes its interval at decoration time; a deadline scan must
run every few seconds in tests and every half minute in production, so the
interval is read from the service config in ``setup()``.
"""

from __future__ import annotations

from typing import Any

from eventlet import Timeout
from eventlet.event import Event
from nameko.timer import Timer


class ConfiguredTimer(Timer):
    def __init__(self, config_key: str, default_seconds: float, **kwargs: Any) -> None:
        self.config_key = config_key
        super().__init__(interval=default_seconds, **kwargs)

    def setup(self) -> None:
        self.interval = float(self.container.config.get(self.config_key) or self.interval)
        super().setup()


timer = ConfiguredTimer.decorator


class WakeableTimer(ConfiguredTimer):
    """A configured timer that its service can also fire at once (``wake``).

    For work that events create: notify's handler records who is to be told,
    and its delivery timer tells them. On the timer's tick alone a
    notification waited up to the interval (2 s) after it was recorded; woken
    by the handler's commit it leaves at once, and the tick still finds what
    comes due later (a retry, the end of quiet hours). Wakes while a pass
    runs are one wake: the next pass starts when this one ends, and finds
    everything they were for. The interval counts from the end of the last
    pass, not on a fixed schedule as nameko's timer does.
    """

    def setup(self) -> None:
        super().setup()
        self._woken = Event()

    def wake(self) -> None:
        if not self._woken.ready():
            self._woken.send(True)

    def stop(self) -> None:
        self.should_stop.send(True)
        self.wake()
        self.gt.wait()

    def _run(self) -> None:
        while not self.should_stop.ready():
            with Timeout(self.interval, exception=False):
                self._woken.wait()
            if self._woken.ready():
                self._woken.reset()
            if self.should_stop.ready():
                break
            self.handle_timer_tick()
            self.worker_complete.wait()
            self.worker_complete.reset()


wakeable_timer = WakeableTimer.decorator


def wake_timers(container: Any) -> None:
    """Fire every ``WakeableTimer`` of ``container`` now (``WakeableTimer`` says why)."""
    for entrypoint in container.entrypoints:
        if isinstance(entrypoint, WakeableTimer):
            entrypoint.wake()


def container_stopping(container: Any) -> bool:
    """Whether ``container`` is stopping: its timers have been told to stop.

    nameko stops entrypoints first and then waits for running workers, so a
    timer's worker that loops over a batch (notify's delivery worker) asks
    this between items and leaves the rest for the next process, instead of
    holding the shutdown until the runner kills it.
    """
    return any(
        isinstance(entrypoint, Timer) and entrypoint.should_stop.ready()
        for entrypoint in container.entrypoints
    )
