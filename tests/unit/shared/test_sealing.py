"""The shared field encryption: places, rotation, services, blind indexes, old documents."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shequ import sealing


def keyring(active: str = "k1", service: str = "mediation") -> sealing.Keyring:
    keys = f"k1:{sealing.new_key()},k2:{sealing.new_key()}"
    return sealing.Keyring.from_config(keys, active, sealing.new_key(), service=service)


def test_a_sealed_value_opens_only_at_its_own_record_and_field() -> None:
    ring = keyring()
    sealed = ring.seal("张三", record_id="C1", label="parties.P1.name")
    assert "张三" not in json.dumps(sealed, ensure_ascii=False)
    assert ring.unseal(sealed, record_id="C1", label="parties.P1.name") == "张三"
    with pytest.raises(sealing.UnsealError):
        ring.unseal(sealed, record_id="C2", label="parties.P1.name")
    with pytest.raises(sealing.UnsealError):
        ring.unseal(sealed, record_id="C1", label="parties.P2.name")


RING = keyring()


@given(st.text(max_size=200), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_any_text_comes_back_from_its_own_place(value: str, record: str, label: str) -> None:
    sealed = RING.seal(value, record_id=record, label=label)
    assert RING.unseal(sealed, record_id=record, label=label) == value


def test_a_ciphertext_of_one_service_does_not_open_in_another() -> None:
    mediation = keyring(service="mediation")
    volunteer = sealing.Keyring(
        keys=mediation.keys, active="k1", index_key=mediation.index_key, context="shequ.volunteer"
    )
    sealed = mediation.seal("13812345678", record_id="v1", label="phone")
    with pytest.raises(sealing.UnsealError):
        volunteer.unseal(sealed, record_id="v1", label="phone")


def test_a_tampered_or_unknown_key_value_does_not_open() -> None:
    ring = keyring()
    sealed = ring.seal("张三", record_id="C1", label="name")
    flipped = sealed["ct"][:-4] + ("AAAA" if sealed["ct"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(sealing.UnsealError):
        ring.unseal({**sealed, "ct": flipped}, record_id="C1", label="name")
    with pytest.raises(sealing.UnsealError):
        ring.unseal({**sealed, "kid": "k9"}, record_id="C1", label="name")


def test_resealing_moves_every_value_to_the_active_key() -> None:
    old = keyring("k1")
    document = {
        "a": old.seal("x", record_id="C", label="a"),
        "b": [old.seal("y", record_id="C", label="b")],
    }
    new = sealing.Keyring(keys=old.keys, active="k2", index_key=old.index_key)
    resealed = new.reseal(document, record_id="C")
    assert sealing.kids_in(resealed) == {"k2"}
    assert new.unseal(resealed["b"][0], record_id="C", label="b") == "y"
    assert new.stale_kids() == ["k1"]


def test_a_value_mediation_sealed_before_the_helper_was_shared_still_opens() -> None:
    # Written by services/mediation/sealing.py (the module this one replaced),
    # with these fixed keys, for case MC-2026-000001: the stored shape and the
    # associated data must not have changed.
    ring = sealing.Keyring.from_config(
        "old1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "old1",
        "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    )
    stored = {
        "kid": "old1",
        "nonce": "rfujrSpEdCu1Wv/e",
        "ct": "zgYTodHl4gwrMwH4ockjQjTLIpNSJW3poQ==",
        "f": "parties.P1.name",
    }
    assert sealing.is_sealed(stored)
    assert ring.unseal(stored, record_id="MC-2026-000001", label="parties.P1.name") == "张建国"
    assert ring.blind_index("name", "张建国") == (
        "ad6ef35ab325a8029d6f0bf3bbe095122c07928da05396b6963e3f54650c2e86"
    )


def test_stored_plaintext_of_before_sealing_reads_as_it_is() -> None:
    ring = keyring(service="notify")
    sealed = ring.seal("a@b.cn", record_id="resident:1", label="channels.0.address")
    assert ring.open_stored(sealed, record_id="resident:1", label="channels.0.address") == "a@b.cn"
    assert ring.open_stored("a@b.cn", record_id="resident:1", label="x") == "a@b.cn"
    assert ring.open_stored(None, record_id="resident:1", label="x") is None


def test_a_keyring_shows_no_key_material_when_printed() -> None:
    ring = keyring()
    shown = repr(ring)
    assert "active='k1'" in shown
    assert all(str(key) not in shown for key in ring.keys.values())
    assert str(ring.index_key) not in shown


def test_blind_indexes_match_the_same_person_written_differently() -> None:
    ring = keyring()
    assert ring.blind_index("name", "张 三") == ring.blind_index("name", "张三")
    assert ring.blind_index("phone", "138-1234-1234") == ring.blind_index("phone", "13812341234")
    assert ring.blind_index("name", "qy-01") != ring.blind_index("building", "qy-01")


def test_the_index_key_is_optional_for_services_without_lookups() -> None:
    ring = sealing.Keyring.from_config(
        f"k1:{sealing.new_key()}", "", "", service="volunteer", index_required=False
    )
    assert ring.active == "k1" and ring.context == "shequ.volunteer"
    with pytest.raises(sealing.KeyConfigError):
        ring.blind_index("phone", "13812345678")


def test_settings_are_read_per_service() -> None:
    key, index = sealing.new_key(), sealing.new_key()
    config = {"NOTIFY_KEYS": f"n1:{key}", "NOTIFY_ACTIVE_KEY": "n1", "NOTIFY_INDEX_KEY": index}
    ring = sealing.Keyring.from_settings(config, "notify")
    assert ring.active == "n1" and ring.context == "shequ.notify" and ring.index_key is not None
    with pytest.raises(sealing.KeyConfigError, match="VOLUNTEER_KEYS is empty"):
        sealing.Keyring.from_settings(config, "volunteer")


@pytest.mark.parametrize(
    ("keys", "active", "index"),
    [("", "", "x"), ("k1:short", "k1", None), ("k1:{key}", "k9", None), ("k1:{key}", "k1", "")],
)
def test_missing_or_malformed_keys_stop_the_service(
    keys: str, active: str, index: str | None
) -> None:
    key = sealing.new_key()
    with pytest.raises(sealing.KeyConfigError):
        sealing.Keyring.from_config(
            keys.format(key=key), active, sealing.new_key() if index is None else index
        )
