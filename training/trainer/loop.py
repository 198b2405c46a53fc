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
from torch.utils.data import DataLoader, Dataset

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.training.detector.probe import MIN_SCALE, balanced_weights
from deeptrust.training.trainer.config import TrainConfig
from deeptrust.training.trainer.loading import LoaderOptions
from deeptrust.training.trainer.rows import CHUNK_ROWS, ArrayRows, FeatureRows
from deeptrust.training.trainer.runtime import (
    CHECKPOINT_FILE,
    EpochStats,
    RunIdentity,
    accumulate_gradients,
    autocast_dtype,
    checked_labels,
    checkpoint_state,
    load_checkpoint,
    make_scaler,
    optimizer_step,
    resolve_device,
    resolve_precision,
    resume_from,
    rng_devices,
    save_checkpoint,
    seed_run,
    validation_metrics,
)
from deeptrust.training.trainer.streaming import EpochBatches, InOrder, loader, shutdown, unchanged

__all__ = ["CHECKPOINT_FILE", "EpochStats", "TrainResult", "train_probe", "train_probe_rows"]

CHECKPOINT_FORMAT = 1
DATA_DIGEST_VERSION = b"deeptrust-train-data/2"


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
    """Both sets of rows, the training set's standardisation, labels and weights, the digest."""

    mean: np.ndarray
    scale: np.ndarray
    train: FeatureRows
    train_y: torch.Tensor
    train_w: torch.Tensor
    val: FeatureRows
    val_y: torch.Tensor
    val_w: torch.Tensor
    val_labels: np.ndarray
    digest: str


def _prepare(train: FeatureRows, val: FeatureRows, device: torch.device) -> _Data:
    """Check the labels, take the standardisation from the training rows, as ``ProbeHead`` will.

    The digest covers both sets' content and labels (validation chooses the best epoch, so
    it is part of the run too).
    """
    ty = checked_labels(train.labels, "training")
    vy = checked_labels(val.labels, "validation")
    for name, rows, labels in (("training", train, ty), ("validation", val, vy)):
        if len(rows) != len(labels):
            raise ValueError(f"{name} has {len(rows)} rows but {len(labels)} labels")
    if train.dim != val.dim:
        raise ValueError(f"training has {train.dim}-d features, validation {val.dim}-d")
    if len(np.unique(ty)) != 2:
        raise ValueError("the training set must hold both classes")
    mean, std = train.statistics()
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("training features hold NaN or infinite values")
    sha = hashlib.sha256(DATA_DIGEST_VERSION)
    for rows, labels in ((train, ty), (val, vy)):
        sha.update(f"{len(rows)}x{rows.dim}".encode())
        sha.update(rows.identity)
        sha.update(labels.astype(np.uint8).tobytes())

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(device)

    return _Data(
        mean=mean,
        scale=np.maximum(std, MIN_SCALE),
        train=train,
        train_y=tensor(ty),
        train_w=tensor(balanced_weights(ty)),
        val=val,
        val_y=tensor(vy),
        val_w=tensor(balanced_weights(vy)),
        val_labels=vy.astype(np.int64),
        digest=sha.hexdigest(),
    )


class StandardisedRows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches of rows standardised as the head will standardise them, float32.

    ``__getitems__`` reads a whole batch at once (one call per batch, not per row).
    """

    def __init__(self, rows: FeatureRows, mean: np.ndarray, scale: np.ndarray) -> None:
        self.rows, self.mean, self.scale = rows, mean, scale

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.rows.take(indices) - self.mean) / self.scale
        if not np.isfinite(x).all():
            raise ValueError("features hold NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.tensor(indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, indices = self.__getitems__([index])
        return x[0], indices[0]


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


def _evaluate(
    model: torch.nn.Linear, batches: DataLoader[Any], data: _Data, threshold: float
) -> tuple[float, float, float]:
    """Class-balanced loss, accuracy and ROC-AUC on validation, always in float32.

    The deployed head is float64 numpy, so validation is computed at full precision whatever
    the training precision, and the best epoch is chosen by what will be served.
    """
    model.eval()
    device = data.val_y.device
    with torch.no_grad():
        logits = torch.cat([model(x.to(device)).squeeze(1) for x, _ in batches])
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
    """:func:`train_probe_rows` on ``(N, D)`` arrays already in memory."""
    sets = []
    for name, x, y in (("training", train_x, train_y), ("validation", val_x, val_y)):
        features, labels = np.asarray(x, np.float64), np.asarray(y)
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
            raise ValueError(
                f"{name} features {features.shape} and labels {labels.shape} "
                "must be (N, D) and (N,)"
            )
        if not np.isfinite(features).all():
            raise ValueError(f"{name} features hold NaN or infinite values")
        sets.append(ArrayRows(features, labels))
    return train_probe_rows(sets[0], sets[1], config, checkpoint_dir, on_epoch)


def train_probe_rows(
    train: FeatureRows,
    val: FeatureRows,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    loading: LoaderOptions | None = None,
    on_checkpoint: Callable[[EpochStats, Path], None] | None = None,
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

    Rows are read a batch at a time (``loading``: in this process by default, since a row
    is one small ``pread``); the caller's torch RNG state is left as it was: seeding
    happens inside a fork. ``on_checkpoint`` runs once an epoch's ``last.pt`` is written
    (Ray Tune persists the folder from there: :mod:`deeptrust.training.trainer.ray_tune`).
    """
    if config.sweep:
        raise ValueError("train_probe takes one grid point; expand_sweep(config) first")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = _prepare(train, val, device)
    with torch.random.fork_rng(devices=rng_devices(device)):
        run = _Run(data, config, device, precision, loading or LoaderOptions(workers=0))
        try:
            return run.train(checkpoint_dir, on_epoch, on_checkpoint)
        finally:
            run.close()


class _Run:
    """One probe run: the head, optimiser and loaders, and the loop over epochs."""

    def __init__(
        self,
        data: _Data,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        loading: LoaderOptions,
    ) -> None:
        self.data, self.config, self.device, self.precision = data, config, device, precision
        # The model is initialised on the CPU from this seed.
        self.shuffle = seed_run(config.seed, device)
        self.model = torch.nn.Linear(data.train.dim, 1).to(device)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [self.model.weight], "weight_decay": config.weight_decay},
                {"params": [self.model.bias], "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        self.scaler = make_scaler(precision, device)
        self.identity = RunIdentity(
            CHECKPOINT_FORMAT, config, data.digest, precision, self.scaler is not None
        )
        self.train_batches = loader(
            StandardisedRows(data.train, data.mean, data.scale),
            EpochBatches(len(data.train), config.batch_size, self.shuffle),
            loading,
            unchanged,
        )
        self.val_batches = loader(
            StandardisedRows(data.val, data.mean, data.scale),
            InOrder(len(data.val), CHUNK_ROWS),
            loading,
            unchanged,
        )

    def close(self) -> None:
        """Stop the loaders' worker processes, if any."""
        shutdown(self.train_batches)
        shutdown(self.val_batches)

    def _train_epoch(self) -> float:
        """One pass over the shuffled training rows; the mean loss."""
        data, config, device = self.data, self.config, self.device
        micro_size = config.batch_size // config.accumulation_steps
        self.model.train()
        loss_sum = torch.zeros((), device=device)
        for x, batch in self.train_batches:
            index = batch.to(device)
            mean_loss = _accumulate_gradients(
                self.model,
                x.to(device),
                data.train_y[index],
                data.train_w[index],
                micro_size,
                autocast_dtype(self.precision),
                self.scaler,
            )
            loss_sum += mean_loss * len(batch)
            optimizer_step(self.optimizer, self.scaler)
        return float(loss_sum.item()) / len(data.train)

    def train(
        self,
        checkpoint_dir: Path | None,
        on_epoch: Callable[[EpochStats], None] | None,
        on_checkpoint: Callable[[EpochStats, Path], None] | None = None,
    ) -> TrainResult:
        """Resume if a checkpoint is there, run the remaining epochs, return the best head."""
        model, optimizer, scaler, device = self.model, self.optimizer, self.scaler, self.device
        history: list[EpochStats] = []
        best: _Best | None = None
        resumed_from: int | None = None
        path = None if checkpoint_dir is None else checkpoint_dir / CHECKPOINT_FILE
        saved = None if path is None else load_checkpoint(path, self.identity)
        if saved is not None:
            history = resume_from(saved, model, optimizer, scaler, device, self.shuffle)
            best = _Best(**saved["best"])
            resumed_from = int(saved["epoch"])
        for epoch in range((resumed_from or 0) + 1, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss = self._train_epoch()
            val_loss, accuracy, auc = _evaluate(
                model, self.val_batches, self.data, self.config.threshold
            )
            stats = EpochStats(
                epoch=epoch,
                train_loss=train_loss,
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
                state = checkpoint_state(
                    self.identity,
                    epoch,
                    model.state_dict(),
                    optimizer,
                    scaler,
                    device,
                    self.shuffle,
                    best.state(),
                    history,
                )
                save_checkpoint(path, state)
                if on_checkpoint is not None and checkpoint_dir is not None:
                    on_checkpoint(stats, checkpoint_dir)
        if best is None:  # unreachable: epochs >= 1 and a checkpoint always holds a best
            raise RuntimeError("no epoch was trained")
        return _result(best, history, self.data, self.config, device, self.precision, resumed_from)


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
        "train_rows": len(data.train),
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
