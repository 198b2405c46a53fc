"""Models (the ViT detector, the BLIP captioner) that travel as a LoRA adapter and its base.

A LoRA fine-tune (``adapter = "lora"`` in the training config) saves only what it trained:
the adapter (``adapter_config.json``, whose ``base_model_name_or_path`` names the base, and
its weights, the classification head among them), the re-headed model's ``config.json``
and the training record, which holds the base's weights digest. Loading checks that the
base found there is the base it was trained on, builds it with the recorded head shape,
applies the adapter and merges it, so the stage serves a plain model at the base's speed.
A directory without an adapter loads as any ``save_pretrained`` model.

Imports torch, transformers and (for an adapter) peft when called: the ``train`` extra.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from deeptrust.processors.transformers_backends.common import TRAINING_RECORD

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weights_digest(source: str) -> str | None:
    """SHA-256 over a local model directory's weight files (by name); None for a hub id."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    sha = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    for path in files:
        sha.update(path.name.encode())
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def is_adapter(path: str) -> bool:
    """Whether ``path`` holds a peft adapter rather than a whole model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_pretrained_at(auto_class: Any, path: str, dtype: Any) -> Any:
    """The model at ``path``: a whole model, or its recorded base with the adapter merged."""
    if not is_adapter(path):
        return auto_class.from_pretrained(path, dtype=dtype)
    import transformers
    from peft import PeftModel

    adapter = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = str(adapter["base_model_name_or_path"])
    record_path = Path(path) / TRAINING_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    expected = record.get("adapter", {}).get("base_weights_sha256")
    found = weights_digest(base)
    if expected is not None and found != expected:
        raise ValueError(
            f"the adapter at {path} was trained on {base} with weights {expected[:12]}, "
            f"but the weights there now are {str(found)[:12]}"
        )
    config = transformers.AutoConfig.from_pretrained(path)  # the trained head's shape
    model = auto_class.from_pretrained(
        base, config=config, dtype=dtype, ignore_mismatched_sizes=True
    )
    return PeftModel.from_pretrained(model, path).merge_and_unload()
