"""What a retrain job needs from a kind of detector: train one grid point, score, package.

The job (:mod:`deeptrust.training.service.job`) owns what every detector shares: data, the sweep's
nested runs, the choice of the best grid point, the test-split evaluation beside
production's, and registration. A recipe owns what differs: the probe
(:mod:`deeptrust.training.service.probe_recipe`) trains a head on cached frozen features, the ViT
(:mod:`deeptrust.training.service.vit_recipe`) fine-tunes a whole classifier on the images. What
either trains is a :class:`Candidate`, scored on images and packaged as one artefact that
the detect backend named by ``backend`` loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from deeptrust.training.datasets.quality import Accepted

if TYPE_CHECKING:  # the canary imports recipes' artefact readers without torch
    from deeptrust.training.trainer import EpochStats, TrainConfig
    from deeptrust.training.trainer.ray_tune import TrialTrainer


def labels_of(items: Sequence[Accepted]) -> np.ndarray:
    """The examples' 0/1 labels as float64."""
    return np.array([item.example.label for item in items], np.float64)


class Candidate(Protocol):
    """A trained detector: its probabilities on examples, and its artefact."""

    @property
    def backend(self) -> str:
        """The detect backend that serves the artefact."""
        ...

    @property
    def threshold(self) -> float:
        """Probability at or above which the detector says ``ai_generated``."""
        ...

    def probabilities(self, items: Sequence[Accepted]) -> np.ndarray:
        """P(AI-generated) per example, as the deployed detector computes it."""
        ...

    def write(self, folder: Path, provenance: dict[str, str]) -> Path:
        """Write the artefact, recording ``provenance`` in it, into ``folder``; return it."""
        ...


class Outcome(Protocol):
    """How one grid point's training went (``TrainResult`` and ``FineTuneResult`` both are)."""

    @property
    def history(self) -> list[EpochStats]:
        """Every epoch's stats."""
        ...

    @property
    def best_epoch(self) -> int:
        """The epoch the candidate comes from."""
        ...

    @property
    def resumed_from(self) -> int | None:
        """The last epoch a checkpoint held when training started, if any."""
        ...

    @property
    def device(self) -> str:
        """What ``device = "auto"`` resolved to."""
        ...

    @property
    def precision(self) -> str:
        """What ``precision = "auto"`` resolved to."""
        ...


class Recipe(Protocol):
    """Trains one kind of detector on one job's data."""

    def params(self) -> dict[str, Any]:
        """Run parameters that describe the recipe (e.g. the frozen backbone's weights)."""
        ...

    def fit(
        self,
        config: TrainConfig,
        checkpoints: Path,
        on_epoch: Callable[[EpochStats], None],
        folder: Path,
    ) -> tuple[Outcome, Candidate]:
        """Train one grid point, resuming from ``checkpoints``; ``folder`` is its scratch space."""
        ...

    def trial_trainer(self) -> TrialTrainer | None:
        """What trains a grid point in a Ray Tune trial, or None if points run one by one."""
        ...
