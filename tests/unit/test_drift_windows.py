import pytest

from deeptrust.drift.cooldown import Cooldown
from deeptrust.drift.windows import Windower


def test_window_closes_at_its_count_and_remembers_its_offsets():
    windower = Windower(max_count=3, max_age_s=60, min_count=2)
    assert windower.add("a", [0.0], at=1000.0, partition=0, offset=5, received_at=0.0) is None
    assert windower.add("b", [1.0], at=1001.0, partition=1, offset=9, received_at=0.0) is None
    assert windower.first_offsets() == {0: 5, 1: 9}
    window = windower.add("c", [2.0], at=1002.0, partition=0, offset=6, received_at=0.0)
    assert window is not None
    assert window.image_ids == ("a", "b", "c")
    assert window.vectors.shape == (3, 1)
    assert window.closed_by == "count"
    assert window.last_offsets == {0: 6, 1: 9}
    assert windower.first_offsets() == {}, "nothing is pending once the window closed"
    assert windower.add("d", [3.0], at=1003.0, partition=0, offset=7, received_at=0.0) is None
    assert windower.first_offsets() == {0: 7}


def test_window_closes_by_event_age_only_with_enough_embeddings():
    windower = Windower(max_count=100, max_age_s=60, min_count=2)
    windower.add("a", [0.0], at=1000.0, partition=0, offset=0, received_at=0.0)
    assert windower.poll(1061.0) is None, "one embedding is too few to judge: carried over"
    window = windower.add("b", [1.0], at=1061.0, partition=0, offset=1, received_at=0.0)
    assert window is not None
    assert window.closed_by == "age"
    assert (window.opened_at, window.closed_at) == (1000.0, 1061.0)


def test_silent_stream_is_closed_after_max_age_of_wall_clock_silence():
    windower = Windower(max_count=100, max_age_s=60, min_count=2)
    windower.add("a", [0.0], at=1000.0, partition=0, offset=0, received_at=5000.0)
    windower.add("b", [1.0], at=1010.0, partition=0, offset=1, received_at=5001.0)
    assert windower.poll(5060.0) is None, "old event times alone do not close it"
    window = windower.poll(5061.0)
    assert window is not None
    assert window.closed_by == "age"
    assert window.closed_at == 1010.0, "a window ends at its last embedding"


def test_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="min_count"):
        Windower(max_count=2, max_age_s=60, min_count=3)


def test_cooldown_allows_one_action_per_period():
    cooldown = Cooldown(period_s=3600)
    assert cooldown.ready(1000.0)
    cooldown.mark(1000.0)
    assert not cooldown.ready(4599.0)
    assert cooldown.ready(4600.0)
