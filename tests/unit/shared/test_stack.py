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
