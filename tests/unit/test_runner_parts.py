import pytest

from deeptrust.streams.dead_letters import DeadLetterBudget, Tally
from deeptrust.streams.errors import DeadLetterRateExceeded
from deeptrust.streams.producer import paced


def test_budget_allows_occasional_dead_letters():
    budget = DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20)
    for _ in range(10):
        budget.record(budget.after({0: [False] * 9 + [True]}))
    assert budget.tallies[0] == Tally(accepted=90, rejected=10, consecutive=1)


def test_budget_stops_a_stage_that_rejects_most_inputs():
    budget = DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20, max_consecutive=1000)
    budget.record(budget.after({0: [False] * 10}))
    with pytest.raises(DeadLetterRateExceeded, match="would be dead-lettered"):
        budget.after({1: [True] * 30})


def test_budget_waits_for_enough_inputs_before_judging():
    budget = DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20)
    assert budget.after({0: [True] * 5}) == {0: Tally(0, 5, 5)}


def test_budget_caps_dead_letters_in_a_row_on_one_partition():
    budget = DeadLetterBudget(window=1000, max_ratio=0.9, min_inputs=1000, max_consecutive=4)
    budget.record(budget.after({0: [True, True, False, True, True, True]}))
    with pytest.raises(DeadLetterRateExceeded, match="partition 0: 4 dead letters in a row"):
        budget.after({0: [True]})


def test_tally_keeps_the_share_once_past_its_window():
    # 150 accepted + 50 rejected over a window of 100: scaled to 75 + 25
    assert Tally().add([False] * 150 + [True] * 50, window=100) == Tally(75, 25, 50)


def test_tally_round_trips_through_offset_metadata():
    assert Tally.decode(Tally(12, 3, 2).encode()) == Tally(12, 3, 2)
    assert Tally.decode(None) == Tally()
    assert Tally.decode("someone else's metadata") == Tally()
    assert Tally.decode("dlq1:x:y:z") == Tally()


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_paced_spreads_items_at_the_rate():
    clock = FakeClock()
    assert list(paced(range(5), rate=10, clock=clock, sleep=clock.sleep)) == [0, 1, 2, 3, 4]
    assert clock.now == pytest.approx(0.4)


def test_paced_without_rate_never_sleeps():
    clock = FakeClock()
    list(paced(range(5), rate=None, clock=clock, sleep=clock.sleep))
    assert clock.sleeps == []
