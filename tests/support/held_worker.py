"""A test-only service whose one worker is held by a timer until the test lets it go.

With ``max_workers`` at 1 every entrypoint that needs a worker waits while the
timer holds it, as every one does in a service whose handlers are all busy.
The timer writes ``HELD_WORKER_DIR/held`` when it starts holding and returns
once ``HELD_WORKER_DIR/release`` exists (or after a bound, so a failed test
does not leave a process stuck).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shequ.service import PlatformService
from shequ.timers import timer

HOLD_AT_MOST_SECONDS = 120.0


class HeldWorkerService(PlatformService):
    name = "heldworker"

    @timer("HELD_WORKER_INTERVAL_SECONDS", 0.1)
    def hold(self) -> None:
        directory = Path(os.environ["HELD_WORKER_DIR"])
        (directory / "held").touch()
        deadline = time.monotonic() + HOLD_AT_MOST_SECONDS
        while not (directory / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
