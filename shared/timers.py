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
