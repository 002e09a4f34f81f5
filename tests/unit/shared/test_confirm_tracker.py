"""The relay's confirm bookkeeping: which entries the broker's acks and nacks settle."""

from __future__ import annotations

from shequ.outbox import ConfirmTracker


def tracker_of(count: int) -> ConfirmTracker:
    tracker = ConfirmTracker()
    for tag in range(1, count + 1):
        tracker.published(tag, f"e{tag}")
    return tracker


def test_single_acks_and_nacks_settle_one_entry_each() -> None:
    tracker = tracker_of(3)
    tracker.ack(2)
    tracker.nack(1)
    assert tracker.confirmed == ["e2"]
    assert tracker.nacked == ["e1"]
    assert tracker.outstanding == ["e3"]


def test_a_multiple_ack_settles_every_tag_up_to_its_own() -> None:
    tracker = tracker_of(5)
    tracker.ack(3, multiple=True)
    assert tracker.confirmed == ["e1", "e2", "e3"]
    assert tracker.outstanding == ["e4", "e5"]


def test_a_multiple_nack_after_an_ack_settles_only_what_is_left() -> None:
    tracker = tracker_of(5)
    tracker.ack(2)
    tracker.nack(4, multiple=True)
    tracker.ack(5)
    assert tracker.confirmed == ["e2", "e5"]
    assert tracker.nacked == ["e1", "e3", "e4"]
    assert tracker.outstanding == []


def test_answers_for_tags_not_in_the_batch_settle_nothing() -> None:
    tracker = ConfirmTracker()
    tracker.published(7, "e7")
    tracker.ack(3)
    tracker.nack(6, multiple=True)
    assert tracker.confirmed == [] and tracker.nacked == []
    tracker.ack(7)
    assert tracker.confirmed == ["e7"]
    tracker.ack(7)
    assert tracker.confirmed == ["e7"]
