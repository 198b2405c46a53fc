import pytest

from streams.dead_letters import DeadLetterBudget
from streams.errors import DeadLetterRateExceeded
from streams.producer import paced


def test_budget_allows_occasional_dead_letters():
    budget = DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20)
    for _ in range(10):
        budget.check(accepted=9, rejected=1)
        budget.record(accepted=9, rejected=1)


def test_budget_stops_a_stage_that_rejects_most_inputs():
    budget = DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20)
    budget.record(accepted=10, rejected=0)
    with pytest.raises(DeadLetterRateExceeded, match="would be dead-lettered"):
        budget.check(accepted=0, rejected=30)


def test_budget_waits_for_enough_inputs_before_judging():
    DeadLetterBudget(window=100, max_ratio=0.5, min_inputs=20).check(accepted=0, rejected=5)


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
