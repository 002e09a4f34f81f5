"""Who may hold a service's relay lease: the pure rules behind ``OutboxRelay.holds_lease``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from shequ.outbox import holder_gone, lease_free, process_identity

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
HERE = process_identity()


def never_gone(holder: dict) -> bool:
    return False


def always_gone(holder: dict) -> bool:
    return True


def lease(owner: str, until: datetime, **holder: object) -> dict:
    return {"_id": "relay", "owner": owner, "until": until, **holder}


def test_a_lease_no_one_holds_is_free() -> None:
    assert lease_free(None, owner="me", now=NOW, gone=never_gone)


def test_a_relay_keeps_its_own_lease() -> None:
    assert lease_free(
        lease("me", NOW + timedelta(seconds=20)), owner="me", now=NOW, gone=never_gone
    )


def test_another_relays_running_lease_is_not_free() -> None:
    held = lease("other", NOW + timedelta(seconds=20))
    assert not lease_free(held, owner="me", now=NOW, gone=never_gone)


def test_a_lease_that_has_run_out_is_free() -> None:
    assert lease_free(lease("other", NOW), owner="me", now=NOW, gone=never_gone)
    # As the store gives it back: naive, in UTC.
    naive = (NOW - timedelta(seconds=1)).replace(tzinfo=None)
    assert lease_free(lease("other", naive), owner="me", now=NOW, gone=never_gone)


def test_the_lease_of_a_process_that_has_ended_is_free_before_it_runs_out() -> None:
    held = lease("other", NOW + timedelta(hours=1))
    assert lease_free(held, owner="me", now=NOW, gone=always_gone)


def test_this_process_is_not_gone() -> None:
    assert HERE["pid"] == os.getpid()
    assert not holder_gone(dict(HERE), HERE)


def test_a_process_of_another_host_is_never_known_to_be_gone() -> None:
    elsewhere = {**HERE, "host": f"not-{HERE['host']}", "pid": 2**22 + 1}
    assert not holder_gone(elsewhere, HERE)


def test_a_process_that_has_exited_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    holder = process_identity(child.pid)
    assert not holder_gone(holder, HERE)
    child.communicate(b"")
    assert holder_gone(holder, HERE)


def test_a_later_process_given_the_same_id_is_not_the_holder() -> None:
    # A container restarted in the same pod: same host, same pid, started later.
    assert HERE["started"] is not None, "the platform runs on Linux, where /proc tells"
    earlier = {**HERE, "started": HERE["started"] - 1}
    assert holder_gone(earlier, HERE)
