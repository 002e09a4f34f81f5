"""``free_port``: free loopback ports, outside the range outgoing connections take theirs from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shequ import embedded
from shequ.embedded import PORT_RANGE, EmbeddedError, _free_ports, free_port


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_can_be_bound() -> None:
    port = free_port()
    assert port in PORT_RANGE
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ranges.exists():
        assert port < int(ranges.read_text().split()[0])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_ports_asked_for_together_are_distinct_and_none_of_the_excluded() -> None:
    taken = {free_port() for _ in range(3)}
    ports = _free_ports(5, exclude=taken)
    assert len(set(ports)) == 5
    assert not taken & set(ports)


def test_a_port_in_use_is_passed_over_and_an_exhausted_range_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        busy = held.getsockname()[1]
        monkeypatch.setattr(embedded, "PORT_RANGE", range(busy, busy + 1))
        with pytest.raises(EmbeddedError, match=f"no 1 free ports on 127.0.0.1 between {busy}"):
            free_port()
