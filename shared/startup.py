"""Start-up steps that wait for a server that is away instead of exiting.

A service process often starts while a server it needs is restarting: a
MongoDB node failing over, RabbitMQ rescheduled onto another node, a whole
stack brought up at once. Exiting on the first refused connection only puts
the process back into the same wait after its supervisor restarts it, and
the supervisor counts a crash. So a start-up step that fails because the
server cannot be reached is run again with a back-off, for a bounded time,
and only then does the process give up, with the last error.

Every step must be safe to run twice: indexes are ensured, seeds look
before they write, broker entities are found before they are declared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Set by the runner when the process is asked to stop: every start-up wait ends at once.
SHUTDOWN = threading.Event()

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 5.0


class ServerAway(RuntimeError):
    """A server stayed unreachable through a start-up step's whole wait, or the
    process was told to stop while it waited."""


def wait_through(
    step: Callable[[], T],
    *,
    away: Callable[[Exception], bool],
    server: str,
    what: str,
    timeout: float,
    stopping: threading.Event | None = None,
) -> T:
    """``step()``, run again while it fails because ``server`` is away (``away(exc)``).

    Waits 0.5 s after the first failure, doubling up to 5 s, and raises
    ``ServerAway`` once ``timeout`` seconds have gone, or at once when
    ``stopping`` (or the process-wide ``SHUTDOWN``) is set. Any other
    failure is raised as it is. One warning per attempt says what waits
    for what; it names the exception's type, never its message, which may
    carry a URI.
    """
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return step()
        except Exception as exc:
            if not away(exc) or _asked_to_stop(stopping):
                raise
            if time.monotonic() + delay > deadline:
                raise ServerAway(
                    f"{server} did not answer for {timeout:g} s while {what}: {type(exc).__name__}"
                ) from exc
            log.warning(
                "%s is not reachable while %s, trying again in %.1f s: %s",
                server, what, delay, type(exc).__name__,
            )  # fmt: skip
        if _wait(delay, stopping):
            raise ServerAway(f"stopped while {what}, waiting for {server}")
        delay = min(delay * 2, MAX_DELAY_SECONDS)


def _asked_to_stop(stopping: threading.Event | None) -> bool:
    return SHUTDOWN.is_set() or (stopping is not None and stopping.is_set())


def _wait(seconds: float, stopping: threading.Event | None) -> bool:
    """Sleep ``seconds`` in short steps; whether a stop was asked for meanwhile."""
    deadline = time.monotonic() + seconds
    while not _asked_to_stop(stopping):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        (stopping or SHUTDOWN).wait(min(left, 0.1))
    return True
