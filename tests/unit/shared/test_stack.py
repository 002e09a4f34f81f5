import socket
from pathlib import Path

import pytest

from shequ.stack import Stack, StackError


def test_a_taken_front_door_port_fails_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=f"127.0.0.1:{port}.*--port"):
            Stack(tmp_path / "data", port=port).start()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("service", ["mediation", "notify", "volunteer"])
def test_each_services_dev_keys_are_generated_once_per_data_directory_and_usable(
    tmp_path: Path, service: str
) -> None:
    from shequ.sealing import Keyring

    first = Stack(tmp_path).field_keys(service)
    assert Stack(tmp_path).field_keys(service) == first
    (tmp_path / "other").mkdir()
    assert Stack(tmp_path / "other").field_keys(service) != first
    prefix = f"SHEQU_{service.upper()}"
    ring = Keyring.from_config(
        first[f"{prefix}_KEYS"],
        first[f"{prefix}_ACTIVE_KEY"],
        first[f"{prefix}_INDEX_KEY"],
        service=service,
    )
    assert ring.active == "dev1"
    others = {s: Stack(tmp_path).field_keys(s) for s in ("mediation", "notify", "volunteer")}
    assert len({keys[k] for s, keys in others.items() for k in keys if k.endswith("_KEYS")}) == 3
