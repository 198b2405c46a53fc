"""Fine-tune the BLIP captioner on image-caption pairs, with LoRA, resumable each epoch.

The caption stage's ``hf-blip`` backend (:mod:`deeptrust.processors.transformers_backends.blip`)
serves what this writes: a ``save_pretrained`` directory, or with ``adapter = "lora"`` the
adapter, its base's config and the processor, which the backend rebuilds on the recorded
base and merges. The loss is BLIP's own language-model loss (``labels`` = the caption's
tokens, padding ignored). Images stream from the store through the loaders' workers
(:mod:`deeptrust.training.trainer.streaming`); epoch ``e`` pairs image ``i`` with its
reference ``(e - 1 + i) mod n``, so every reference is used over the epochs and a resumed
run sees what the uninterrupted one saw. The checkpoint holds the trainable weights (the
adapter only, under LoRA), the optimiser and the RNG (:mod:`deeptrust.training.trainer.runtime`),
and another config or other data is refused by it. The kept epoch has the lowest validation
loss.

Only the retrain worker imports this module (torch, transformers and peft, ``.venv-train``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from deeptrust.processors.transformers_backends.common import TRAINING_RECORD
from deeptrust.training.trainer.caption_config import CaptionConfig
from deeptrust.training.trainer.finetune import FineTuneResult, ProcessorTransform, save_snapshot
from deeptrust.training.trainer.lora import adapter_record, with_lora
from deeptrust.training.trainer.runtime import (
    CHECKPOINT_FILE,
    EpochStats,
    RunIdentity,
    autocast,
    autocast_dtype,
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
)
from deeptrust.training.trainer.streaming import (
    EpochBatches,
    InOrder,
    LabelledImages,
    LoaderOptions,
    loader,
    shutdown,
)

CHECKPOINT_FORMAT = 1
DATA_DIGEST_VERSION = b"deeptrust-caption-data/1"
_SNAPSHOT = "best-epoch-"


@dataclass(frozen=True)
class CaptionedImages:
    """Images (read lazily) and the reference captions of each, in the same order."""

    images: LabelledImages
    captions: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        """Every image needs a reference to learn from."""
        if len(self.images) != len(self.captions):
            raise ValueError(f"{len(self.images)} images but {len(self.captions)} caption lists")
        if not self.captions or not all(self.captions):
            raise ValueError("every image needs at least one reference caption")

    def reference(self, index: int, epoch: int) -> str:
        """The caption image ``index`` is paired with in ``epoch`` (0: its first, to validate)."""
        refs = self.captions[index]
        return refs[(epoch - 1 + index) % len(refs)] if epoch else refs[0]


def data_digest(train: CaptionedImages, val: CaptionedImages) -> str:
    """Both sets' image contents and captions, in order: what a checkpoint was trained on."""
    sha = hashlib.sha256(DATA_DIGEST_VERSION)
    for name, data in (("training", train), ("validation", val)):
        sha.update(f"{name}:{len(data.images)}\n".encode())
        for key, refs in zip(data.images.keys, data.captions, strict=True):
            sha.update(key.encode())
            sha.update(json.dumps(refs).encode())
    return sha.hexdigest()


def fine_tune_captioner(
    train: CaptionedImages,
    val: CaptionedImages,
    config: CaptionConfig,
    output_dir: Path,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    loading: LoaderOptions | None = None,
) -> FineTuneResult:
    """Fine-tune ``config.model`` on ``train``; write the lowest-validation-loss epoch out.

    The contract is the detector fine-tune's
    (:func:`~deeptrust.training.trainer.finetune.fine_tune_sets`): with ``checkpoint_dir`` a
    rerun resumes after the last finished epoch to the uninterrupted run's weights,
    ``on_epoch`` runs before each checkpoint, ``output_dir`` is replaced by the kept epoch's
    model (or adapter) with the processor and the training record, and the caller's RNG
    state is left as it was. ``val_accuracy`` and ``val_auc`` are NaN: a captioner has none.
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    with ExitStack() as stack:
        if checkpoint_dir is None:
            checkpoint_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(torch.random.fork_rng(devices=rng_devices(device)))
        run = _Run(train, val, config, device, precision, checkpoint_dir, loading)
        stack.callback(run.close)
        return run.train(output_dir, on_epoch)


class _Run:
    """One caption fine-tune: the model, optimiser, processor and loaders; the epochs."""

    def __init__(
        self,
        train: CaptionedImages,
        val: CaptionedImages,
        config: CaptionConfig,
        device: torch.device,
        precision: str,
        folder: Path,
        loading: LoaderOptions | None,
    ) -> None:
        self.train_set, self.val_set, self.config = train, val, config
        self.device, self.precision, self.folder = device, precision, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.shuffle = seed_run(config.seed, device)  # before LoRA initialises its weights
        self.processor = transformers.BlipProcessor.from_pretrained(config.model)
        model = transformers.BlipForConditionalGeneration.from_pretrained(
            config.model, dtype=torch.float32
        )
        self.bos = int(model.config.text_config.bos_token_id)  # what generate starts from
        if config.adapter == "lora":
            model = with_lora(model, config, heads=())
        self.model = model.to(device)
        self.trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = transformer_adamw(self.model, config.learning_rate, config.weight_decay)
        self.scaler = make_scaler(precision, device)
        self.identity = RunIdentity(
            CHECKPOINT_FORMAT, config, data_digest(train, val), precision, self.scaler is not None
        )
        self.micro_size = config.batch_size // config.accumulation_steps
        transform = ProcessorTransform(self.processor)
        options = loading or LoaderOptions()
        self.train_batches = loader(
            train.images.with_transform(transform),
            EpochBatches(len(train.images), config.batch_size, self.shuffle),
            options,
        )
        self.val_batches = loader(
            val.images.with_transform(transform),
            InOrder(len(val.images), self.micro_size),
            options,
        )

    def close(self) -> None:
        """Stop the loaders' worker processes."""
        shutdown(self.train_batches)
        shutdown(self.val_batches)

    def _loss(self, pixels: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """BLIP's mean language-model loss of ``captions`` given the images."""
        tokens = self.processor.tokenizer(
            list(captions),
            padding="longest",
            truncation=True,
            max_length=self.config.max_caption_tokens,
            return_tensors="pt",
        ).to(self.device)
        # The decoder starts from BOS, as generate starts it, not the tokenizer's [CLS].
        input_ids = tokens["input_ids"].clone()
        input_ids[:, 0] = self.bos
        labels = input_ids.masked_fill(tokens["attention_mask"] == 0, -100)
        output = self.model(
            pixel_values=pixels.to(self.device),
            input_ids=input_ids,
            attention_mask=tokens["attention_mask"],
            labels=labels,
        )
        loss: torch.Tensor = output.loss
        return loss

    def _train_epoch(self, epoch: int) -> float:
        """One pass in shuffled batches, micro-batched; the mean loss per image."""
        self.model.train()
        dtype = autocast_dtype(self.precision)
        total, seen = 0.0, 0
        for pixels, indices in self.train_batches:
            rows = len(indices)
            for start in range(0, rows, self.micro_size):
                part = indices[start : start + self.micro_size].tolist()
                captions = [self.train_set.reference(index, epoch) for index in part]
                with autocast(self.device, dtype):
                    loss = self._loss(pixels[start : start + len(part)], captions)
                scaled = loss * (len(part) / rows)  # the effective batch's mean
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
                total += float(loss.detach()) * len(part)
                seen += len(part)
            optimizer_step(self.optimizer, self.scaler)
        return total / max(seen, 1)

    def _evaluate(self) -> float:
        """The mean validation loss per image, in float32, against each first reference."""
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for pixels, indices in self.val_batches:
                captions = [self.val_set.reference(int(index), 0) for index in indices]
                total += float(self._loss(pixels, captions)) * len(captions)
        self.model.train()
        return total / len(self.val_set.images)

    def _trained_state(self) -> dict[str, torch.Tensor]:
        """The weights that learn (the adapter's, under LoRA): what a checkpoint must hold."""
        state = self.model.state_dict()
        return {name: state[name] for name in self.trainable}

    def _snapshot(self, epoch: int) -> Path:
        return self.folder / f"{_SNAPSHOT}{epoch:04d}"

    def _save_snapshot(self, epoch: int) -> None:
        """The model as the backend loads it (an adapter: with its base's config)."""
        target = self._snapshot(epoch)
        save_snapshot(self.model, target, self.config.adapter != "none")
        for path in self.folder.glob(f"{_SNAPSHOT}*"):
            if path != target:
                shutil.rmtree(path, ignore_errors=True)

    def train(
        self, output_dir: Path, on_epoch: Callable[[EpochStats], None] | None
    ) -> FineTuneResult:
        """Resume if a checkpoint is there, run the remaining epochs, write the kept one."""
        path = self.folder / CHECKPOINT_FILE
        history: list[EpochStats] = []
        best: tuple[int, float] | None = None  # (epoch, validation loss)
        resumed_from: int | None = None
        saved = load_checkpoint(path, self.identity)
        if saved is not None:
            history = resume_from(
                saved, self.model, self.optimizer, self.scaler, self.device, self.shuffle, False
            )
            best = (int(saved["best"][0]), float(saved["best"][1]))
            resumed_from = int(saved["epoch"])
        for epoch in range((resumed_from or 0) + 1, self.config.epochs + 1):
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            val_loss = self._evaluate()
            stats = EpochStats(
                epoch, train_loss, val_loss, math.nan, math.nan, time.perf_counter() - started
            )
            history.append(stats)
            ranked = val_loss if math.isfinite(val_loss) else math.inf
            if best is None or ranked < best[1]:
                best = (epoch, ranked)
                self._save_snapshot(epoch)
            if on_epoch is not None:
                on_epoch(stats)
            state = checkpoint_state(
                self.identity,
                epoch,
                self._trained_state(),
                self.optimizer,
                self.scaler,
                self.device,
                self.shuffle,
                list(best),
                history,
            )
            save_checkpoint(path, state)
        if best is None:  # unreachable: epochs >= 1 and a checkpoint always holds a best
            raise RuntimeError("no epoch was trained")
        return self._write_output(output_dir, best, history, resumed_from)

    def _write_output(
        self,
        output_dir: Path,
        best: tuple[int, float],
        history: list[EpochStats],
        resumed_from: int | None,
    ) -> FineTuneResult:
        """The kept snapshot, the processor and the provenance record, in ``output_dir``."""
        shutil.rmtree(output_dir, ignore_errors=True)
        shutil.copytree(self._snapshot(best[0]), output_dir)
        self.processor.save_pretrained(output_dir)
        metadata: dict[str, Any] = {
            "trainer": "deeptrust.training.trainer.caption_finetune",
            "base_model": self.config.model,
            "config": self.config.model_dump(mode="json"),
            "config_digest": self.config.digest(),
            "data_digest": self.identity.data_digest,
            "best_epoch": best[0],
            "best_val_loss": best[1],
            "train_rows": len(self.train_set.images),
            "val_rows": len(self.val_set.images),
            "adapter": None
            if self.config.adapter == "none"
            else adapter_record(self.config, self.model),
            "device": str(self.device),
            "precision": self.precision,
            "torch_version": str(torch.__version__),
            "transformers_version": str(transformers.__version__),
        }
        (output_dir / TRAINING_RECORD).write_text(
            json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8"
        )
        return FineTuneResult(
            output_dir=output_dir,
            history=list(history),
            best_epoch=best[0],
            resumed_from=resumed_from,
            device=str(self.device),
            precision=self.precision,
            metadata=metadata,
        )
