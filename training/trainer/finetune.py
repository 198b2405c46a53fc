"""Fine-tune a transformers image classifier (a ViT) as the detector, resumable and mixed-precision.

For users with real weights (a hub id such as ``google/vit-base-patch16-224``, or a local
``save_pretrained`` directory): the whole network learns, not only a head on frozen
features, which is what a detector of modern generators needs. The result is a
``save_pretrained`` directory (model and image processor) that the production ``hf-vit``
detect backend (:mod:`deeptrust.processors.transformers_backends.vit`) loads unchanged: labels
``{0: "real", 1: "ai_generated"}``.

The promises are the probe loop's (:mod:`deeptrust.training.trainer.loop`), through the same helpers
(:mod:`deeptrust.training.trainer.runtime`): AdamW, the class-balanced binary objective (on the
two-class softmax, whose cross-entropy is the binary log-loss of ``logit_ai - logit_real``),
fp16 autocast with a gradient scaler on CUDA (bf16 on request), gradient accumulation with
the config's effective batch, one atomic checkpoint per epoch that a rerun resumes from and
another config or other data is refused by. The best epoch is the one with the highest
validation ROC-AUC (ties: the lower validation loss), the service's rule for grid points.

Only the retrain worker imports this module (torch and transformers, ``.venv-train``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image

from deeptrust.processors.transformers_backends.common import TRAINING_RECORD
from deeptrust.training.detector.probe import balanced_weights
from deeptrust.training.trainer.config import TrainConfig
from deeptrust.training.trainer.distributed import Shards, join
from deeptrust.training.trainer.lora import adapter_record, with_lora
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
    transformer_adamw,
    validation_metrics,
)
from deeptrust.training.trainer.streaming import (
    EpochBatches,
    InMemoryImages,
    InOrder,
    LabelledImages,
    LoaderOptions,
    content_digest,
    loader,
    shutdown,
)

LABELS: dict[int, str] = {0: "real", 1: "ai_generated"}
"""The output classes the ``hf-vit`` detect backend reads (it looks for ``ai_generated``)."""
CHECKPOINT_FORMAT = 1
DATA_DIGEST_VERSION = b"deeptrust-finetune-data/2"
_SNAPSHOT = "best-epoch-"


@dataclass(frozen=True)
class FineTuneResult:
    """The best epoch's model directory and how the run got there.

    Fields as :class:`~deeptrust.training.trainer.loop.TrainResult`'s, with ``output_dir`` (model
    and
    processor, loadable by the ``hf-vit`` backend) in place of a head, and ``metadata``, the
    provenance also written to ``output_dir / TRAINING_RECORD``.
    """

    output_dir: Path
    history: list[EpochStats]
    best_epoch: int
    resumed_from: int | None
    device: str
    precision: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Best:
    """The best epoch so far; its weights are a ``save_pretrained`` snapshot on disk."""

    epoch: int
    val_auc: float
    val_loss: float

    def rank(self) -> tuple[float, float]:
        """Higher is better: AUC first, then lower loss; undefined values rank last."""
        auc = self.val_auc if math.isfinite(self.val_auc) else -math.inf
        loss = -self.val_loss if math.isfinite(self.val_loss) else -math.inf
        return auc, loss


@dataclass(frozen=True)
class _Data:
    """The two sets, their labels and class-balanced weights as device tensors, their digest."""

    train: LabelledImages
    train_y: torch.Tensor
    train_w: torch.Tensor
    val: LabelledImages
    val_y: torch.Tensor
    val_w: torch.Tensor
    digest: str


def _prepare(train: LabelledImages, val: LabelledImages, device: torch.device) -> _Data:
    """Check the labels, and digest both sets by content key and label, decoding nothing.

    A key names an image's bytes (or pixels), which decode to the same pixels every time,
    so the digest pins the data as the pixels would, without a pass over the images.
    """
    sha = hashlib.sha256(DATA_DIGEST_VERSION)
    labels = []
    for name, images in (("training", train), ("validation", val)):
        checked = checked_labels(images.labels, name)
        if len(images.keys) != len(checked):
            raise ValueError(f"{name} has {len(images.keys)} images but {len(checked)} labels")
        sha.update(content_digest(images.keys, checked, name))
        labels.append(checked)
    ty, vy = labels
    if len(np.unique(ty)) != 2:
        raise ValueError("the training set must hold both classes")

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(values, np.float32)).to(device)

    return _Data(
        train=train,
        train_y=tensor(ty),
        train_w=tensor(balanced_weights(ty)),
        val=val,
        val_y=tensor(vy),
        val_w=tensor(balanced_weights(vy)),
        digest=sha.hexdigest(),
    )


@dataclass(frozen=True)
class ProcessorTransform:
    """One image to the processor's resized, normalised ``(3, H, W)`` pixels (in a worker)."""

    processor: Any

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels: torch.Tensor = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels[0]


def save_snapshot(model: Any, target: Path, adapter: bool) -> None:
    """``model`` as its backend loads it, written beside ``target`` and renamed into place.

    With an adapter, peft saves the adapter alone, and the base's (re-headed) config goes
    with it, since the base is rebuilt from that shape when it is loaded.
    """
    shutil.rmtree(target, ignore_errors=True)  # a redone epoch's leftover
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    model.save_pretrained(partial)
    if adapter:
        model.get_base_model().config.save_pretrained(partial)
    partial.rename(target)


def load_classifier(source: str) -> Any:
    """The classifier at ``source`` in float32 with :data:`LABELS`, re-headed if it had others.

    A checkpoint already labelled ``real``/``ai_generated`` (an earlier fine-tune) keeps its
    head. Any other gets a freshly initialised two-class head, even one with two classes of
    other names: whether its ``FAKE`` means index 0 or 1 is a guess this code does not make.
    """
    config = transformers.AutoConfig.from_pretrained(source)
    current = {int(index): str(name) for index, name in config.id2label.items()}
    auto = transformers.AutoModelForImageClassification
    if current == LABELS:
        return auto.from_pretrained(source, dtype=torch.float32)
    model = auto.from_pretrained(
        source,
        dtype=torch.float32,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
        ignore_mismatched_sizes=True,
    )
    # Everything outside the backbone is head: take it from a fresh model of the same shape.
    fresh = auto.from_config(model.config)
    backbone = f"{model.base_model_prefix}."
    head = {k: v for k, v in fresh.state_dict().items() if not k.startswith(backbone)}
    model.load_state_dict(head, strict=False)
    return model


def _binary_logits(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """``logit_ai - logit_real``: the two-class softmax as one log-odds, what the loss reads."""
    logits: torch.Tensor = model(pixel_values=pixels).logits
    return logits[:, 1] - logits[:, 0]


def fine_tune(
    train_images: Sequence[Image.Image],
    train_y: np.ndarray,
    val_images: Sequence[Image.Image],
    val_y: np.ndarray,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FineTuneResult:
    """:func:`fine_tune_sets` on images already in memory, read in this process."""
    if len(train_images) != len(train_y) or len(val_images) != len(val_y):
        raise ValueError(
            f"training has {len(train_images)} images and {len(train_y)} labels, "
            f"validation {len(val_images)} and {len(val_y)}"
        )
    return fine_tune_sets(
        InMemoryImages(train_images, train_y),
        InMemoryImages(val_images, val_y),
        config,
        output_dir,
        checkpoint_dir,
        on_epoch,
        LoaderOptions(workers=0),
    )


def fine_tune_sets(
    train: LabelledImages,
    val: LabelledImages,
    config: TrainConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    loading: LoaderOptions | None = None,
    on_checkpoint: Callable[[EpochStats, Path], None] | None = None,
) -> FineTuneResult:
    """Fine-tune ``config.model`` on the sets; write the best epoch to ``output_dir``.

    The contract is :func:`~deeptrust.training.trainer.loop.train_probe`'s: one grid point; with
    ``checkpoint_dir``, ``last.pt`` (and the best epoch's snapshot) there is rewritten after
    every epoch and a rerun with the same config and data resumes after its last epoch,
    while another config's or other data's checkpoint raises ValueError; ``on_epoch`` runs
    before the checkpoint (at-least-once reporting). ``output_dir`` is replaced by the best
    epoch's ``save_pretrained`` model and processor. The caller's RNG state is untouched.
    Images are read batch by batch through ``loading``'s workers
    (:mod:`deeptrust.training.trainer.streaming`), never all at once. ``on_checkpoint`` runs
    in every process once an epoch's checkpoint folder is whole (Ray Train persists it from
    there: :mod:`deeptrust.training.trainer.ray_train`).
    """
    if config.sweep:
        raise ValueError("fine_tune takes one grid point; expand_sweep(config) first")
    if config.backbone != "hf-vit":
        raise ValueError(f"fine_tune trains backbone hf-vit, not {config.backbone}")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = _prepare(train, val, device)
    with ExitStack() as stack:
        if checkpoint_dir is None:
            checkpoint_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(torch.random.fork_rng(devices=rng_devices(device)))
        run = _Run(data, config, device, precision, checkpoint_dir, loading or LoaderOptions())
        stack.callback(run.close)
        return run.train(output_dir, on_epoch, on_checkpoint)


class _Run:
    """One fine-tune: the model, optimiser and processor, and the loop over epochs."""

    def __init__(
        self,
        data: _Data,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        folder: Path,
        loading: LoaderOptions,
    ) -> None:
        self.data, self.config, self.device, self.precision = data, config, device, precision
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.shuffle = seed_run(config.seed, device)  # before the head is initialised
        self.processor = transformers.AutoImageProcessor.from_pretrained(config.model)
        self.model = load_classifier(config.model)
        if config.adapter == "lora":
            self.model = with_lora(self.model, config)
        self.model = self.model.to(device)
        self.optimizer = transformer_adamw(self.model, config.learning_rate, config.weight_decay)
        self.scaler = make_scaler(precision, device)
        self.identity = RunIdentity(
            CHECKPOINT_FORMAT, config, data.digest, precision, self.scaler is not None
        )
        self.micro_size = config.batch_size // config.accumulation_steps
        self.world = join(device)
        self.net = self._wrapped()
        transform = ProcessorTransform(self.processor)
        self.shares = Shards(
            EpochBatches(len(data.train), config.batch_size, self.shuffle), self.world
        )
        self.train_batches = loader(data.train.with_transform(transform), self.shares, loading)
        self.val_batches = loader(
            data.val.with_transform(transform), InOrder(len(data.val), self.micro_size), loading
        )

    def close(self) -> None:
        """Stop the loaders' worker processes."""
        shutdown(self.train_batches)
        shutdown(self.val_batches)

    def _snapshot(self, epoch: int) -> Path:
        return self.folder / f"{_SNAPSHOT}{epoch:04d}"

    def _save_snapshot(self, epoch: int) -> None:
        """The model as the backend will load it, renamed into place once complete."""
        save_snapshot(self.model, self._snapshot(epoch), self.config.adapter != "none")

    def _drop_snapshots_but(self, epoch: int) -> None:
        for path in self.folder.glob(f"{_SNAPSHOT}*"):
            if path != self._snapshot(epoch):
                shutil.rmtree(path, ignore_errors=True)

    def _set_backbone_frozen(self, frozen: bool) -> None:
        """Frozen parameters get no gradient, so AdamW leaves them (and their decay) alone.

        An adapter run's backbone is frozen by peft, and stays so.
        """
        if self.config.adapter != "none":
            return
        changed = False
        for parameter in self.model.base_model.parameters():
            changed |= parameter.requires_grad == frozen
            parameter.requires_grad_(not frozen)
        if changed and self.world.size > 1:
            self.net = self._wrapped()

    def _wrapped(self) -> Any:
        """The model DDP syncs (re-wrapped after a freeze change: DDP hooks what needs grad)."""
        if self.world.size == 1:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def backward_batch(self, batch_pixels: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Backward this process's share of one effective batch; its weighted loss sum.

        Under DDP the gradients are then every process's average: the whole batch's.
        """
        data, world = self.data, self.world
        rows, stand_in = self.shares.plan.popleft()
        pixels = batch_pixels.to(self.device)

        def forward(first: int, stop: int) -> torch.Tensor:
            return _binary_logits(self.net, pixels[first:stop])

        index = batch.to(self.device)
        share = rows / world.size
        mean_loss = accumulate_gradients(
            forward,
            data.train_y[index],
            data.train_w[index] * (0.0 if stand_in else 1.0),
            max(1, self.micro_size // world.size),
            autocast_dtype(self.precision),
            self.scaler,
            normaliser=share,
            no_sync=None if world.size == 1 else self.net.no_sync,
        )
        return mean_loss * share

    def _train_epoch(self) -> float:
        """One pass over this process's shares of the shuffled batches; the mean loss."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for batch_pixels, batch in self.train_batches:
            loss_sum += self.backward_batch(batch_pixels, batch)
            optimizer_step(self.optimizer, self.scaler)
        return float(self.world.sum(loss_sum).item()) / len(self.data.train)

    def _evaluate(self) -> tuple[float, float, float]:
        """Validation in float32, as the ``hf-vit`` backend serves by default."""
        self.model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [
                    _binary_logits(self.model, pixels.to(self.device))
                    for pixels, _ in self.val_batches
                ]
            )
        self.model.train()
        return validation_metrics(logits, self.data.val_y, self.data.val_w, self.config.threshold)

    def train(
        self,
        output_dir: Path,
        on_epoch: Callable[[EpochStats], None] | None,
        on_checkpoint: Callable[[EpochStats, Path], None] | None = None,
    ) -> FineTuneResult:
        """Resume if a checkpoint is there, run the remaining epochs, write the best one out."""
        config, path = self.config, self.folder / CHECKPOINT_FILE
        history: list[EpochStats] = []
        best: _Best | None = None
        resumed_from: int | None = None
        saved = load_checkpoint(path, self.identity)
        if saved is not None:
            history = resume_from(
                saved, self.model, self.optimizer, self.scaler, self.device, self.shuffle
            )
            best = _Best(**saved["best"])
            resumed_from = int(saved["epoch"])
        for epoch in range((resumed_from or 0) + 1, config.epochs + 1):
            started = time.perf_counter()
            self._set_backbone_frozen(epoch <= config.freeze_epochs)
            train_loss = self._train_epoch()
            val_loss, accuracy, auc = self._evaluate()
            seconds = time.perf_counter() - started
            stats = EpochStats(epoch, train_loss, val_loss, accuracy, auc, seconds)
            history.append(stats)
            candidate = _Best(epoch, auc, val_loss)
            if best is None or candidate.rank() > best.rank():
                best = candidate
                if self.world.leader:
                    self._save_snapshot(epoch)
            if on_epoch is not None and self.world.leader:
                on_epoch(stats)
            state = checkpoint_state(
                self.identity,
                epoch,
                self.model.state_dict(),
                self.optimizer,
                self.scaler,
                self.device,
                self.shuffle,
                asdict(best),
                history,
            )
            if self.world.leader:  # one writer; the others wait until it is whole
                save_checkpoint(path, state)
                self._drop_snapshots_but(best.epoch)
            self.world.barrier()
            if on_checkpoint is not None:
                on_checkpoint(stats, self.folder)
        if best is None:  # unreachable: epochs >= 1 and a checkpoint always holds a best
            raise RuntimeError("no epoch was trained")
        return self._write_output(output_dir, best, history, resumed_from)

    def _write_output(
        self,
        output_dir: Path,
        best: _Best,
        history: list[EpochStats],
        resumed_from: int | None,
    ) -> FineTuneResult:
        """The best snapshot, the processor and the provenance record, in ``output_dir``.

        Written by the leader; the other processes wait for it and return the same result.
        """
        if self.world.leader:
            shutil.rmtree(output_dir, ignore_errors=True)
            shutil.copytree(self._snapshot(best.epoch), output_dir)
            self.processor.save_pretrained(output_dir)
        metadata: dict[str, Any] = {
            "trainer": "deeptrust.training.trainer.finetune",
            "base_model": self.config.model,
            "config": self.config.model_dump(mode="json"),
            "config_digest": self.config.digest(),
            "data_digest": self.data.digest,
            "best_epoch": best.epoch,
            "best_val_loss": best.val_loss,
            "best_val_auc": best.val_auc if math.isfinite(best.val_auc) else None,
            "train_rows": len(self.data.train),
            "processes": self.world.size,
            "adapter": None
            if self.config.adapter == "none"
            else adapter_record(self.config, self.model),
            "val_rows": len(self.data.val),
            "device": str(self.device),
            "precision": self.precision,
            "torch_version": str(torch.__version__),
            "transformers_version": str(transformers.__version__),
        }
        if self.world.leader:
            (output_dir / TRAINING_RECORD).write_text(
                json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8"
            )
        self.world.barrier()
        return FineTuneResult(
            output_dir=output_dir,
            history=list(history),
            best_epoch=best.epoch,
            resumed_from=resumed_from,
            device=str(self.device),
            precision=self.precision,
            metadata=metadata,
        )
