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


def test_the_mediation_dev_keys_are_generated_once_per_data_directory_and_usable(
    tmp_path: Path,
) -> None:
    from shequ_services.mediation.sealing import Keyring

    first = Stack(tmp_path).mediation_keys()
    assert Stack(tmp_path).mediation_keys() == first
    (tmp_path / "other").mkdir()
    assert Stack(tmp_path / "other").mediation_keys() != first
    ring = Keyring.from_config(
        first["SHEQU_MEDIATION_KEYS"],
        first["SHEQU_MEDIATION_ACTIVE_KEY"],
        first["SHEQU_MEDIATION_INDEX_KEY"],
    )
    assert ring.active == "dev1"
