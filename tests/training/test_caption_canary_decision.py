"""The caption canary's comparison and gates, on captions given here (no broker, no model).

Runs in .venv-train (the canary's module imports the registry, which imports mlflow).
"""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from deeptrust.processors.transformers_backends.blip import EMPTY_CAPTION
from deeptrust.training.canary.caption_canary import (
    CaptionGates,
    compare_captions,
    judge_captions,
)
from deeptrust.training.canary.gates import ProductionBaseline

PRODUCTION = {"a": "a red cup", "b": "a blue sky", "c": "a green street", "d": "a dog"}
OFFLINE = {"cider_d": 1.5, "production/cider_d": 0.4, "bleu4": 0.3, "production/bleu4": 0.1}
FIRST = ProductionBaseline(scored=None, current=None)


def test_captions_are_paired_by_id_and_errors_are_only_what_production_captioned():
    candidate = {"a": "a red cup", "b": "the blue sky", "c": EMPTY_CAPTION, "x": "extra"}
    comparison = compare_captions(PRODUCTION, candidate, 6, ["d", "unknown", None], 2.0)
    assert (comparison.compared, comparison.candidate_errors) == (3, 1)
    assert comparison.changed == pytest.approx(2 / 3)
    assert comparison.empty_rate == pytest.approx(1 / 3)
    assert comparison.error_rate == pytest.approx(1 / 4)
    assert comparison.metrics()["canary/empty_rate"] == pytest.approx(1 / 3)


def test_a_better_captioner_with_clean_output_passes_every_gate():
    comparison = compare_captions(PRODUCTION, dict(PRODUCTION), 4, [], None)
    results = judge_captions(CaptionGates(), comparison, OFFLINE, FIRST)
    assert all(result.passed for result in results), [str(r) for r in results]
    assert {r.name for r in results} >= {"cider_d_delta", "bleu4_delta", "empty_rate"}


@pytest.mark.parametrize(
    ("candidate", "offline", "baseline", "failing"),
    [
        ({**PRODUCTION, "a": EMPTY_CAPTION}, OFFLINE, FIRST, {"empty_rate"}),
        (PRODUCTION, {**OFFLINE, "cider_d": 0.3}, FIRST, {"cider_d_delta"}),
        (PRODUCTION, {"cider_d": 1.5}, FIRST, {"cider_d_delta", "bleu4_delta"}),  # no evidence
        (PRODUCTION, OFFLINE, ProductionBaseline(scored="1", current="2"), {"cider_d_delta"}),
    ],
    ids=["empty-caption", "worse-cider", "no-production-score", "production-moved"],
)
def test_each_gate_refuses_what_it_guards(candidate, offline, baseline, failing):
    comparison = compare_captions(PRODUCTION, candidate, 4, [], None)
    results = judge_captions(CaptionGates(), comparison, offline, baseline)
    assert {r.name for r in results if not r.passed} == failing
