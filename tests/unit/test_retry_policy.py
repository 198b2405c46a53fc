import pytest

from deeptrust.streams.retry import RetryPolicy


def test_waits_double_from_the_first_and_stop_at_the_cap():
    policy = RetryPolicy(initial_s=0.5, max_s=3.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_an_unbounded_policy_never_gives_up_even_after_many_attempts():
    policy = RetryPolicy(initial_s=1.0, max_s=30.0)
    assert not policy.exhausted(10_000)
    assert policy.delay_s(10_000) == 30.0
    assert policy.worst_case_s() == float("inf")


def test_a_bounded_policy_counts_the_first_attempt():
    policy = RetryPolicy(initial_s=1.0, max_s=30.0, max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3)] == [False, False, True]
    assert policy.worst_case_s() == 1.0 + 2.0  # two waits between three attempts


def test_a_cap_below_the_first_wait_caps_it():
    assert RetryPolicy(initial_s=10.0, max_s=5.0).delay_s(1) == 5.0


@pytest.mark.parametrize(
    "fields", [{"initial_s": -1, "max_s": 1}, {"initial_s": 1, "max_s": 1, "max_attempts": 0}]
)
def test_nonsense_is_refused(fields):
    with pytest.raises(ValueError, match=r"backoff|at least 1"):
        RetryPolicy(**fields)


def test_attempts_count_from_one():
    with pytest.raises(ValueError, match="count from 1"):
        RetryPolicy(initial_s=1, max_s=1).delay_s(0)
