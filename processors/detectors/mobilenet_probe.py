"""A pixel-based AI-image detector: a linear probe on frozen MobileNetV2 features.

The head (``mobilenet_probe.npz``, beside this file) is a logistic regression on the
backbone's 1280-d pooled features, trained by ``make train-detector``
(``deeptrust.training.detector``)
on real photo crops and on images from two small generators the project trains itself
(``docs/detector.md``: data, metrics, and what the probe cannot tell). Images reach the
backbone through its own preprocessing, exactly as in training, so no separate resize path
exists to drift apart. The provenance detector runs beside it as an independent second
opinion: its findings go to ``signals``, the probability is the probe's alone.

No torch here: the backbone runs on ONNX Runtime and the head is numpy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import (
    DEFAULT_INTRA_OP_THREADS,
    EMBEDDING_DIMENSIONS,
    WEIGHTS_SHA256,
    MobileNetV2,
)
from deeptrust.processors.heuristics.provenance import ProvenanceDetector
from deeptrust.processors.models import ModelSpec, register
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage

HEAD_FILE = "mobilenet_probe.npz"
HEAD_FORMAT = 1


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large ``|z|`` (no overflow in ``exp``)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp = np.exp(z[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


@dataclass(frozen=True)
class ProbeHead:
    """Logistic regression on standardised features: ``sigmoid(((x - mean) / scale) @ w + b)``.

    ``metadata`` records how the head was made (data hashes, metrics, seeds) so a head file
    can be traced back to its training run.
    """

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float = 0.5
    """Probability from which an image is called ``ai_generated``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    inconclusive_threshold: float | None = None
    """Probability from which, below ``threshold``, it is ``inconclusive``; none: no band."""

    def __post_init__(self) -> None:
        """Reject heads whose parts disagree, before they give silent nonsense."""
        dims = self.weights.shape
        if len(dims) != 1 or self.mean.shape != dims or self.scale.shape != dims:
            raise ValueError(
                f"weights {self.weights.shape}, mean {self.mean.shape} and scale "
                f"{self.scale.shape} must be vectors of one length"
            )
        if not np.all(self.scale > 0):
            raise ValueError("every feature scale must be positive")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold {self.threshold} is not a probability strictly in (0, 1)")
        low = self.inconclusive_threshold
        if low is not None and not 0.0 < low < self.threshold:
            raise ValueError(f"inconclusive threshold {low} is not in (0, {self.threshold})")

    @property
    def dimensions(self) -> int:
        """Length of the feature vectors the head takes."""
        return int(self.weights.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of "AI-generated" for each row of ``features``."""
        standardised = (np.asarray(features, np.float64) - self.mean) / self.scale
        scores: np.ndarray = standardised @ self.weights.astype(np.float64) + self.bias
        return scores

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Probability of "AI-generated" for each row of ``features``."""
        return sigmoid(self.logits(features))

    def label(self, probability: float) -> Literal["ai_generated", "inconclusive", "real"]:
        """The verdict for ``probability``: AI-generated, in the inconclusive band, or real."""
        if probability >= self.threshold:
            return "ai_generated"
        low = self.inconclusive_threshold
        return "inconclusive" if low is not None and probability >= low else "real"

    def digest(self) -> str:
        """SHA-256 of the parameters: a version that changes whenever the head does."""
        sha = hashlib.sha256()
        for part in (self.weights, self.mean, self.scale):
            sha.update(np.ascontiguousarray(part, np.float32).tobytes())
        sha.update(np.array([self.bias, self.threshold], np.float64).tobytes())
        if self.inconclusive_threshold is not None:  # heads without a band keep their digest
            sha.update(np.array([self.inconclusive_threshold], np.float64).tobytes())
        return sha.hexdigest()

    def save(self, path: Path) -> None:
        """Write the head as a small ``.npz`` (float32 vectors, metadata as JSON text)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(HEAD_FORMAT),
            "weights": self.weights.astype(np.float32),
            "bias": np.array(self.bias, np.float64),
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "threshold": np.array(self.threshold, np.float64),
            "metadata": np.array(json.dumps(self.metadata, sort_keys=True)),
        }
        if self.inconclusive_threshold is not None:
            arrays["inconclusive_threshold"] = np.array(self.inconclusive_threshold, np.float64)
        np.savez_compressed(path, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: Path) -> ProbeHead:
        """Read a head written by :meth:`save`; no pickles are read."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != HEAD_FORMAT:
                raise ValueError(f"{path} has head format {int(data['format'])}, not {HEAD_FORMAT}")
            return cls(
                weights=data["weights"].astype(np.float64),
                bias=float(data["bias"]),
                mean=data["mean"].astype(np.float64),
                scale=data["scale"].astype(np.float64),
                threshold=float(data["threshold"]),
                inconclusive_threshold=(
                    float(data["inconclusive_threshold"])
                    if "inconclusive_threshold" in data.files
                    else None
                ),
                metadata=json.loads(str(data["metadata"])),
            )


def shipped_head_path() -> Path:
    """The head file that ships with the package."""
    return Path(str(resources.files("deeptrust.processors.detectors").joinpath(HEAD_FILE)))


class MobileNetProbeDetector:
    """MobileNetV2 features → probe probability; provenance findings in ``signals``.

    Options (``ModelSpec.options``): ``head`` (a head file instead of the shipped one),
    ``intra_op_threads`` and ``max_batch`` (passed to the backbone).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        head = spec.options.get("head")
        self._head_path = Path(head) if head else shipped_head_path()
        backbone_options = {
            key: value
            for key, value in spec.options.items()
            if key in {"intra_op_threads", "max_batch"}
        }
        backbone_options.setdefault("intra_op_threads", str(DEFAULT_INTRA_OP_THREADS))
        self._backbone = MobileNetV2(
            ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", spec.version, backbone_options)
        )
        self._provenance = ProvenanceDetector(
            ModelSpec("detect", "provenance", "provenance", spec.version)
        )
        self._head: ProbeHead | None = None
        self._version = spec.version

    @property
    def head(self) -> ProbeHead:
        """The loaded head (after :meth:`load`)."""
        if self._head is None:
            raise RuntimeError("load() not called")
        return self._head

    def load(self) -> None:
        """Load the head, check it was trained on this backbone, then build the backbone."""
        path = self._head_path
        head = ProbeHead.load(path)
        if head.dimensions != EMBEDDING_DIMENSIONS:
            raise ValueError(f"{path} takes {head.dimensions}-d features, not 1280")
        trained_on = head.metadata.get("backbone_weights_sha256")
        if trained_on != WEIGHTS_SHA256:
            raise ValueError(f"{path} was trained on backbone weights {trained_on!r}, not these")
        self._backbone.load()
        self._provenance.load()
        self._head = head
        self._version = f"{self.spec.version}+{head.digest()[:12]}"

    def predict(self, batch: Sequence[FetchedImage]) -> list[Detection]:
        """Return one verdict per image."""
        head = self.head
        features = self._backbone.infer([image.decoded.image for image in batch]).features
        return verdicts(
            head,
            head.probability(features),
            batch,
            self.spec.label,
            self._version,
            self._provenance,
        )


def verdicts(
    head: ProbeHead,
    probabilities: np.ndarray,
    batch: Sequence[FetchedImage],
    model: str,
    version: str,
    provenance: ProvenanceDetector,
) -> list[Detection]:
    """One verdict per image: the head's label for its probability, provenance's signals."""
    return [
        Detection(
            ai_probability=float(p),
            label=head.label(float(p)),
            model=model,
            model_version=version,
            signals=provenance.signals(image),
        )
        for image, p in zip(batch, probabilities, strict=True)
    ]


register("detect", "mobilenet-probe")(MobileNetProbeDetector)
