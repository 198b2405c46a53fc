"""LoRA for the fine-tunes: low-rank adapters on the attention, a new head trained whole.

``peft``'s LoRA freezes every weight of the base and adds a trainable low-rank update to
the modules the config names (``lora_targets``: ViT's ``q_proj`` and ``v_proj`` projections by
default); the freshly initialised two-class head is trained in full and saved with the
adapter (``modules_to_save``). What the fine-tune then saves is the adapter, a few hundred
kilobytes for a ViT-B/16 instead of 330 MB; the ``hf-vit`` backend
(:mod:`deeptrust.processors.transformers_backends.adapters`) rebuilds the recorded base and
merges it. The captioner's fine-tune uses the same adapters on BLIP's text decoder, with no
new head (:mod:`deeptrust.training.trainer.caption_finetune`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from deeptrust.processors.transformers_backends.adapters import weights_digest

HEAD_MODULES = ["classifier"]
"""The classification head of transformers' image classifiers (ViT, DeiT, BEiT...)."""


class LoraShape(Protocol):
    """The config fields an adapter is built from (a detector's or the captioner's)."""

    @property
    def model(self) -> str: ...
    @property
    def lora_rank(self) -> int: ...
    @property
    def lora_alpha(self) -> float: ...
    @property
    def lora_dropout(self) -> float: ...
    @property
    def lora_targets(self) -> list[str]: ...


def with_lora(model: Any, config: LoraShape, heads: Sequence[str] = tuple(HEAD_MODULES)) -> Any:
    """``model`` wrapped by peft: LoRA on ``config.lora_targets``, ``heads`` trained whole."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        modules_to_save=list(heads) or None,
    )
    peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = config.model
    return peft_model


def adapter_record(config: LoraShape, model: Any) -> dict[str, Any]:
    """What the training record says of the adapter: its kind, shape and base."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "type": "lora",
        "rank": config.lora_rank,
        "alpha": config.lora_alpha,
        "targets": list(config.lora_targets),
        "base_model": config.model,
        "base_weights_sha256": weights_digest(config.model),
        "trainable_parameters": int(trainable),
    }
