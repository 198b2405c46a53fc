"""What the transformers-based backends share: option parsing and turning logits into verdicts.

Nothing here imports torch or transformers, so the ONNX Runtime backend can use it in an
environment without either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import softmax
from deeptrust.processors.models import ModelSpec
from deeptrust.schemas.events import Detection

T = TypeVar("T")

DEFAULT_MAX_BATCH = 32
DEFAULT_THRESHOLD = 0.5
# Label names that fine-tuned AI-image detectors on the hub use for the synthetic class.
AI_LABEL_NAMES = (
    "ai_generated",
    "ai-generated",
    "ai",
    "artificial",
    "fake",
    "generated",
    "synthetic",
)


def required_path(spec: ModelSpec) -> str:
    """The ``path`` option (a directory, a hub id or a file): a backend without it is useless."""
    path = spec.options.get("path")
    if not path:
        raise ValueError(f"{spec.backend} needs options['path'] (a model directory or hub id)")
    return path


def max_batch(spec: ModelSpec) -> int:
    """Images per forward pass: bounds activation memory, whatever batch the stage hands over."""
    size = int(spec.options.get("max_batch", DEFAULT_MAX_BATCH))
    if size < 1:
        raise ValueError("max_batch must be at least 1")
    return size


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def string_list(value: str) -> list[str]:
    """An option holding a list: a JSON array or comma-separated names (options are strings)."""
    text = value.strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ValueError(f"expected a JSON list of strings, not {value!r}")
        return [item.strip() for item in parsed]
    return [item.strip() for item in text.split(",") if item.strip()]


def ai_label_index(spec: ModelSpec, id2label: Mapping[int, str]) -> int:
    """Which output index means "ai_generated".

    Hub checkpoints name their classes freely (``FAKE``/``REAL``, ``artificial``/``human``),
    so ``options["ai_index"]`` (an index) or ``options["ai_label"]`` (a label name) says it;
    without either, a label among :data:`AI_LABEL_NAMES` is looked for.
    """
    if "ai_index" in spec.options:
        index = int(spec.options["ai_index"])
        if index not in id2label:
            raise ValueError(f"ai_index {index} is not one of the model's labels {dict(id2label)}")
        return index
    wanted = spec.options.get("ai_label")
    names = (wanted.lower(),) if wanted else AI_LABEL_NAMES
    for index, label in id2label.items():
        if label.lower() in names:
            return int(index)
    raise ValueError(
        f"cannot tell which of {dict(id2label)} means ai_generated: set options['ai_index'] "
        "or options['ai_label']"
    )


TRAINING_RECORD = "deeptrust_training.json"
"""What the training service writes beside a fine-tuned classifier's weights: its config,
the threshold among it."""


def extend_training_record(folder: Path, provenance: dict[str, str]) -> None:
    """Add the job's provenance (request, run, data version) to ``folder``'s training record."""
    path = folder / TRAINING_RECORD
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    path.write_text(json.dumps({**record, **provenance}, indent=2, sort_keys=True), "utf-8")


def recorded_threshold(path: str) -> float | None:
    """The threshold a fine-tuned model's training record names, if ``path`` holds one.

    A promoted model travels as its directory, record included, so a stage that follows
    promotions decides with the threshold its training chose, as the canary did.
    """
    record = Path(path) / TRAINING_RECORD
    if not record.is_file():
        return None
    config = json.loads(record.read_text(encoding="utf-8")).get("config", {})
    return float(config["threshold"]) if "threshold" in config else None


def with_recorded_threshold(spec: ModelSpec) -> ModelSpec:
    """``spec``, its ``threshold`` option taken from the training record when it has none."""
    if "threshold" in spec.options or "path" not in spec.options:
        return spec
    threshold = recorded_threshold(spec.options["path"])
    if threshold is None:
        return spec
    return replace(spec, options={**spec.options, "threshold": str(threshold)})


def detections(
    spec: ModelSpec, logits: np.ndarray, ai_index: int, version: str | None = None
) -> list[Detection]:
    """Verdicts from classifier logits (N, classes): softmax, or a sigmoid for a single logit."""
    threshold = float(spec.options.get("threshold", DEFAULT_THRESHOLD))
    scores = logits.astype(np.float64)
    if scores.shape[1] == 1:
        probabilities = 1.0 / (1.0 + np.exp(-scores[:, 0]))
    else:
        probabilities = softmax(scores)[:, ai_index]
    return [
        Detection(
            ai_probability=min(max(float(p), 0.0), 1.0),
            label="ai_generated" if p >= threshold else "real",
            model=spec.label,
            model_version=version or spec.version,
        )
        for p in probabilities
    ]
