"""ViT-style image classifiers and encoders through transformers, on torch (GPU if present).

``detect``/``hf-vit``: ``AutoModelForImageClassification`` + ``AutoImageProcessor`` from
``options["path"]`` (a ``save_pretrained`` directory or a hub id, such as a fine-tuned
``google/vit-base-patch16-224``); the softmax probability of the class that means
"ai_generated" (:func:`~deeptrust.processors.transformers_backends.common.ai_label_index`).

``embed``/``hf-vit``: ``AutoModel``'s CLS token of the final (layer-normed) hidden state, the
vector a ViT classifier head reads, L2-normalised; ``options["pooling"] = "pooler"`` takes
``pooler_output`` instead, for checkpoints trained with a pooler. (Loading a classifier
checkpoint this way reports its head as unused and a pooler as newly initialised; with
``cls`` pooling neither is read.)

Options: ``device`` (``cpu``/``cuda``/``cuda:1``; default cuda when available), ``dtype``
(``float32``, or ``float16``/``bfloat16`` on cuda only: CPU kernels for half precision are
slow or missing), ``max_batch`` (default 32). torch and transformers are imported in
``load()``, so this module imports, and registers, in environments without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import l2_normalise
from deeptrust.processors.models import ModelSpec, register
from deeptrust.processors.transformers_backends.adapters import load_pretrained_at
from deeptrust.processors.transformers_backends.common import (
    ai_label_index,
    chunks,
    detections,
    max_batch,
    required_path,
    with_recorded_threshold,
)
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage

DTYPES = ("float32", "float16", "bfloat16")
POOLINGS = ("cls", "pooler")


def rgb(item: FetchedImage | Image.Image) -> Image.Image:
    """The RGB pixels of a stage's input (the detect stage hands over fetched images)."""
    image = item.decoded.image if isinstance(item, FetchedImage) else item
    return image if image.mode == "RGB" else image.convert("RGB")


def torch_device_and_dtype(spec: ModelSpec) -> tuple[Any, Any]:
    """The ``device`` and ``dtype`` options as torch objects, refusing half precision on CPU."""
    import torch

    name = spec.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    dtype_name = spec.options.get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype_name!r}")
    if dtype_name != "float32" and device.type != "cuda":
        raise ValueError(f"dtype {dtype_name} needs a cuda device, not {device}")
    return device, getattr(torch, dtype_name)


class _HFImageModel:
    """Loads a processor and a model from ``options["path"]`` and runs them batch by batch."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.path = required_path(spec)
        self.max_batch = max_batch(spec)
        self._processor: Any = None
        self._model: Any = None
        self._device: Any = None
        self._dtype: Any = None

    def _auto_class(self) -> Any:
        raise NotImplementedError

    def load(self) -> None:
        """Load processor and weights onto the device in eval mode, then run one tiny batch."""
        import transformers

        self._device, self._dtype = torch_device_and_dtype(self.spec)
        self._processor = transformers.AutoImageProcessor.from_pretrained(self.path)
        model = load_pretrained_at(self._auto_class(), self.path, self._dtype)
        self._model = model.to(self._device).eval()
        self._forward([Image.new("RGB", (8, 8))])

    def _forward(self, images: Sequence[Image.Image]) -> Any:
        """The model's output for ``images`` (one chunk), under inference mode."""
        import torch

        if self._model is None:
            raise RuntimeError("load() not called")
        inputs = self._processor(images=list(images), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self._device, dtype=self._dtype)
        with torch.inference_mode():
            return self._model(pixel_values=pixels)


class HFViTDetector(_HFImageModel):
    """An image classifier fine-tuned to tell generated images from real ones."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(with_recorded_threshold(spec))
        self.ai_index = -1

    def _auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForImageClassification

    def load(self) -> None:
        """Load the classifier and find which of its labels means ai_generated."""
        super().load()
        id2label = {int(index): str(name) for index, name in self._model.config.id2label.items()}
        self.ai_index = ai_label_index(self.spec, id2label)

    def logits(self, batch: Sequence[FetchedImage | Image.Image]) -> np.ndarray:
        """Raw float32 logits (N, classes), for comparison with an ONNX export."""
        out = [
            self._forward([rgb(item) for item in chunk]).logits.float().cpu().numpy()
            for chunk in chunks(batch, self.max_batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def predict(self, batch: Sequence[FetchedImage | Image.Image]) -> list[Detection]:
        """Return one verdict per image."""
        return detections(self.spec, self.logits(batch), self.ai_index)


class HFViTEmbedder(_HFImageModel):
    """The encoder's pooled image features, for drift monitoring and similarity."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.pooling = spec.options.get("pooling", "cls")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")

    def _auto_class(self) -> Any:
        import transformers

        return transformers.AutoModel

    def features(self, batch: Sequence[Image.Image]) -> np.ndarray:
        """Unnormalised float32 features (N, hidden)."""
        out = []
        for chunk in chunks(batch, self.max_batch):
            result = self._forward([rgb(image) for image in chunk])
            if self.pooling == "pooler":
                if result.pooler_output is None:
                    raise ValueError(f"{self.path} has no pooler: use pooling=cls")
                pooled = result.pooler_output
            else:
                pooled = result.last_hidden_state[:, 0]
            out.append(pooled.float().cpu().numpy())
        hidden = int(self._model.config.hidden_size) if self._model is not None else 0
        return np.concatenate(out) if out else np.zeros((0, hidden), np.float32)

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one L2-normalised vector per image."""
        vectors: list[list[float]] = l2_normalise(self.features(batch)).tolist()
        return vectors


register("detect", "hf-vit")(HFViTDetector)
register("embed", "hf-vit")(HFViTEmbedder)
