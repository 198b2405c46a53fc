"""The torch training loop for the detector's probe head, resumable and mixed-precision.

The deployed ``mobilenet-probe`` head is logistic regression on frozen MobileNetV2 features
(:class:`~processors.detectors.mobilenet_probe.ProbeHead`). The numpy trainer
(``training.detector.probe``) fits it by Newton's method, which needs the whole feature
matrix and a D x D Hessian in memory; the retrain service instead streams minibatches
through a ``torch.nn.Linear`` so the same code scales to more rows, runs on a GPU, and can
be killed and resumed. It returns a ``ProbeHead`` built exactly as the numpy trainer builds
one (training-set standardisation, balanced classes), so the detect stage loads it
unchanged.

The objective is the numpy trainer's: binary cross-entropy with per-sample weights that give
each class the same total weight (mean weight 1, :func:`training.detector.probe.balanced_weights`),
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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from processors.detectors.mobilenet_probe import ProbeHead
from streams.atomic_file import write_atomically
from training.detector.probe import MIN_SCALE, balanced_weights
from training.evaluation.classification import roc_auc
from training.trainer.config import TrainConfig

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_FORMAT = 1
DATA_DIGEST_VERSION = b"deeptrust-train-data/1"


@dataclass(frozen=True)
class EpochStats:
    """What one epoch achieved, handed to ``on_epoch`` (the service logs it to MLflow).

    ``epoch`` counts from 1. ``train_loss`` is the mean class-balanced loss over the epoch's
    minibatches (the model moving as it goes); ``val_loss`` the class-balanced loss of the
    model at the epoch's end, the quantity the best epoch is chosen by. ``val_accuracy``
    uses the config's threshold. ``val_auc`` is NaN when validation holds one class only.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_auc: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        """The numbers as ``name -> float`` for a metrics logger, leaving out an undefined AUC."""
        values = {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "epoch_seconds": self.seconds,
        }
        if math.isfinite(self.val_auc):
            values["val_auc"] = self.val_auc
        return values


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


def resolve_device(name: str) -> torch.device:
    """``"auto"``: the current CUDA device if there is one, else the CPU; or the named device.

    A named CUDA device on a machine without one fails here, with a message, rather than
    deep inside the first tensor copy.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """``"auto"``: fp16 on CUDA (tensor cores, with a gradient scaler), fp32 elsewhere.

    CPUs gain little from float16 autocast and lack fast float16 kernels, so auto keeps them
    in fp32; ``"bf16"`` or ``"fp16"`` may still be forced on any device.
    """
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision {name!r} is not auto, fp32, fp16 or bf16")
    return name


def _autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a resolved precision; None means plain float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast for half precision, nothing for fp32, so one code path serves all three."""
    if dtype is None:
        return nullcontext()
    context: AbstractContextManager[Any] = torch.autocast(device_type=device.type, dtype=dtype)
    return context


def _checked(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features as float64 rows and 0/1 labels as float64, or a ValueError naming the set."""
    features = np.asarray(x, np.float64)
    labels = np.asarray(y)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(
            f"{name} features {features.shape} and labels {labels.shape} must be (N, D) and (N,)"
        )
    if len(labels) == 0:
        raise ValueError(f"{name} set is empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{name} labels must be 0 (human) or 1 (AI-generated)")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} features hold NaN or infinite values")
    return features, labels.astype(np.float64)


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


def _log_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row binary cross-entropy from logits: ``log(1 + e^z) - y z``, in float32.

    The same function as ``binary_cross_entropy_with_logits`` and as stable (``softplus``
    is linear beyond ``z = 20``), but one fused elementwise op: on small CPU batches torch's
    own version measured about 100 times slower here (thread-pool overhead per call).
    """
    z = logits.float()
    loss: torch.Tensor = F.softplus(z) - labels * z
    return loss


def _accumulate_gradients(
    model: torch.nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    micro_size: int,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Backward one effective batch in micro-batches; return its weighted mean loss (detached).

    Each micro-batch's loss is its weighted sum divided by the *effective* batch's row count,
    so the micro-batches' gradients add up to the gradient of the effective batch's mean
    loss, whatever their sizes (a short last effective batch or a short last micro-batch
    included). The caller steps the optimiser afterwards.
    """
    rows = x.shape[0]
    total = torch.zeros((), device=x.device)
    for start in range(0, rows, micro_size):
        stop = start + micro_size
        with _autocast(x.device, dtype):
            logits = model(x[start:stop]).squeeze(1)
        # The loss in float32 whatever autocast produced: half precision loses too much there.
        losses = _log_loss(logits, y[start:stop])
        loss = (losses * w[start:stop]).sum() / rows
        (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    return total


def _evaluate(model: torch.nn.Linear, data: _Data, threshold: float) -> tuple[float, float, float]:
    """Class-balanced loss, accuracy and ROC-AUC on validation, always in float32.

    The deployed head is float64 numpy, so validation is computed at full precision whatever
    the training precision, and the best epoch is chosen by what will be served.
    """
    model.eval()
    with torch.no_grad():
        logits = model(data.val_x).squeeze(1).float()
        losses = _log_loss(logits, data.val_y)
        val_loss = float((losses * data.val_w).sum().item()) / len(data.val_labels)
        scores = logits.double().cpu().numpy()
    model.train()
    # p >= threshold  <=>  logit >= log(threshold / (1 - threshold)); no sigmoid saturation.
    predicted = scores >= math.log(threshold / (1.0 - threshold))
    accuracy = float(np.mean(predicted == data.val_labels.astype(bool)))
    auc = roc_auc(data.val_labels, scores)
    return val_loss, accuracy, math.nan if auc is None else auc


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG the run may touch (none on the CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


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
    dtype = _autocast_dtype(precision)
    data = _prepare(train_x, train_y, val_x, val_y, device)
    with torch.random.fork_rng(devices=_rng_devices(device)):
        return _run(data, config, device, precision, dtype, checkpoint_dir, on_epoch)


def _make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 on CUDA, where small gradients would underflow to zero.

    bfloat16 has float32's exponent range and needs none; float16 forced on the CPU goes
    without one too (a linear head's gradients stay far from float16's underflow).
    """
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def _run(
    data: _Data,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    dtype: torch.dtype | None,
    checkpoint_dir: Path | None,
    on_epoch: Callable[[EpochStats], None] | None,
) -> TrainResult:
    """The loop itself, inside :func:`train_probe`'s RNG fork."""
    # Seed only the generators this run forked (the CPU's, and its own GPU's), not every
    # GPU's as torch.manual_seed would: the model is initialised on the CPU from this seed.
    torch.default_generator.manual_seed(config.seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model = torch.nn.Linear(data.train_x.shape[1], 1).to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": [model.weight], "weight_decay": config.weight_decay},
            {"params": [model.bias], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    scaler = _make_scaler(precision, device)
    history: list[EpochStats] = []
    best: _Best | None = None
    resumed_from: int | None = None
    path = None if checkpoint_dir is None else checkpoint_dir / CHECKPOINT_FILE
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        _check_checkpoint(saved, path, config, data, precision, scaler is not None)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        shuffle.set_state(saved["shuffle_rng"])
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
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
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
            # A run killed mid-write keeps its previous checkpoint whole, never a truncated
            # one that would fail the resume.
            state = {
                "format": CHECKPOINT_FORMAT,
                "config_digest": config.digest(),
                "data_digest": data.digest,
                "precision": precision,
                "scaled": scaler is not None,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "shuffle_rng": shuffle.get_state(),
                "best": best.state(),
                "history": [asdict(entry) for entry in history],
            }
            write_atomically(path, partial(torch.save, state))
    if best is None:  # unreachable: epochs >= 1 and a checkpoint always holds a best
        raise RuntimeError("no epoch was trained")
    return _result(best, history, data, config, device, precision, resumed_from)


def _check_checkpoint(
    saved: dict[str, Any],
    path: Path,
    config: TrainConfig,
    data: _Data,
    precision: str,
    scaled: bool,
) -> None:
    """Refuse to resume a checkpoint that belongs to another run."""
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {saved.get('format')!r}, not 1")
    if saved["config_digest"] != config.digest():
        raise ValueError(
            f"{path} was written by another config (digest {saved['config_digest'][:12]}, this "
            f"config {config.digest()[:12]}); use a fresh checkpoint directory per grid point"
        )
    if saved["data_digest"] != data.digest:
        raise ValueError(
            f"{path} was written for other training or validation data (digest "
            f"{saved['data_digest'][:12]}, this data {data.digest[:12]}); refusing to mix runs"
        )
    if saved["precision"] != precision or saved["scaled"] != scaled:
        raise ValueError(
            f"{path} was trained in {saved['precision']} (gradient scaler: {saved['scaled']}); "
            f"this device resolves to {precision} (gradient scaler: {scaled})"
        )


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
        "trainer": "training.trainer",
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
