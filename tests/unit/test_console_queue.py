"""The review queue's leases, ordering, idempotent decisions, skip, undo; event ids and ranks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deeptrust.console.db import Database
from deeptrust.console.events import click, impression
from deeptrust.console.queue import Outcome, QueuedItem, ReviewQueue, feedback_event_id
from deeptrust.schemas.events import ModerationEvent

LEASE_S = 300.0


def moderation(image_id: str, reason: str = "flagged") -> ModerationEvent:
    return ModerationEvent.model_validate(
        {
            "event_id": f"m-{image_id}",
            "image_id": image_id,
            "uri": f"file:///objects/{image_id}.jpg",
            "reason": reason,
            "ai_probability": 0.9 if reason == "flagged" else 0.1,
            "caption": f"a photo of {image_id}",
            "tags": ["cat"],
        }
    )


def item(image_id: str, at: float, reason: str = "flagged", offset: int = 0) -> QueuedItem:
    return QueuedItem(moderation(image_id, reason), at, 0, offset)


@pytest.fixture
def queue(tmp_path: Path) -> ReviewQueue:
    q = ReviewQueue(Database(tmp_path / "console.db"), LEASE_S)
    # Added out of order on purpose: the queue orders by the broker's timestamp.
    q.add([item("new", 30.0, offset=2), item("old", 10.0, offset=0), item("mid", 20.0, offset=1)])
    q.add([item("s1", 5.0, "sampled", offset=3)])
    return q


def test_lanes_are_apart_and_oldest_first(queue: ReviewQueue):
    flagged = queue.lease_next("alice", "flagged", now=100.0)
    sampled = queue.lease_next("alice", "sampled", now=100.0)
    assert flagged is not None
    assert flagged.event.image_id == "old"
    assert sampled is not None
    assert sampled.event.image_id == "s1"
    assert queue.waiting() == {"flagged": 3, "sampled": 1}


def test_two_reviewers_never_hold_the_same_item(queue: ReviewQueue):
    alice = queue.lease_next("alice", "flagged", now=100.0)
    bob = queue.lease_next("bob", "flagged", now=100.0)
    assert alice is not None
    assert bob is not None
    assert (alice.event.image_id, bob.event.image_id) == ("old", "mid")
    again = queue.lease_next("alice", "flagged", now=150.0)
    assert again is not None
    assert (again.event.image_id, again.lease_id) == ("old", alice.lease_id), "a reload keeps it"


def test_an_expired_lease_passes_to_the_next_reviewer(queue: ReviewQueue):
    alice = queue.lease_next("alice", "flagged", now=100.0)
    assert alice is not None
    still_held = queue.lease_next("bob", "flagged", now=100.0 + LEASE_S - 1)
    assert still_held is not None
    assert still_held.event.image_id == "mid"
    queue.skip("bob", still_held.lease_id)
    taken = queue.lease_next("bob", "flagged", now=100.0 + LEASE_S + 1)
    assert taken is not None
    assert taken.event.image_id == "old"
    outcome, decision = queue.decide("alice", alice.lease_id, "real", now=100.0 + LEASE_S + 2)
    assert (outcome, decision) == (Outcome.LEASE_LOST, None), "bob holds it now"


def test_a_decision_under_an_expired_lease_nobody_took_still_counts(queue: ReviewQueue):
    alice = queue.lease_next("alice", "flagged", now=100.0)
    assert alice is not None
    outcome, decision = queue.decide("alice", alice.lease_id, "real", now=100.0 + 2 * LEASE_S)
    assert outcome is Outcome.RECORDED
    assert decision is not None


def test_a_decision_made_twice_is_recorded_once(queue: ReviewQueue):
    leased = queue.lease_next("alice", "flagged", now=100.0)
    assert leased is not None
    first = queue.decide("alice", leased.lease_id, "ai_generated", now=101.0)
    second = queue.decide("alice", leased.lease_id, "ai_generated", now=102.0)
    assert first[0] is Outcome.RECORDED
    assert second[0] is Outcome.DUPLICATE
    assert first[1] == second[1]
    assert first[1] is not None
    assert first[1].event_id == feedback_event_id(leased.lease_id)
    assert first[1].uri == "file:///objects/old.jpg"
    assert queue.waiting()["flagged"] == 2
    assert [d.image_id for d in queue.undelivered()] == ["old"]
    queue.delivered(leased.lease_id)
    assert queue.undelivered() == []


def test_only_the_lease_holder_decides(queue: ReviewQueue):
    leased = queue.lease_next("alice", "flagged", now=100.0)
    assert leased is not None
    assert queue.decide("bob", leased.lease_id, "real", now=101.0) == (Outcome.LEASE_LOST, None)
    assert queue.decide("alice", "no-such-lease", "real", now=101.0) == (Outcome.LEASE_LOST, None)


def test_a_decided_item_is_not_shown_again(queue: ReviewQueue):
    first = queue.lease_next("alice", "flagged", now=100.0)
    assert first is not None
    queue.decide("alice", first.lease_id, "real", now=101.0)
    nexts = [queue.lease_next(r, "flagged", now=102.0) for r in ("alice", "bob", "carol")]
    assert [n.event.image_id if n else None for n in nexts] == ["mid", "new", None]


def test_skip_passes_an_item_on_to_others(queue: ReviewQueue):
    leased = queue.lease_next("alice", "flagged", now=100.0)
    assert leased is not None
    queue.skip("alice", leased.lease_id)
    after = queue.lease_next("alice", "flagged", now=101.0)
    assert after is not None
    assert after.event.image_id == "mid"
    bob = queue.lease_next("bob", "flagged", now=101.0)
    assert bob is not None
    assert bob.event.image_id == "old"


def test_undo_reopens_the_last_decision_under_a_new_lease(queue: ReviewQueue):
    first = queue.lease_next("alice", "flagged", now=100.0)
    assert first is not None
    queue.decide("alice", first.lease_id, "ai_generated", now=101.0)
    reopened = queue.undo("alice", now=102.0)
    assert reopened is not None
    assert reopened.event.image_id == "old"
    assert reopened.lease_id != first.lease_id
    assert queue.lease_next("bob", "flagged", now=103.0).event.image_id == "mid"  # type: ignore[union-attr]
    outcome, decision = queue.decide("alice", reopened.lease_id, "real", now=104.0)
    assert outcome is Outcome.RECORDED
    assert decision is not None
    assert decision.label == "real"
    assert decision.event_id != feedback_event_id(first.lease_id), "a new decision, a new id"
    assert queue.undo("bob", now=105.0) is None, "bob decided nothing"


def test_decided_elsewhere_takes_an_item_out_but_not_our_own_undone_one(queue: ReviewQueue):
    first = queue.lease_next("alice", "flagged", now=100.0)
    assert first is not None
    _, ours = queue.decide("alice", first.lease_id, "real", now=101.0)
    assert ours is not None
    queue.undo("alice", now=102.0)
    queue.decided_elsewhere({"old": ours.event_id, "mid": "event-from-the-cli"})
    assert queue.waiting()["flagged"] == 2, "mid is gone; old, undone here, waits again"


def test_a_repeated_moderation_event_keeps_its_place(queue: ReviewQueue):
    queue.add([item("old", 99.0, offset=9)])
    leased = queue.lease_next("alice", "flagged", now=100.0)
    assert leased is not None
    assert leased.event.image_id == "old"
    assert queue.waiting()["flagged"] == 3


def test_withdraw_gives_the_lease_back(queue: ReviewQueue):
    leased = queue.lease_next("alice", "flagged", now=100.0)
    assert leased is not None
    _, decision = queue.decide("alice", leased.lease_id, "real", now=101.0)
    assert decision is not None
    queue.withdraw(decision, now=102.0)
    assert queue.undelivered() == []
    again = queue.decide("alice", leased.lease_id, "real", now=103.0)
    assert again[0] is Outcome.RECORDED
    assert again[1] is not None
    assert again[1].event_id == decision.event_id, "the same event id on a resend"


def test_queue_and_decisions_survive_in_the_file(tmp_path: Path):
    path = tmp_path / "console.db"
    first = ReviewQueue(Database(path), LEASE_S)
    first.add([item("a", 1.0), item("b", 2.0)])
    leased = first.lease_next("alice", "flagged", now=10.0)
    assert leased is not None
    first.decide("alice", leased.lease_id, "real", now=11.0)
    restarted = ReviewQueue(Database(path), LEASE_S)
    restarted.clear_items()
    restarted.add([item("a", 1.0), item("b", 2.0)])  # the topic read again from the start
    nxt = restarted.lease_next("bob", "flagged", now=12.0)
    assert nxt is not None
    assert nxt.event.image_id == "b"


def test_a_click_carries_its_rank_among_the_results_shown():
    now = datetime(2026, 12, 2, tzinfo=UTC)
    shown = ["a", "b", "c"]
    picked = click("s1", "cat", shown, "c", now)
    assert (picked.kind, picked.image_id, picked.rank, picked.results) == ("click", "c", 3, shown)
    assert click("s1", "cat", shown, "z", now).rank is None, "not on the page: no rank"
    seen = impression("s1", "dog", [], now)
    assert (seen.kind, seen.results, seen.image_id, seen.rank) == ("impression", [], None, None)
