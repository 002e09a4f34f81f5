import json
from pathlib import Path

import pytest

from shequ.auth import verify_token
from shequ.cli import main


def test_token_mints_a_verifiable_token_from_the_data_dirs_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_JWT_SECRET", raising=False)
    (tmp_path / "jwt-secret").write_text("k" * 48)
    args = ["token", "--data-dir", str(tmp_path), "--role", "grid_worker", "--sub", "gw-7"]
    assert main([*args, "--community", "c1", "--community", "c2"]) == 0
    identity = verify_token(capsys.readouterr().out.strip(), secret="k" * 48)
    assert identity.sub == "gw-7" and identity.communities == ("c1", "c2")


def test_token_mints_a_bureau_clients_scopes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_JWT_SECRET", raising=False)
    (tmp_path / "jwt-secret").write_text("k" * 48)
    args = ["token", "--data-dir", str(tmp_path), "--role", "bureau", "--sub", "civil-affairs"]
    assert main([*args, "--scope", "notify.subscriptions", "--scope", "grid.incidents"]) == 0
    identity = verify_token(capsys.readouterr().out.strip(), secret="k" * 48)
    assert identity.scopes == frozenset({"notify.subscriptions", "grid.incidents"})


def test_token_without_a_secret_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_JWT_SECRET", raising=False)
    assert main(["token", "--data-dir", str(tmp_path), "--role", "resident"]) == 2
    assert "run `shequ up" in capsys.readouterr().err


def test_token_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--role", "emperor"])
    assert "invalid choice: 'emperor'" in capsys.readouterr().err


def test_deadletters_without_a_running_stack_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_AMQP_URI", raising=False)
    assert main(["deadletters", "list", "grid", "--data-dir", str(tmp_path)]) == 2
    assert "no running stack found" in capsys.readouterr().err


def test_apikey_add_without_a_running_stack_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_MONGO_URI", raising=False)
    assert main(["apikey", "add", "wechat-miniapp", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "no running stack found" in captured.err and "SHEQU_MONGO_URI" in captured.err
    assert captured.out == ""


def test_apikey_add_refuses_a_name_that_is_not_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_MONGO_URI", raising=False)
    assert main(["apikey", "add", "my app", "--data-dir", str(tmp_path)]) == 2
    assert "a client name is 1 to 64 letters" in capsys.readouterr().err


def test_apikey_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["apikey"])
    assert "add" in capsys.readouterr().err


def test_token_carries_a_declared_purpose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEQU_JWT_SECRET", raising=False)
    (tmp_path / "jwt-secret").write_text("k" * 48)
    args = ["token", "--data-dir", str(tmp_path), "--role", "community_staff"]
    assert main([*args, "--purpose", "casework"]) == 0
    assert verify_token(capsys.readouterr().out.strip(), secret="k" * 48).purpose == "casework"


def test_openapi_prints_a_services_document_without_a_running_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["openapi", "grid"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["info"]["title"] == "Shequ grid API"
    assert "/api/v1/grid/incidents" in document["paths"]


def test_openapi_of_an_unknown_service_names_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["openapi", "nosuch"]) == 2
    assert "known: disclosure, grid" in capsys.readouterr().err


def test_init_without_servers_says_which_variable_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHEQU_AMQP_URI", "amqp://guest:guest@127.0.0.1:1/")
    monkeypatch.delenv("SHEQU_MONGO_URI", raising=False)
    assert main(["init", "--data-dir", str(tmp_path)]) == 2
    assert "set SHEQU_MONGO_URI" in capsys.readouterr().err


def test_init_refuses_an_unknown_service_before_touching_any_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHEQU_AMQP_URI", "amqp://guest:guest@127.0.0.1:1/")
    monkeypatch.setenv("SHEQU_MONGO_URI", "mongodb://127.0.0.1:1/")
    assert main(["init", "--service", "nosuch"]) == 1
    assert "unknown service 'nosuch'" in capsys.readouterr().err


def test_the_printed_endpoints_mask_passwords_and_keep_the_rest() -> None:
    from shequ.cli import _without_password

    masked = _without_password("mongodb://shequ-admin:s3cret@127.0.0.1:2701/?authSource=admin")
    assert masked == "mongodb://shequ-admin:***@127.0.0.1:2701/?authSource=admin"
    assert _without_password("amqp://127.0.0.1:5672/") == "amqp://127.0.0.1:5672/"
