"""What both trainers share: devices, mixed precision, the balanced loss, checkpoints, stats.

The probe loop (:mod:`deeptrust.training.trainer.loop`) and the ViT fine-tune
(:mod:`deeptrust.training.trainer.finetune`) train different models on different inputs, but make
the
same promises: the same device and precision rules, the same class-balanced binary
objective, gradient accumulation with the same effective-batch semantics, and checkpoints
that refuse another run's state. Keeping those here means the two cannot drift apart.

Only the retrain worker imports this module (it needs torch, ``.venv-train``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from deeptrust.streams.atomic_file import write_atomically
from deeptrust.training.evaluation.classification import roc_auc

CHECKPOINT_FILE = "last.pt"

Forward = Callable[[int, int], torch.Tensor]
"""Logits (one per row, the log-odds of "AI-generated") of rows ``start:stop`` of a batch."""


@dataclass(frozen=True)
class EpochStats:
    """What one epoch achieved, handed to ``on_epoch`` (the service logs it to MLflow).

    ``epoch`` counts from 1. ``train_loss`` is the mean class-balanced loss over the epoch's
    minibatches (the model moving as it goes); ``val_loss`` the class-balanced loss of the
    model at the epoch's end. ``val_accuracy`` uses the config's threshold. ``val_auc`` is
    NaN when validation holds one class only; both are NaN for the captioner, whose losses
    are its language-model losses.
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
            "epoch_seconds": self.seconds,
        }
        if math.isfinite(self.val_accuracy):  # NaN for a captioner: it has no classes
            values["val_accuracy"] = self.val_accuracy
        if math.isfinite(self.val_auc):
            values["val_auc"] = self.val_auc
        return values


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


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a resolved precision; None means plain float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast for half precision, nothing for fp32, so one code path serves all three."""
    if dtype is None:
        return nullcontext()
    context: AbstractContextManager[Any] = torch.autocast(device_type=device.type, dtype=dtype)
    return context


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 on CUDA, where small gradients would underflow to zero.

    bfloat16 has float32's exponent range and needs none; float16 forced on the CPU goes
    without one too (CPU autocast is for trying a config, not for speed).
    """
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG the run may touch (none on the CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def seed_run(seed: int, device: torch.device) -> torch.Generator:
    """Seed the generators a run forked (CPU, its own GPU); return the shuffling generator.

    Not ``torch.manual_seed``, which would reseed every GPU, including other runs'.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def checked_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """0/1 labels as float64, or a ValueError naming the set."""
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name} labels must be a non-empty 1-d array, not shape {values.shape}")
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} labels must be 0 (human) or 1 (AI-generated)")
    return values.astype(np.float64)


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row binary cross-entropy from logits: ``log(1 + e^z) - y z``, in float32.

    The same function as ``binary_cross_entropy_with_logits`` and as stable (``softplus``
    is linear beyond ``z = 20``), but one fused elementwise op: on small CPU batches torch's
    own version measured about 100 times slower here (thread-pool overhead per call).
    """
    z = logits.float()
    loss: torch.Tensor = F.softplus(z) - labels * z
    return loss


def accumulate_gradients(
    forward: Forward,
    y: torch.Tensor,
    w: torch.Tensor,
    micro_size: int,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    normaliser: float | None = None,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor:
    """Backward one effective batch in micro-batches; return its weighted mean loss (detached).

    Each micro-batch's loss is its weighted sum divided by the *effective* batch's row count,
    so the micro-batches' gradients add up to the gradient of the effective batch's mean
    loss, whatever their sizes (a short last effective batch or a short last micro-batch
    included). The caller steps the optimiser afterwards. A data-parallel process holding
    a share of the batch passes ``normaliser``, the batch's rows over the processes' count,
    since DDP averages the processes' gradients (:mod:`deeptrust.training.trainer.distributed`),
    and its model's ``no_sync``: every micro-batch but the last backwards without the
    all-reduce, so each process syncs once per batch whatever its share's size.
    """
    rows = y.shape[0] if normaliser is None else normaliser
    total = torch.zeros((), device=y.device)
    for start in range(0, y.shape[0], micro_size):
        stop = min(start + micro_size, y.shape[0])
        last = stop == y.shape[0]
        with nullcontext() if no_sync is None or last else no_sync():
            with autocast(y.device, dtype):
                logits = forward(start, stop)
            # The loss in float32 whatever autocast produced: half precision loses too much.
            loss = (log_loss(logits, y[start:stop]) * w[start:stop]).sum() / rows
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    return total


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Step (through the scaler, which skips a step with inf gradients) and clear gradients."""
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


def validation_metrics(
    logits: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    threshold: float,
) -> tuple[float, float, float]:
    """Class-balanced loss, accuracy at ``threshold`` and ROC-AUC of float32 logits."""
    z = logits.float()
    val_loss = float((log_loss(z, y) * w).sum().item()) / y.shape[0]
    scores = z.double().cpu().numpy()
    labels = y.cpu().numpy().astype(np.int64)
    # p >= threshold  <=>  logit >= log(threshold / (1 - threshold)); no sigmoid saturation.
    predicted = scores >= math.log(threshold / (1.0 - threshold))
    accuracy = float(np.mean(predicted == labels.astype(bool)))
    auc = roc_auc(labels, scores)
    return val_loss, accuracy, math.nan if auc is None else auc


def rng_state(device: torch.device, shuffle: torch.Generator) -> dict[str, Any]:
    """The generators a resumed run must continue from, as checkpoint entries."""
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "shuffle_rng": shuffle.get_state(),
    }


def restore_rng(saved: dict[str, Any], device: torch.device, shuffle: torch.Generator) -> None:
    """Put back what :func:`rng_state` saved."""
    torch.set_rng_state(saved["torch_rng"])
    if device.type == "cuda" and saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    shuffle.set_state(saved["shuffle_rng"])


class Digested(Protocol):
    """A config that names itself (a detector's ``TrainConfig``, the ``CaptionConfig``)."""

    def digest(self) -> str:
        """SHA-256 of what makes the run the run it is."""
        ...


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be resumed: its format, config, data and precision."""

    checkpoint_format: int
    config: Digested
    data_digest: str
    precision: str
    scaled: bool

    def header(self, epoch: int) -> dict[str, Any]:
        """The checkpoint entries :meth:`check` reads back."""
        return {
            "format": self.checkpoint_format,
            "config_digest": self.config.digest(),
            "data_digest": self.data_digest,
            "precision": self.precision,
            "scaled": self.scaled,
            "epoch": epoch,
        }

    def check(self, saved: dict[str, Any], path: Path) -> None:
        """Refuse to resume a checkpoint that belongs to another run."""
        if saved.get("format") != self.checkpoint_format:
            raise ValueError(
                f"{path} has checkpoint format {saved.get('format')!r}, "
                f"not {self.checkpoint_format}"
            )
        digest = self.config.digest()
        if saved["config_digest"] != digest:
            raise ValueError(
                f"{path} was written by another config (digest {saved['config_digest'][:12]}, "
                f"this config {digest[:12]}); use a fresh checkpoint directory per grid point"
            )
        if saved["data_digest"] != self.data_digest:
            raise ValueError(
                f"{path} was written for other training or validation data (digest "
                f"{saved['data_digest'][:12]}, this data {self.data_digest[:12]}); "
                "refusing to mix runs"
            )
        if saved["precision"] != self.precision or saved["scaled"] != self.scaled:
            raise ValueError(
                f"{path} was trained in {saved['precision']} (gradient scaler: "
                f"{saved['scaled']}); this device resolves to {self.precision} "
                f"(gradient scaler: {self.scaled})"
            )


def transformer_adamw(
    model: torch.nn.Module, learning_rate: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW on what trains, the usual transformer recipe: no decay on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )


def checkpoint_state(
    identity: RunIdentity,
    epoch: int,
    model_state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    shuffle: torch.Generator,
    best: Any,
    history: list[EpochStats],
) -> dict[str, Any]:
    """What a loop's ``last.pt`` holds after ``epoch``: enough to resume exactly."""
    return {
        **identity.header(epoch),
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        **rng_state(device, shuffle),
        "best": best,
        "history": [asdict(entry) for entry in history],
    }


def resume_from(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    shuffle: torch.Generator,
    strict: bool = True,
) -> list[EpochStats]:
    """Put a :func:`checkpoint_state` back (``strict=False``: the trainable weights only)."""
    model.load_state_dict(saved["model"], strict=strict)
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None:
        scaler.load_state_dict(saved["scaler"])
    restore_rng(saved, device, shuffle)
    return [EpochStats(**stats) for stats in saved["history"]]


def load_checkpoint(path: Path, identity: RunIdentity) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, checked against ``identity``."""
    if not path.exists():
        return None
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    identity.check(saved, path)
    return saved


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a run killed mid-write keeps its previous checkpoint whole."""
    write_atomically(path, partial(torch.save, state))
