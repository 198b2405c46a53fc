"""The captioner's fine-tune settings, read from the ``[caption]`` table of a TOML file.

The captioner learns from image-caption pairs, not labels, so its settings are their own
model rather than :class:`~deeptrust.training.trainer.config.TrainConfig`'s; the fields they
share mean the same thing (the effective batch, accumulation, precision, the LoRA shape).
Torch-free, so the service validates a config before it starts training.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deeptrust.training.trainer.config import Adapter, Precision

DIGEST_VERSION = "deeptrust-caption-config/1"
BLIP_BASE = "Salesforce/blip-image-captioning-base"


class CaptionConfig(BaseModel):
    """One fine-tune of a BLIP captioner (``BlipForConditionalGeneration``) from ``model``.

    ``model`` is a hub id or a ``save_pretrained`` directory, normally the one production
    captions with. With ``adapter = "lora"`` (the default) the base stays frozen and LoRA
    adapters on ``lora_targets`` (the text decoder's attention ``query`` and ``value`` by
    default) learn; the artefact is the adapter and a record of its base. Each epoch every
    image is seen once, with one of its reference captions in turn, truncated to
    ``max_caption_tokens``. The kept epoch has the lowest validation loss (validation
    images against their first reference). ``max_new_tokens`` is what evaluation and the
    stage generate at most.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = BLIP_BASE
    seed: int = 0
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=16, ge=1)
    accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.01, ge=0, allow_inf_nan=False)
    precision: Precision = "auto"
    device: str = "auto"
    adapter: Adapter = "lora"
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=16.0, gt=0, allow_inf_nan=False)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    max_caption_tokens: int = Field(default=40, ge=4)
    max_new_tokens: int = Field(default=30, ge=1)
    backend: Literal["hf-blip"] = "hf-blip"

    @model_validator(mode="after")
    def _check(self) -> CaptionConfig:
        """Reject what would only fail later, in the training loop."""
        if self.batch_size % self.accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of accumulation_steps "
                f"{self.accumulation_steps}: micro-batches would differ in size"
            )
        if not self.model.strip():
            raise ValueError("model must name a BLIP captioner: a hub id or a directory")
        return self

    def digest(self) -> str:
        """SHA-256 of every field: what a checkpoint must match to be resumed."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{DIGEST_VERSION}\n{text}".encode()).hexdigest()


def load_caption_config(path: Path, overrides: dict[str, object] | None = None) -> CaptionConfig:
    """Read ``[caption]`` from ``path``, ``overrides`` on top; a file without it is refused."""
    with path.open("rb") as handle:
        table = tomllib.load(handle).get("caption")
    if not isinstance(table, dict):
        raise ValueError(f"{path} has no [caption] table")
    try:
        return CaptionConfig.model_validate({**table, **(overrides or {})})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
