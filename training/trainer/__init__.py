"""The retrain service's torch training loop for the detector's probe head.

The retrain service (``training.service``) answers a ``retrain.v1`` request by computing
frozen-backbone features for its dataset, loading ``training/configs/detector.toml`` with
:func:`load_config`, and calling :func:`train_probe` once per point of
:func:`expand_sweep`'s grid, each with its own checkpoint directory so a killed worker
resumes where it stopped. It logs each :class:`EpochStats` to MLflow through ``on_epoch``
and registers the best run's head, a plain
:class:`~processors.detectors.mobilenet_probe.ProbeHead` the detect stage loads unchanged.

The config half imports no torch, so the service can validate a config anywhere; the loop
half needs the ``train`` extra (``.venv-train``) and is imported lazily here for that
reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.trainer.config import SWEEPABLE, TrainConfig, expand_sweep, load_config

if TYPE_CHECKING:
    from training.trainer.loop import EpochStats, TrainResult, train_probe

__all__ = [
    "SWEEPABLE",
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "expand_sweep",
    "load_config",
    "train_probe",
]

_LOOP_NAMES = frozenset({"EpochStats", "TrainResult", "train_probe"})


def __getattr__(name: str) -> Any:
    """Import the torch half on first use, so ``training.trainer.config`` works without torch."""
    if name in _LOOP_NAMES:
        from training.trainer import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
