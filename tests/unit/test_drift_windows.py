import json

import pytest

from drift.cooldown import Cooldown
from drift.windows import Windower


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_window_closes_at_its_count():
    windower = Windower(max_count=3, max_age_s=60, min_count=2, clock=Clock())
    assert windower.add("a", [0.0]) is None
    assert windower.add("b", [1.0]) is None
    window = windower.add("c", [2.0])
    assert window is not None
    assert window.image_ids == ("a", "b", "c")
    assert window.vectors.shape == (3, 1)
    assert window.closed_by == "count"
    assert windower.add("d", [3.0]) is None, "a new window opens after a close"


def test_window_closes_by_age_only_with_enough_embeddings():
    clock = Clock()
    windower = Windower(max_count=100, max_age_s=60, min_count=2, clock=clock)
    windower.add("a", [0.0])
    clock.now += 61
    assert windower.poll() is None, "one embedding is too few to judge: carried over"
    window = windower.add("b", [1.0])
    assert window is not None
    assert window.closed_by == "age"
    assert window.opened_at == 1000.0
    assert window.closed_at == 1061.0


def test_open_window_survives_a_restart():
    clock = Clock()
    first = Windower(max_count=3, max_age_s=60, min_count=1, clock=clock)
    first.add("a", [0.5])
    first.add("b", [1.5])
    second = Windower(max_count=3, max_age_s=60, min_count=1, clock=clock)
    second.restore(json.loads(json.dumps(first.to_state())))
    window = second.add("c", [2.5])
    assert window is not None
    assert window.image_ids == ("a", "b", "c")
    assert window.opened_at == pytest.approx(1000.0)


def test_cooldown_allows_one_action_per_period():
    clock = Clock()
    cooldown = Cooldown(period_s=3600, clock=clock)
    assert cooldown.ready()
    cooldown.mark()
    clock.now += 3599
    assert not cooldown.ready()
    clock.now += 1
    assert cooldown.ready()
