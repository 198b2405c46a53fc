"""The canary's comparison and gates: what a promotion decision rests on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.events import Detection
from training.canary.comparison import compare
from training.canary.gates import Gates, judge
from training.canary.replay import ReplayRange


def verdict(probability: float) -> Detection:
    label = "ai_generated" if probability >= 0.5 else "real"
    return Detection(ai_probability=probability, label=label, model="m", model_version="1")


def test_comparison_pairs_verdicts_by_id_and_measures_the_shift():
    production = {"a": verdict(0.1), "b": verdict(0.9), "c": verdict(0.2)}
    candidate = {"a": verdict(0.3), "b": verdict(0.4), "d": verdict(0.7)}
    result = compare(production, candidate, replayed=4, errors=1, images_per_s=12.0)
    assert result.compared == 2
    assert result.missing_in_production == 1
    assert result.agreement == pytest.approx(0.5)
    assert result.mean_shift == pytest.approx((0.2 - 0.5) / 2)
    assert result.mean_abs_shift == pytest.approx(0.35)
    assert result.max_abs_shift == pytest.approx(0.5)
    assert result.production_positive_rate == pytest.approx(0.5)
    assert result.candidate_positive_rate == 0.0
    assert result.error_rate == pytest.approx(0.25)
    assert result.metrics()["canary/agreement"] == pytest.approx(0.5)


def test_nothing_compared_gives_zeros_not_errors():
    result = compare({}, {"x": verdict(0.1)}, replayed=1, errors=0, images_per_s=None)
    assert (result.compared, result.agreement, result.mean_abs_shift) == (0, 0.0, 0.0)
    assert "canary/candidate_images_per_s" not in result.metrics()


def test_gates_pass_a_candidate_that_meets_every_limit():
    same = {key: verdict(0.1) for key in "abcd"}
    result = compare(same, same, replayed=4, errors=0, images_per_s=50.0)
    offline = {"f1": 0.9, "production/f1": 0.88}
    verdicts = judge(Gates(), result, offline)
    assert all(v.passed for v in verdicts), [str(v) for v in verdicts]
    assert {v.name for v in verdicts} >= {"agreement", "error_rate", "f1", "f1_delta"}


@pytest.mark.parametrize(
    ("gates", "offline", "failing"),
    [
        (Gates(min_agreement=0.9), {"f1": 0.9}, "agreement"),
        (Gates(min_images_per_s=100.0), {"f1": 0.9}, "images_per_s"),
        (Gates(), {"f1": 0.8, "production/f1": 0.9}, "f1_delta"),
        (Gates(), {}, "f1"),
        (Gates(max_error_rate=0.1), {"f1": 0.9}, "error_rate"),
    ],
)
def test_each_gate_can_refuse(gates, offline, failing):
    production = {"a": verdict(0.1), "b": verdict(0.1), "c": verdict(0.1), "d": verdict(0.1)}
    candidate = {"a": verdict(0.1), "b": verdict(0.1), "c": verdict(0.1), "d": verdict(0.8)}
    result = compare(production, candidate, replayed=5, errors=1, images_per_s=20.0)
    failed = {v.name for v in judge(gates, result, offline) if not v.passed}
    assert failing in failed


def test_a_gate_without_evidence_fails():
    result = compare({"a": verdict(0.1)}, {"a": verdict(0.1)}, 1, 0, images_per_s=None)
    throughput = next(v for v in judge(Gates(), result, {"f1": 1.0}) if v.name == "images_per_s")
    assert not throughput.passed
    assert "n/a" in str(throughput)


def test_gates_load_from_toml_and_refuse_unknown_keys(tmp_path):
    path = tmp_path / "gates.toml"
    path.write_text("[gates]\nmin_agreement = 0.95\n", encoding="utf-8")
    assert Gates.load(path).min_agreement == 0.95
    assert Gates.load(None) == Gates()
    path.write_text("[gates]\nmin_agreemnt = 0.95\n", encoding="utf-8")
    with pytest.raises(ValueError, match="min_agreemnt"):
        Gates.load(path)


def test_a_replay_range_is_by_time_or_by_offset_not_both():
    ReplayRange(since=datetime(2026, 1, 1, tzinfo=UTC))
    ReplayRange(from_offset=0, to_offset=10)
    with pytest.raises(ValueError, match="not both"):
        ReplayRange(since=datetime(2026, 1, 1, tzinfo=UTC), to_offset=10)
