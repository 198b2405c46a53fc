"""The business estimators against textbook values and numbers worked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeptrust.business.estimators import (
    Impression,
    Lane,
    agreement,
    miss_rate,
    recall,
    search_metrics,
    wilson,
    z_value,
)
from deeptrust.business.relevance import load_judgments, ndcg_at, recall_at


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombes_table(
    successes: int, trials: int, low: float, high: float
) -> None:
    interval = wilson(successes, trials)
    assert interval is not None
    assert interval.estimate == pytest.approx(successes / trials)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_is_undefined_without_trials_and_refuses_impossible_counts() -> None:
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson(3, 2)


def test_z_value_at_95_percent() -> None:
    assert z_value(0.95) == pytest.approx(1.95996, abs=1e-5)


# The worked example of docs/metrics.md: 50 flagged images, 25 reviewed, 20 confirmed AI;
# 40 sampled at rate 0.1, 20 reviewed, 2 AI.
FLAGGED = Lane(entered=50, reviewed=25, confirmed_ai=20)
SAMPLED = Lane(entered=40, reviewed=20, confirmed_ai=2, inclusion=0.1)


def test_horvitz_thompson_weights_and_totals() -> None:
    # One reviewed sampled image stands for 1 / (0.1 * 20/40) = 20 unflagged images.
    assert SAMPLED.weight == pytest.approx(20.0)
    assert SAMPLED.population == pytest.approx(400.0)
    total = SAMPLED.ai_total()
    assert total is not None
    # 2 x 20 = 40 missed; Wilson 95% on 2/20 is [0.02787, 0.30103], times 400.
    assert total.estimate == pytest.approx(40.0)
    assert total.low == pytest.approx(11.147, abs=1e-3)
    assert total.high == pytest.approx(120.413, abs=1e-3)
    assert FLAGGED.weight == pytest.approx(2.0)


def test_recall_and_miss_rate_from_both_lanes() -> None:
    # TP = 50 x 0.8 = 40, FN = 400 x 0.1 = 40, recall = 0.5.
    # Box at sqrt(0.95) (z = 2.23648): flagged share [0.57917, 0.92080], sampled share
    # [0.02379, 0.33626]; low = 50*0.57917 / (50*0.57917 + 400*0.33626) = 0.17716,
    # high = 50*0.92080 / (50*0.92080 + 400*0.02379) = 0.82872.
    r = recall(FLAGGED, SAMPLED)
    assert r is not None
    assert r.estimate == pytest.approx(0.5)
    assert r.low == pytest.approx(0.17716, abs=1e-4)
    assert r.high == pytest.approx(0.82872, abs=1e-4)
    m = miss_rate(FLAGGED, SAMPLED)
    assert m is not None
    assert (m.estimate, m.low, m.high) == pytest.approx((0.5, 0.17128, 0.82284), abs=1e-4)


def test_recall_is_one_when_the_sample_holds_no_ai_image() -> None:
    r = recall(FLAGGED, Lane(entered=40, reviewed=20, confirmed_ai=0, inclusion=0.1))
    assert r is not None
    assert r.estimate == pytest.approx(1.0)
    assert r.high == pytest.approx(1.0)
    assert r.low < 1.0


def test_recall_needs_reviews_in_both_lanes() -> None:
    assert recall(FLAGGED, Lane(entered=40, reviewed=0, confirmed_ai=0, inclusion=0.1)) is None
    assert recall(Lane(entered=3, reviewed=0, confirmed_ai=0), SAMPLED) is None
    assert recall(Lane(5, 5, 0), Lane(40, 20, 0, inclusion=0.1)) is None


def test_lane_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="reviewed <= entered"):
        Lane(entered=2, reviewed=3, confirmed_ai=1)
    with pytest.raises(ValueError, match="inclusion"):
        Lane(entered=2, reviewed=2, confirmed_ai=1, inclusion=0.0)


def test_cohens_kappa_wikipedia_example() -> None:
    # 50 images: both "ai" 20, first "ai" second "real" 5, first "real" second "ai" 10,
    # both "real" 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    pairs = (
        [("ai", "ai")] * 20 + [("ai", "real")] * 5 + [("real", "ai")] * 10 + [("real", "real")] * 15
    )
    result = agreement(pairs)
    assert result is not None
    assert result.pairs == 50
    assert result.percent == pytest.approx(0.7)
    assert result.kappa == pytest.approx(0.4)


def test_kappa_is_undefined_when_every_decision_is_the_same() -> None:
    result = agreement([("ai", "ai"), ("ai", "ai")])
    assert result is not None
    assert result.percent == pytest.approx(1.0)
    assert result.kappa is None
    assert agreement([]) is None


def test_search_metrics_by_hand() -> None:
    # First clicks at ranks 3 and 1, one page unclicked, one page with no results:
    # MRR = (1/3 + 1 + 0) / 3 = 4/9, CTR = 2/3, zero-result rate = 1/4.
    metrics = search_metrics(
        [
            Impression(results=10, clicked_ranks=(3, 1)),
            Impression(results=5, clicked_ranks=(1,)),
            Impression(results=8),
            Impression(results=0),
        ]
    )
    assert metrics.impressions == 4
    assert metrics.mean_reciprocal_rank == pytest.approx(4 / 9)
    assert metrics.click_through_rate is not None
    assert metrics.click_through_rate.estimate == pytest.approx(2 / 3)
    assert metrics.zero_result_rate is not None
    assert metrics.zero_result_rate.estimate == pytest.approx(0.25)


def test_search_metrics_without_impressions() -> None:
    metrics = search_metrics([])
    assert metrics.impressions == 0
    assert metrics.zero_result_rate is None
    assert metrics.click_through_rate is None
    assert metrics.mean_reciprocal_rank is None


def test_recall_at_k_by_hand() -> None:
    grades = {"a": 2, "b": 1, "c": 1}
    # a and c in the first 3 of 3 relevant; b only at rank 5.
    assert recall_at(["a", "x", "c", "y", "b"], grades, 3) == pytest.approx(2 / 3)
    assert recall_at(["a", "x", "c", "y", "b"], grades, 5) == pytest.approx(1.0)
    assert recall_at([], grades, 5) == pytest.approx(0.0)


def test_ndcg_at_k_by_hand() -> None:
    # Ranking b (1), x (0), a (2): DCG = 1/log2(2) + 0 + 3/log2(4) = 1 + 1.5 = 2.5.
    # Ideal a (2), b (1): 3/1 + 1/log2(3) = 3.63093. nDCG = 2.5 / 3.63093 = 0.68853.
    grades = {"a": 2, "b": 1}
    assert ndcg_at(["b", "x", "a"], grades, 10) == pytest.approx(0.68853, abs=1e-5)
    assert ndcg_at(["a", "b"], grades, 10) == pytest.approx(1.0)
    # Cut at 2, a falls out: 1 / 3.63093.
    assert ndcg_at(["b", "x", "a"], grades, 2) == pytest.approx(0.27541, abs=1e-5)


def test_relevance_needs_a_relevant_image() -> None:
    with pytest.raises(ValueError, match="relevant"):
        ndcg_at(["a"], {"a": 0}, 10)


def test_the_shipped_judgments_load() -> None:
    queries = load_judgments(
        Path(__file__).parents[2] / "bench/data/search-relevance/judgments.tsv"
    )
    person = next(q for q in queries if q.query == "person")
    assert person.category == "people"
    assert dict(person.grades) == {"astronaut.jpg": 2, "camera.jpg": 2, "grace_hopper.jpg": 2}
    assert len(queries) == 37
