"""The torch training loop for the detector's probe head, resumable and mixed-precision.

The deployed ``mobilenet-probe`` head is logistic regression on frozen MobileNetV2 features
(:class:`~deeptrust.processors.detectors.mobilenet_probe.ProbeHead`). The numpy trainer
(``deeptrust.training.detector.probe``) fits it by Newton's method, which needs the whole feature
matrix and a D x D Hessian in memory; the retrain service instead streams minibatches
through a ``torch.nn.Linear`` so the same code scales to more rows, runs on a GPU, and can
be killed and resumed. It returns a ``ProbeHead`` built exactly as the numpy trainer builds
one (training-set standardisation, balanced classes), so the detect stage loads it
unchanged.

The objective is the numpy trainer's: binary cross-entropy with per-sample weights that give
each class the same total weight (mean weight 1,
:func:`deeptrust.training.detector.probe.balanced_weights`),
plus an L2 pull on the weights but not the bias (here AdamW's decoupled weight decay).
Per-sample weights rather than ``pos_weight`` keep the loss's scale independent of the class
ratio, so one learning rate suits balanced and skewed data alike.

Only the retrain worker imports this module (it needs torch, ``.venv-train``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.training.detector.probe import MIN_SCALE, balanced_weights
from deeptrust.training.trainer.config import TrainConfig
from deeptrust.training.trainer.runtime import (
    CHECKPOINT_FILE,
    EpochStats,
    RunIdentity,
    accumulate_gradients,
    autocast_dtype,
    checked_labels,
    load_checkpoint,
    make_scaler,
    optimizer_step,
    resolve_device,
    resolve_precision,
    restore_rng,
    rng_devices,
    rng_state,
    save_checkpoint,
    seed_run,
    validation_metrics,
)

__all__ = ["CHECKPOINT_FILE", "EpochStats", "TrainResult", "train_probe"]

CHECKPOINT_FORMAT = 1
DATA_DIGEST_VERSION = b"deeptrust-train-data/1"


@dataclass(frozen=True)
class TrainResult:
    """The best epoch's head and how the run got there.

    ``resumed_from`` is the last epoch a checkpoint had completed when this call started
    (None for a fresh run; equal to the config's ``epochs`` when the run had already
    finished). ``history`` holds every epoch, including those run before a resume.
    ``device`` and ``precision`` are what ``"auto"`` resolved to (also in the head's metadata).
    """

    head: ProbeHead
    history: list[EpochStats]
    best_epoch: int
    resumed_from: int | None
    device: str
    precision: str


@dataclass
class _Best:
    """The lowest-validation-loss epoch so far, its parameters kept on the CPU."""

    epoch: int
    val_loss: float
    weight: torch.Tensor
    bias: torch.Tensor

    def state(self) -> dict[str, Any]:
        """Plain types only, so the checkpoint loads with ``weights_only=True``."""
        return asdict(self)


@dataclass(frozen=True)
class _Data:
    """Standardised features as float32 tensors on the device, weights, and their digest."""

    mean: np.ndarray
    scale: np.ndarray
    train_x: torch.Tensor
    train_y: torch.Tensor
    train_w: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_w: torch.Tensor
    val_labels: np.ndarray
    digest: str


def _checked(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features as float64 rows and 0/1 labels as float64, or a ValueError naming the set."""
    features = np.asarray(x, np.float64)
    labels = np.asarray(y)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(
            f"{name} features {features.shape} and labels {labels.shape} must be (N, D) and (N,)"
        )
    checked = checked_labels(labels, name)
    if not np.isfinite(features).all():
        raise ValueError(f"{name} features hold NaN or infinite values")
    return features, checked


def _prepare(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    device: torch.device,
) -> _Data:
    """Standardise both sets by the training set's statistics, as ``ProbeHead`` will.

    The digest covers the standardised float32 rows the model actually sees and the labels
    of both sets (validation chooses the best epoch, so it is part of the run too).
    """
    tx, ty = _checked(train_x, train_y, "training")
    vx, vy = _checked(val_x, val_y, "validation")
    if tx.shape[1] != vx.shape[1]:
        raise ValueError(f"training has {tx.shape[1]}-d features, validation {vx.shape[1]}-d")
    if len(np.unique(ty)) != 2:
        raise ValueError("the training set must hold both classes")
    mean = tx.mean(axis=0)
    scale = np.maximum(tx.std(axis=0), MIN_SCALE)
    train_std = np.ascontiguousarray((tx - mean) / scale, np.float32)
    val_std = np.ascontiguousarray((vx - mean) / scale, np.float32)
    sha = hashlib.sha256(DATA_DIGEST_VERSION)
    for part in (train_std, ty.astype(np.uint8), val_std, vy.astype(np.uint8)):
        sha.update(repr(part.shape).encode())
        sha.update(part.tobytes())

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(device)

    return _Data(
        mean=mean,
        scale=scale,
        train_x=tensor(train_std),
        train_y=tensor(ty),
        train_w=tensor(balanced_weights(ty)),
        val_x=tensor(val_std),
        val_y=tensor(vy),
        val_w=tensor(balanced_weights(vy)),
        val_labels=vy.astype(np.int64),
        digest=sha.hexdigest(),
    )


def _accumulate_gradients(
    model: torch.nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    micro_size: int,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Backward one effective batch of feature rows through the linear head."""

    def forward(start: int, stop: int) -> torch.Tensor:
        logits: torch.Tensor = model(x[start:stop]).squeeze(1)
        return logits

    return accumulate_gradients(forward, y, w, micro_size, dtype, scaler)


def _evaluate(model: torch.nn.Linear, data: _Data, threshold: float) -> tuple[float, float, float]:
    """Class-balanced loss, accuracy and ROC-AUC on validation, always in float32.

    The deployed head is float64 numpy, so validation is computed at full precision whatever
    the training precision, and the best epoch is chosen by what will be served.
    """
    model.eval()
    with torch.no_grad():
        logits = model(data.val_x).squeeze(1)
    model.train()
    return validation_metrics(logits, data.val_y, data.val_w, threshold)


def train_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train a probe head on frozen features; return the lowest-validation-loss epoch's head.

    ``config`` must be one grid point (empty ``sweep``; see ``expand_sweep``). With
    ``checkpoint_dir``, ``last.pt`` there is rewritten after every epoch and a later call
    with the same config and data resumes after its last epoch, ending with the same head
    an uninterrupted run gives; a checkpoint from another config or other data raises
    ValueError rather than mixing two runs. ``on_epoch`` runs after each epoch's metrics and
    *before* its checkpoint, so a callback that fails (or a kill between the two) repeats
    that epoch on resume: reporting is at least once, never lost. Epochs finished before a
    resume are not reported again; they are in ``history``.

    The caller's torch RNG state is left as it was: seeding happens inside a fork.
    """
    if config.sweep:
        raise ValueError("train_probe takes one grid point; expand_sweep(config) first")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = _prepare(train_x, train_y, val_x, val_y, device)
    with torch.random.fork_rng(devices=rng_devices(device)):
        return _run(data, config, device, precision, checkpoint_dir, on_epoch)


def _run(
    data: _Data,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    checkpoint_dir: Path | None,
    on_epoch: Callable[[EpochStats], None] | None,
) -> TrainResult:
    """The loop itself, inside :func:`train_probe`'s RNG fork."""
    # The model is initialised on the CPU from this seed.
    shuffle = seed_run(config.seed, device)
    dtype = autocast_dtype(precision)
    model = torch.nn.Linear(data.train_x.shape[1], 1).to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": [model.weight], "weight_decay": config.weight_decay},
            {"params": [model.bias], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    scaler = make_scaler(precision, device)
    identity = RunIdentity(CHECKPOINT_FORMAT, config, data.digest, precision, scaler is not None)
    history: list[EpochStats] = []
    best: _Best | None = None
    resumed_from: int | None = None
    path = None if checkpoint_dir is None else checkpoint_dir / CHECKPOINT_FILE
    saved = None if path is None else load_checkpoint(path, identity)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(saved["scaler"])
        restore_rng(saved, device, shuffle)
        history = [EpochStats(**stats) for stats in saved["history"]]
        best = _Best(**saved["best"])
        resumed_from = int(saved["epoch"])

    rows = data.train_x.shape[0]
    micro_size = config.batch_size // config.accumulation_steps
    for epoch in range((resumed_from or 0) + 1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(rows, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, rows, config.batch_size):
            batch = order[start : start + config.batch_size]
            mean_loss = _accumulate_gradients(
                model,
                data.train_x[batch],
                data.train_y[batch],
                data.train_w[batch],
                micro_size,
                dtype,
                scaler,
            )
            loss_sum += mean_loss * len(batch)
            optimizer_step(optimizer, scaler)
        val_loss, accuracy, auc = _evaluate(model, data, config.threshold)
        stats = EpochStats(
            epoch=epoch,
            train_loss=float(loss_sum.item()) / rows,
            val_loss=val_loss,
            val_accuracy=accuracy,
            val_auc=auc,
            seconds=time.perf_counter() - started,
        )
        history.append(stats)
        # A diverged epoch (NaN loss) must never be "best": compare it as +inf.
        ranked = val_loss if math.isfinite(val_loss) else math.inf
        if best is None or ranked < best.val_loss:
            best = _Best(
                epoch=epoch,
                val_loss=ranked,
                weight=model.weight.detach().float().cpu().clone(),
                bias=model.bias.detach().float().cpu().clone(),
            )
        if on_epoch is not None:
            on_epoch(stats)
        if path is not None:
            state = {
                **identity.header(epoch),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(),
                **rng_state(device, shuffle),
                "best": best.state(),
                "history": [asdict(entry) for entry in history],
            }
            save_checkpoint(path, state)
    if best is None:  # unreachable: epochs >= 1 and a checkpoint always holds a best
        raise RuntimeError("no epoch was trained")
    return _result(best, history, data, config, device, precision, resumed_from)


def _result(
    best: _Best,
    history: list[EpochStats],
    data: _Data,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    resumed_from: int | None,
) -> TrainResult:
    """The best epoch as a float64 ``ProbeHead`` carrying the run's provenance."""
    best_stats = history[best.epoch - 1]
    metadata: dict[str, Any] = {
        "trainer": "deeptrust.training.trainer",
        "config": config.model_dump(mode="json"),
        "config_digest": config.digest(),
        "data_digest": data.digest,
        "best_epoch": best.epoch,
        "best_val_loss": best_stats.val_loss,
        "best_val_accuracy": best_stats.val_accuracy,
        "best_val_auc": best_stats.val_auc if math.isfinite(best_stats.val_auc) else None,
        "train_rows": int(data.train_x.shape[0]),
        "val_rows": len(data.val_labels),
        "device": str(device),
        "precision": precision,
        "torch_version": str(torch.__version__),
    }
    head = ProbeHead(
        weights=best.weight.double().numpy().reshape(-1),
        bias=float(best.bias.double().item()),
        mean=data.mean,
        scale=data.scale,
        threshold=config.threshold,
        metadata=metadata,
    )
    return TrainResult(
        head=head,
        history=list(history),
        best_epoch=best.epoch,
        resumed_from=resumed_from,
        device=str(device),
        precision=precision,
    )
