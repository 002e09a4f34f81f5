"""Fault-injection points: a process dies exactly where the fault suite asks it to.

A real ``kill -9`` lands wherever the process happens to be; the interesting
places (inside a handler's transaction, after its commit but before the
broker's ack, between the relay's publish and its mark) are too short to hit
by timing. So the runtime names those places and, when ``SHEQU_FAULTS``
arms one, the process ends there with ``os._exit(137)``: no cleanup, no
flush, no ack, as after SIGKILL.

``SHEQU_FAULTS`` is a comma-separated list of ``service:point=N`` (the N-th
time that service's process reaches the point). ``SHEQU_FAULTS_DIR`` holds
one marker file per fault that fired, so a restarted process does not fire
it again and the test can see that it did fire. Unset, every point is one
dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = ("before_handler", "in_transaction", "after_commit", "relay_after_publish")

_lock = threading.Lock()
_reached: dict[str, int] = {}
_armed: dict[str, dict[str, int]] | None = None


def armed(value: str | None = None) -> dict[str, dict[str, int]]:
    """``{service: {point: n}}`` from ``SHEQU_FAULTS`` (or ``value``)."""
    spec: dict[str, dict[str, int]] = {}
    text = os.environ.get("SHEQU_FAULTS", "") if value is None else value
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, _, count = item.partition("=")
        service, _, point = target.partition(":")
        if point not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"SHEQU_FAULTS: {item!r} is not service:point=N with a point of "
                             f"{', '.join(POINTS)}")  # fmt: skip
        spec.setdefault(service, {})[point] = int(count)
    return spec


def fault_point(service: str, point: str) -> None:
    """End the process here if the fault suite armed this point for this service."""
    global _armed
    if _armed is None:
        _armed = armed()
    wanted = _armed.get(service, {}).get(point)
    if wanted is None:
        return
    with _lock:
        _reached[point] = _reached.get(point, 0) + 1
        if _reached[point] != wanted or not _claim(service, point):
            return
    log.warning("fault injection: %s dies at %s (reached %d times)", service, point, wanted)
    os._exit(137)


def fired(directory: Path, service: str, point: str) -> bool:
    return (directory / f"{service}-{point}").exists()


def _claim(service: str, point: str) -> bool:
    """Fire each fault once per stack, however often the process restarts."""
    directory = os.environ.get("SHEQU_FAULTS_DIR")
    if not directory:
        return True
    try:
        descriptor = os.open(
            Path(directory) / f"{service}-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY
        )
    except FileExistsError:
        return False
    os.close(descriptor)
    return True
