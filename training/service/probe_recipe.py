"""The probe recipes: a logistic head on frozen MobileNetV2 features, for either probe backend.

``mobilenet-blocks`` (the detect default) reads the tile-mean block features, and its head
gets the shipped head's two thresholds, set again on the validation split's real images;
``mobilenet-probe`` reads the pooled 224 px features and keeps one threshold. Features come
from the content-addressed cache (:mod:`deeptrust.training.service.features`), so a sweep
computes each image's features once; the job's training and validation rows are then
packed into one raw file per split (:mod:`deeptrust.training.trainer.rows`) that every grid
point reads a batch at a time, so no split's features are ever in memory whole. The
artefact is the head's ``.npz``, which the detect backend named by :class:`ProbeBackend`
loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256
from deeptrust.processors.detectors import block_probe, mobilenet_probe
from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.training.datasets.quality import Accepted
from deeptrust.training.detector.metrics import threshold_at_fpr
from deeptrust.training.service.data import TrainingData
from deeptrust.training.service.features import (
    FeatureCache,
    FeatureNetwork,
    PooledMobileNet,
    TiledBlocks,
)
from deeptrust.training.service.recipe import Outcome, labels_of
from deeptrust.training.trainer import EpochStats, TrainConfig
from deeptrust.training.trainer.rows import RowFile, write_row_file

if TYPE_CHECKING:  # torch and Ray: only a job on a Ray cluster builds a trial
    from deeptrust.training.trainer.ray_tune import ProbeTrial

MAX_THRESHOLD = 1.0 - 1e-6
"""A threshold must stay below 1: a validation real scored 1.0 caps it here."""
SCORE_CHUNK = 1024
"""Examples whose features are in memory at once while a head scores a split."""


@dataclass(frozen=True)
class ProbeBackend:
    """A probe detect backend: its head file, what its loader checks, how it is thresholded."""

    name: str
    head_file: str
    network: Callable[[int], FeatureNetwork]
    """The network whose rows the backend's head reads, given its threads."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the backend checks in a head's metadata before serving it."""
    band_fprs: tuple[float, float] | None = None
    """False-positive rates on validation reals of the ``ai_generated`` and ``inconclusive``
    thresholds; none: the head keeps the configured threshold and has no band."""


BACKBONE = {"backbone": "mobilenet-v2", "backbone_weights_sha256": WEIGHTS_SHA256}
POOLED = ProbeBackend("mobilenet-probe", mobilenet_probe.HEAD_FILE, PooledMobileNet, BACKBONE)
TILED_BLOCKS = ProbeBackend(
    "mobilenet-blocks",
    block_probe.HEAD_FILE,
    TiledBlocks,
    {**BACKBONE, "blocks": list(block_probe.BLOCKS)},
    (0.01, 0.05),
)
PROBE_BACKENDS = {backend.name: backend for backend in (POOLED, TILED_BLOCKS)}


@dataclass(frozen=True)
class ProbeFeatures:
    """One probe backend's features of examples, through its cache."""

    cache: FeatureCache
    read: Callable[[str], bytes]
    backend: ProbeBackend = POOLED

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

    @property
    def backend(self) -> str:
        """The detect backend that serves the head."""
        return self.features.backend.name

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
        metadata = {**self.head.metadata, **self.features.backend.metadata, **provenance}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.features.backend.head_file
        replace(self.head, metadata=metadata).save(path)
        return path

    @classmethod
    def from_artefact(cls, data: bytes, folder: Path, features: ProbeFeatures) -> ProbeCandidate:
        """A registered head (e.g. production's), read back from its artefact's bytes."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / features.backend.head_file
        path.write_bytes(data)
        return cls(ProbeHead.load(path), features)


class ProbeRecipe:
    """Trains heads on one job's cached features (packed into ``folder`` at construction)."""

    def __init__(self, data: TrainingData, features: ProbeFeatures, folder: Path) -> None:
        self._features = features
        self._validation_reals = [item for item in data.validation if item.example.label == 0]
        self._train = features.row_file(data.train, folder / "train.f32")
        self._validation = features.row_file(data.validation, folder / "validation.f32")

    def params(self) -> dict[str, Any]:
        """The backend and the frozen backbone's weights, which the head depends on."""
        return {
            "detect_backend": self._features.backend.name,
            "backbone_weights_sha256": WEIGHTS_SHA256[:16],
        }

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
        return result, ProbeCandidate(self._banded(result.head), self._features)

    def trial_trainer(self) -> ProbeTrial:
        """A Ray Tune trial's trainer, carrying this job's rows to whichever node runs it."""
        from deeptrust.training.trainer.ray_tune import ProbeTrial, ShippedRows

        return ProbeTrial(ShippedRows.of(self._train), ShippedRows.of(self._validation))

    def _banded(self, head: ProbeHead) -> ProbeHead:
        """The head with its backend's two thresholds, set on the validation reals.

        With too few validation reals to tell the two rates apart (both thresholds land on
        one score), the head keeps the stricter threshold and no band.
        """
        fprs = self._features.backend.band_fprs
        if fprs is None:
            return head
        candidate = ProbeCandidate(head, self._features)
        real = candidate.probabilities(self._validation_reals)
        strict, lenient = (threshold_at_fpr(real, fpr) for fpr in fprs)
        strict = min(strict, MAX_THRESHOLD)
        band = lenient if lenient < strict else None
        metadata = {**head.metadata, "fpr_ai_generated": fprs[0], "fpr_inconclusive": fprs[1]}
        return replace(head, threshold=strict, inconclusive_threshold=band, metadata=metadata)
