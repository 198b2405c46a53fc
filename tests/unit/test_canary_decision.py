"""The canary's comparison and gates: what a promotion decision rests on."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from deeptrust.schemas.events import DeadLetterEvent, Detection
from deeptrust.streams.codec import EVENT_ID
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic
from deeptrust.training.canary.comparison import compare, dead_lettered_outputs, throughput
from deeptrust.training.canary.gates import Gates, ProductionBaseline, judge
from deeptrust.training.canary.replay import ReplayRange

NO_PRODUCTION = ProductionBaseline(scored=None, current=None)
SAME_PRODUCTION = ProductionBaseline(scored="3", current="3")


def verdict(probability: float) -> Detection:
    label = "ai_generated" if probability >= 0.5 else "real"
    return Detection(ai_probability=probability, label=label, model="m", model_version="1")


def test_comparison_pairs_verdicts_by_id_and_measures_the_shift():
    production = {"a": verdict(0.1), "b": verdict(0.9), "c": verdict(0.2)}
    candidate = {"a": verdict(0.3), "b": verdict(0.4), "d": verdict(0.7)}
    result = compare(production, candidate, replayed=4, dead_lettered=["c"], images_per_s=12.0)
    assert result.compared == 2
    assert result.missing_in_production == 1
    assert result.agreement == pytest.approx(0.5)
    assert result.mean_shift == pytest.approx((0.2 - 0.5) / 2)
    assert result.mean_abs_shift == pytest.approx(0.35)
    assert result.max_abs_shift == pytest.approx(0.5)
    assert result.production_positive_rate == pytest.approx(0.5)
    assert result.candidate_positive_rate == 0.0
    assert result.error_rate == pytest.approx(1 / 3), "c: production's verdict, a dead letter"
    assert result.metrics()["canary/agreement"] == pytest.approx(0.5)


def test_nothing_compared_gives_zeros_not_errors():
    result = compare({}, {"x": verdict(0.1)}, replayed=1, dead_lettered=[], images_per_s=None)
    assert (result.compared, result.agreement, result.mean_abs_shift) == (0, 0.0, 0.0)
    assert "canary/candidate_images_per_s" not in result.metrics()


def test_gates_pass_a_candidate_that_meets_every_limit():
    same = {key: verdict(0.1) for key in "abcd"}
    result = compare(same, same, replayed=4, dead_lettered=[], images_per_s=50.0)
    offline = {"f1": 0.9, "production/f1": 0.88}
    verdicts = judge(Gates(), result, offline, SAME_PRODUCTION)
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
    result = compare(production, candidate, replayed=5, dead_lettered=["a"], images_per_s=20.0)
    failed = {v.name for v in judge(gates, result, offline, SAME_PRODUCTION) if not v.passed}
    assert failing in failed


def test_a_gate_without_evidence_fails():
    result = compare({"a": verdict(0.1)}, {"a": verdict(0.1)}, 1, [], images_per_s=None)
    verdicts = judge(Gates(min_images_per_s=5.0), result, {"f1": 1.0}, NO_PRODUCTION)
    rate = next(v for v in verdicts if v.name == "images_per_s")
    assert not rate.passed
    assert "n/a" in str(rate)
    assert "no evidence" in str(rate)


def test_an_unmeasured_throughput_passes_only_a_gate_that_asks_for_nothing():
    result = compare({"a": verdict(0.1)}, {"a": verdict(0.1)}, 1, [], images_per_s=None)
    rate = next(
        v for v in judge(Gates(), result, {"f1": 1.0}, NO_PRODUCTION) if v.name == "images_per_s"
    )
    assert rate.passed
    assert "not measured" in str(rate)


def test_throughput_needs_more_verdicts_than_one_batch():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    one_batch = [start + timedelta(microseconds=50 * i) for i in range(32)]
    assert throughput(one_batch, max_batch=32) is None, "one batch's spread is not a rate"
    two_batches = one_batch + [start + timedelta(seconds=1, microseconds=50 * i) for i in range(9)]
    assert throughput(two_batches, max_batch=32) == pytest.approx(40 / 1.0004, rel=1e-3)
    assert throughput([start] * 40, max_batch=32) is None, "no time elapsed: no rate"


def test_dead_letters_production_also_has_no_verdict_on_are_not_the_candidates_errors():
    """One corrupt upload in the window must not fail every canary at max_error_rate 0."""
    production = {key: verdict(0.1) for key in "abc"}
    candidate = {key: verdict(0.1) for key in "ab"}
    # c: production's verdict, the canary's dead letter; x: both dead-lettered; None: an
    # upload without an id.
    result = compare(production, candidate, 5, dead_lettered=["c", "x", None], images_per_s=None)
    assert (result.candidate_errors, result.shared_dead_letters) == (1, 2)
    assert result.error_rate == pytest.approx(1 / 3)
    assert result.metrics()["canary/shared_dead_letters"] == 2.0

    corrupt_only = compare(production, production, 4, dead_lettered=["x"], images_per_s=None)
    errors = next(
        v
        for v in judge(Gates(), corrupt_only, {"f1": 0.9}, NO_PRODUCTION)
        if v.name == "error_rate"
    )
    assert errors.passed, str(errors)
    assert "1 dead letter(s) production has no verdict on either" in str(errors)


def test_a_dead_letter_names_the_output_its_upload_would_have_had():
    def letter(headers: dict[str, str]) -> DeadLetterEvent:
        return DeadLetterEvent(
            stage="detect",
            reason="undecodable_image",
            detail="not an image",
            source_topic="uploads.v1",
            source_partition=0,
            source_offset=7,
            original_key="img",
            original_value_b64=base64.b64encode(b"{").decode(),
            original_headers=headers,
            failed_at=datetime.now(UTC),
        )

    ids = dead_lettered_outputs([letter({EVENT_ID: "upload-1"}), letter({})])
    assert ids == [derived_event_id("upload-1", "detect", Topic.DETECTED), None]


def test_the_f1_delta_gate_fails_when_production_changed_since_training():
    same = {key: verdict(0.1) for key in "abcd"}
    result = compare(same, same, replayed=4, dead_lettered=[], images_per_s=50.0)
    offline = {"f1": 0.9, "production/f1": 0.88}  # against version 3, which no longer serves

    for baseline, scored in [
        (ProductionBaseline(scored="3", current="4"), "version 3"),
        (ProductionBaseline(scored=None, current="4"), "no version"),
    ]:
        delta = next(v for v in judge(Gates(), result, offline, baseline) if v.name == "f1_delta")
        assert not delta.passed
        assert "production changed since training: retrain or re-evaluate" in str(delta)
        assert scored in str(delta)


def test_without_production_only_min_f1_applies_and_the_report_says_so():
    same = {key: verdict(0.1) for key in "abcd"}
    result = compare(same, same, replayed=4, dead_lettered=[], images_per_s=50.0)
    verdicts = judge(Gates(), result, {"f1": 0.9}, NO_PRODUCTION)
    assert all(v.passed for v in verdicts)
    assert "f1_delta" not in {v.name for v in verdicts}
    f1 = next(v for v in verdicts if v.name == "f1")
    assert "no production model to compare with" in str(f1)


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
