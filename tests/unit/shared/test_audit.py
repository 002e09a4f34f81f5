"""The audit trail's hashing: canonical, stable across a store round trip, sensitive to change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shequ import audit


def test_the_canonical_form_ignores_key_order_and_spacing() -> None:
    assert audit.canonical({"b": 1, "a": [1, "二"]}) == '{"a":[1,"二"],"b":1}'.encode()
    assert audit.object_hash({"a": 1, "b": 2}) == audit.object_hash({"b": 2, "a": 1})


def test_no_object_has_no_hash_and_any_change_changes_the_hash() -> None:
    assert audit.object_hash(None) is None
    assert audit.object_hash({"a": 1}) != audit.object_hash({"a": 2})
    assert len(audit.object_hash({"a": 1}) or "") == 64


def test_the_same_moment_in_another_zone_hashes_the_same() -> None:
    moment = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    beijing = moment.astimezone(timezone(timedelta(hours=8)))
    assert audit.object_hash({"at": moment}) == audit.object_hash({"at": beijing})


def test_timestamps_are_fixed_width_so_text_order_is_time_order() -> None:
    whole = audit.timestamp(datetime(2026, 1, 1, tzinfo=UTC))
    later = audit.timestamp(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC))
    assert len(whole) == len(later) and whole < later


def test_a_records_hash_covers_everything_but_itself_and_the_store_id() -> None:
    record = {"seq": 1, "action": "x", "prev": None, "before": None, "after": "ab"}
    sealed = {**record, "hash": audit.record_hash(record), "_id": "anything"}
    assert audit.record_hash(sealed) == sealed["hash"]
    assert audit.record_hash({**sealed, "action": "y"}) != sealed["hash"]
