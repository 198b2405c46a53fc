"""The ``hf-vit`` recipe: fine-tune a transformers image classifier on the job's images.

Training is :func:`deeptrust.training.trainer.finetune.fine_tune_sets` on the job's images,
read lazily from the object store by a loader's worker processes
(:mod:`deeptrust.training.trainer.streaming`); scoring loads the trained
directory through the production ``hf-vit`` detect backend
(``deeptrust.processors.models.load_model``
with the options a detect stage would be given), so the offline metrics are those of the
code that will serve it. The artefact is the directory as a reproducible ``.tar.gz``
(:mod:`deeptrust.processors.artefact_archive`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import deeptrust.processors.transformers_backends  # noqa: F401 - registers the hf-vit backend
from deeptrust.processors.artefact_archive import SUFFIX, pack_directory, unpack_archive
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.transformers_backends.common import (
    DEFAULT_THRESHOLD,
    extend_training_record,
    recorded_threshold,
)
from deeptrust.training.datasets.quality import Accepted
from deeptrust.training.service.data import TrainingData
from deeptrust.training.service.recipe import Outcome
from deeptrust.training.trainer.cluster import RayCluster
from deeptrust.training.trainer.loading import LoaderOptions

if TYPE_CHECKING:  # torch is imported when a fit starts: the canary reads archives without it
    from deeptrust.training.trainer import EpochStats, TrainConfig
    from deeptrust.training.trainer.streaming import ImageDataset

BACKEND = "hf-vit"
ARCHIVE_FILE = f"model{SUFFIX}"


SCORE_BATCH = 32
"""Images decoded at once (per loader batch) while a candidate scores a split."""


def image_dataset(items: Sequence[Accepted], read: Callable[[str], bytes]) -> ImageDataset:
    """The examples as a lazily read dataset: URIs, content hashes and labels only."""
    from deeptrust.training.trainer.streaming import ImageDataset, ImageRef

    refs = [ImageRef(item.example.uri, item.sha256, item.example.label) for item in items]
    return ImageDataset(refs, read)


class ViTCandidate:
    """A ``save_pretrained`` classifier directory, scored through the ``hf-vit`` backend."""

    backend = BACKEND

    def __init__(
        self,
        folder: Path,
        threshold: float,
        read: Callable[[str], bytes],
        loading: LoaderOptions | None = None,
    ) -> None:
        self.folder = folder
        self.threshold = threshold
        self._read = read
        self._loading = loading or LoaderOptions()

    def spec(self) -> ModelSpec:
        """The spec a detect stage serving this directory would build."""
        options = {"path": str(self.folder), "threshold": str(self.threshold)}
        return ModelSpec("detect", BACKEND, BACKEND, options=options)

    @cached_property
    def _model(self) -> Any:
        return load_model(self.spec())

    def probabilities(self, items: Sequence[Accepted]) -> np.ndarray:
        """The backend's ``ai_probability`` per example, decoded a batch at a time in workers."""
        from deeptrust.training.trainer.streaming import InOrder, loader, shutdown, unchanged

        scores: list[float] = []
        batches = loader(
            image_dataset(items, self._read),
            InOrder(len(items), SCORE_BATCH),
            self._loading,
            unchanged,
        )
        try:
            for batch in batches:
                verdicts = self._model.predict([image for image, _ in batch])
                scores += [verdict.ai_probability for verdict in verdicts]
        finally:
            shutdown(batches)
        return np.array(scores, np.float64)

    def write(self, folder: Path, provenance: dict[str, str]) -> Path:
        """The directory, its record extended by ``provenance``, as one ``.tar.gz``."""
        extend_training_record(self.folder, provenance)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ARCHIVE_FILE
        path.write_bytes(pack_directory(self.folder))
        return path

    @classmethod
    def from_artefact(
        cls,
        data: bytes,
        folder: Path,
        read: Callable[[str], bytes],
        loading: LoaderOptions | None = None,
    ) -> ViTCandidate:
        """A registered archive (e.g. production's), unpacked into ``folder``."""
        unpack_archive(data, folder)
        return cls.from_folder(folder, read, loading)

    @classmethod
    def from_folder(
        cls, folder: Path, read: Callable[[str], bytes], loading: LoaderOptions | None = None
    ) -> ViTCandidate:
        """An unpacked archive, with the threshold its training record names."""
        threshold = recorded_threshold(str(folder))
        return cls(folder, DEFAULT_THRESHOLD if threshold is None else threshold, read, loading)


class ViTRecipe:
    """Fine-tunes classifiers on one job's images, read from the store batch by batch.

    With a Ray cluster, Ray Train's workers fine-tune data-parallel there
    (:mod:`deeptrust.training.trainer.ray_train`); without one, this process does.
    """

    def __init__(
        self,
        data: TrainingData,
        read: Callable[[str], bytes],
        loading: LoaderOptions,
        cluster: RayCluster | None = None,
    ) -> None:
        self._read = read
        self._loading = loading
        self._cluster = cluster
        self._train = image_dataset(data.train, read)
        self._validation = image_dataset(data.validation, read)

    def params(self) -> dict[str, Any]:
        """Nothing beyond the config: the base model is a hyperparameter."""
        return {}

    def fit(
        self,
        config: TrainConfig,
        checkpoints: Path,
        on_epoch: Callable[[EpochStats], None],
        folder: Path,
    ) -> tuple[Outcome, ViTCandidate]:
        """One grid point's fine-tune, its best epoch written to ``folder / "model"``.

        On Ray the run is named by its checkpoint folder (request, data version, config), so
        a redelivered job resumes the run it started; its epochs reach ``on_epoch`` when it
        ends.
        """
        if self._cluster is not None:
            from deeptrust.training.trainer.ray_train import fine_tune_on_ray

            # The checkpoint folder names the request, data version and config.
            name = "finetune-" + hashlib.sha256(str(checkpoints).encode()).hexdigest()[:16]
            result = fine_tune_on_ray(
                self._train,
                self._validation,
                config,
                folder / "model",
                self._cluster,
                name,
                self._loading,
            )
            for stats in result.history:
                on_epoch(stats)
        else:
            from deeptrust.training.trainer.finetune import fine_tune_sets

            result = fine_tune_sets(
                self._train,
                self._validation,
                config,
                folder / "model",
                checkpoints,
                on_epoch,
                self._loading,
            )
        candidate = ViTCandidate(result.output_dir, config.threshold, self._read, self._loading)
        return result, candidate

    def trial_trainer(self) -> None:
        """None: each grid point is already a Ray Train run of its own, one after another."""
        return None
