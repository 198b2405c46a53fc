"""The ``mobilenet-probe`` recipe: a logistic head on frozen MobileNetV2 features.

The offline default. Features come from the content-addressed cache
(:mod:`deeptrust.training.service.features`), so a sweep computes each image's features once, and
the artefact is the head's ``.npz``, which the ``mobilenet-probe`` detect backend loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256
from deeptrust.processors.detectors.mobilenet_probe import HEAD_FILE, ProbeHead
from deeptrust.training.datasets.quality import Accepted
from deeptrust.training.service.data import TrainingData
from deeptrust.training.service.features import FeatureCache
from deeptrust.training.service.recipe import Outcome, labels_of
from deeptrust.training.trainer import EpochStats, TrainConfig, train_probe

BACKEND = "mobilenet-probe"


@dataclass(frozen=True)
class ProbeFeatures:
    """Raw backbone features of examples, through the cache, as float64 rows."""

    cache: FeatureCache
    read: Callable[[str], bytes]

    def __call__(self, items: Sequence[Accepted]) -> np.ndarray:
        """One row per example, in order."""
        pairs = [(item.sha256, item.example.uri) for item in items]
        return self.cache.features(pairs, self.read).astype(np.float64)


@dataclass(frozen=True)
class ProbeCandidate:
    """A trained head and the features it reads."""

    head: ProbeHead
    features: ProbeFeatures
    backend: str = BACKEND

    @property
    def threshold(self) -> float:
        """The head's decision threshold."""
        return self.head.threshold

    def probabilities(self, items: Sequence[Accepted]) -> np.ndarray:
        """The head on the examples' features, as the detect stage computes it."""
        return self.head.probability(self.features(items))

    def write(self, folder: Path, provenance: dict[str, str]) -> Path:
        """The head's ``.npz``, its metadata extended by the backbone and ``provenance``."""
        metadata = {
            **self.head.metadata,
            "backbone": "mobilenet-v2",
            "backbone_weights_sha256": WEIGHTS_SHA256,
            **provenance,
        }
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / HEAD_FILE
        replace(self.head, metadata=metadata).save(path)
        return path

    @classmethod
    def from_artefact(cls, data: bytes, folder: Path, features: ProbeFeatures) -> ProbeCandidate:
        """A registered head (e.g. production's), read back from its artefact's bytes."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / HEAD_FILE
        path.write_bytes(data)
        return cls(ProbeHead.load(path), features)


class ProbeRecipe:
    """Trains heads on one job's cached features (computed once, at construction)."""

    def __init__(self, data: TrainingData, features: ProbeFeatures) -> None:
        self._features = features
        self._train = (features(data.train), labels_of(data.train))
        self._validation = (features(data.validation), labels_of(data.validation))

    def params(self) -> dict[str, Any]:
        """The frozen backbone's weights, which the features (and so the head) depend on."""
        return {"backbone_weights_sha256": WEIGHTS_SHA256[:16]}

    def fit(
        self,
        config: TrainConfig,
        checkpoints: Path,
        on_epoch: Callable[[EpochStats], None],
        folder: Path,
    ) -> tuple[Outcome, ProbeCandidate]:
        """One grid point's head (``folder`` is unused: the head lives in memory)."""
        result = train_probe(*self._train, *self._validation, config, checkpoints, on_epoch)
        return result, ProbeCandidate(result.head, self._features)
