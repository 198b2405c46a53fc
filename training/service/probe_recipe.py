"""The ``mobilenet-probe`` recipe: a logistic head on frozen MobileNetV2 features.

The offline default. Features come from the content-addressed cache
(:mod:`deeptrust.training.service.features`), so a sweep computes each image's features once;
the job's training and validation rows are then packed into one raw file per split
(:mod:`deeptrust.training.trainer.rows`) that every grid point reads a batch at a time, so
no split's features are ever in memory whole. The artefact is the head's ``.npz``, which
the ``mobilenet-probe`` detect backend loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
from deeptrust.training.trainer import EpochStats, TrainConfig
from deeptrust.training.trainer.rows import RowFile, write_row_file

BACKEND = "mobilenet-probe"
SCORE_CHUNK = 1024
"""Examples whose features are in memory at once while a head scores a split."""


@dataclass(frozen=True)
class ProbeFeatures:
    """Raw backbone features of examples, through the cache."""

    cache: FeatureCache
    read: Callable[[str], bytes]

    def fill(self, items: Sequence[Accepted]) -> None:
        """Compute (in the loader's workers) what the cache lacks."""
        self.cache.fill([(item.sha256, item.example.uri) for item in items], self.read)

    def chunks(self, items: Sequence[Accepted]) -> Iterator[np.ndarray]:
        """Rows of the examples in order, :data:`SCORE_CHUNK` at a time, as float64."""
        self.fill(items)
        for start in range(0, len(items), SCORE_CHUNK):
            chunk = items[start : start + SCORE_CHUNK]
            yield np.stack([self.cache.row(item.sha256) for item in chunk]).astype(np.float64)

    def row_file(self, items: Sequence[Accepted], path: Path) -> RowFile:
        """The examples' rows packed into ``path``, in order, with their labels."""
        self.fill(items)
        return write_row_file(
            path,
            [item.sha256 for item in items],
            labels_of(items),
            self.cache.row,
            self.cache.namespace,
        )


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
        parts = [self.head.probability(rows) for rows in self.features.chunks(items)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)

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
    """Trains heads on one job's cached features (packed into ``folder`` at construction)."""

    def __init__(self, data: TrainingData, features: ProbeFeatures, folder: Path) -> None:
        self._features = features
        self._train = features.row_file(data.train, folder / "train.f32")
        self._validation = features.row_file(data.validation, folder / "validation.f32")

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
        from deeptrust.training.trainer.loop import train_probe_rows

        result = train_probe_rows(self._train, self._validation, config, checkpoints, on_epoch)
        return result, ProbeCandidate(result.head, self._features)
