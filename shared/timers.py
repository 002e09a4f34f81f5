"""Timer entrypoints whose interval is configuration, not code.

nameko's ``timer`` takes its interval at decoration time; a deadline scan must
run every few seconds in tests and every half minute in production, so the
interval is read from the service config in ``setup()``.
"""

from __future__ import annotations

from typing import Any

from nameko.timer import Timer


class ConfiguredTimer(Timer):
    def __init__(self, config_key: str, default_seconds: float, **kwargs: Any) -> None:
        self.config_key = config_key
        super().__init__(interval=default_seconds, **kwargs)

    def setup(self) -> None:
        self.interval = float(self.container.config.get(self.config_key) or self.interval)
        super().setup()


timer = ConfiguredTimer.decorator


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
