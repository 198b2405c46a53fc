"""The retrain service's torch trainers: the detector's probe head, or a fine-tuned ViT.

The retrain service (``deeptrust.training.service``) answers a ``retrain.v1`` request by computing
frozen-backbone features for its dataset, loading ``training/configs/detector.toml`` with
:func:`load_config`, and calling :func:`train_probe` once per point of
:func:`expand_sweep`'s grid, each with its own checkpoint directory so a killed worker
resumes where it stopped. It logs each :class:`EpochStats` to MLflow through ``on_epoch``
and registers the best run's head, a plain
:class:`~deeptrust.processors.detectors.mobilenet_probe.ProbeHead` the detect stage loads unchanged.
A config with ``backbone = "hf-vit"`` calls :func:`fine_tune` instead, which fine-tunes a
transformers image classifier into a directory the ``hf-vit`` detect backend loads.

The config half imports no torch, so the service can validate a config anywhere; the loop
half needs the ``train`` extra (``.venv-train``) and is imported lazily here for that
reason.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deeptrust.training.trainer.config import SWEEPABLE, TrainConfig, expand_sweep, load_config

if TYPE_CHECKING:
    from deeptrust.training.trainer.finetune import FineTuneResult, fine_tune
    from deeptrust.training.trainer.loop import TrainResult, train_probe
    from deeptrust.training.trainer.runtime import EpochStats

__all__ = [
    "SWEEPABLE",
    "EpochStats",
    "FineTuneResult",
    "TrainConfig",
    "TrainResult",
    "expand_sweep",
    "fine_tune",
    "load_config",
    "train_probe",
]

_TORCH_NAMES = {
    "EpochStats": "runtime",
    "TrainResult": "loop",
    "train_probe": "loop",
    "FineTuneResult": "finetune",
    "fine_tune": "finetune",
}


def __getattr__(name: str) -> Any:
    """Import the torch half on first use, so ``.config`` works without torch."""
    if name in _TORCH_NAMES:
        module = importlib.import_module(f"deeptrust.training.trainer.{_TORCH_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
