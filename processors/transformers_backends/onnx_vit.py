"""An exported ViT classifier on ONNX Runtime: no torch, no transformers at run time.

The file comes from :mod:`~deeptrust.processors.transformers_backends.onnx_export`.

``detect``/``onnx-vit`` returns the verdict from the ``logits`` output, ``embed``/``onnx-vit``
the L2-normalised ``embedding`` output (the CLS token), both from ``options["path"]``, the
.onnx file. Pre-processing is redone in numpy/PIL from the image processor's settings that
the export stored in the file (size, resample, rescale factor, mean, std, optional centre
crop), matching transformers' PIL-based processors.

Options: ``providers`` (a JSON list or comma-separated names in order of preference, e.g.
``TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider``; those this
onnxruntime build lacks are dropped, and CPU is always the last resort; default CUDA then
CPU), ``intra_op_threads`` (default 2), ``max_batch`` (default 32), and for detect
``ai_index``/``ai_label``/``threshold`` as for ``hf-vit``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import l2_normalise, session_options, usable_cpus
from deeptrust.processors.models import ModelSpec, register
from deeptrust.processors.transformers_backends.common import (
    ai_label_index,
    chunks,
    detections,
    max_batch,
    required_path,
    string_list,
)
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage

# The names onnx_export writes; repeated here so the runtime never imports the exporter.
INPUT_NAME, LOGITS_OUTPUT, EMBEDDING_OUTPUT = "pixel_values", "logits", "embedding"
PREPROCESSOR_KEY, ID2LABEL_KEY = "deeptrust.preprocessor", "deeptrust.id2label"
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
DEFAULT_INTRA_OP_THREADS = 2


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """``requested`` in order, less those not ``available``; CPU last so a session always opens.

    A GPU image run on a CPU node, or a TensorRT list on a build without it, then still works
    (more slowly) instead of failing at start-up.
    """
    chosen = [name for name in requested if name in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass(frozen=True)
class Preprocessing:
    """A transformers image processor's settings, applied with PIL and numpy."""

    height: int | None
    width: int | None
    shortest_edge: int | None
    crop: tuple[int, int] | None
    resample: Image.Resampling
    rescale_factor: float | None
    mean: np.ndarray | None
    std: np.ndarray | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Preprocessing:
        """Read ``preprocessor_config.json``'s keys (only what ViT-style processors use)."""
        size = (config.get("size") or {}) if config.get("do_resize", True) else {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        crop_size = config.get("crop_size") if config.get("do_center_crop") else None
        if isinstance(crop_size, int):
            crop_size = {"height": crop_size, "width": crop_size}
        normalise = config.get("do_normalize", True)
        return cls(
            height=size.get("height"),
            width=size.get("width"),
            shortest_edge=size.get("shortest_edge"),
            crop=(crop_size["height"], crop_size["width"]) if crop_size else None,
            resample=Image.Resampling(int(config.get("resample", Image.Resampling.BILINEAR))),
            rescale_factor=(
                float(config.get("rescale_factor", 1 / 255))
                if config.get("do_rescale", True)
                else None
            ),
            mean=np.asarray(config["image_mean"], np.float32) if normalise else None,
            std=np.asarray(config["image_std"], np.float32) if normalise else None,
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One image as the model's (3, H, W) float32 input."""
        rgb = image.convert("RGB")
        if self.height and self.width:
            rgb = rgb.resize((self.width, self.height), self.resample)
        elif self.shortest_edge:
            width, height = rgb.size
            short, long = min(width, height), max(width, height)
            new_long = int(self.shortest_edge * long / short)
            size = (
                (self.shortest_edge, new_long)
                if width <= height
                else (new_long, self.shortest_edge)
            )
            rgb = rgb.resize(size, self.resample)
        if self.crop:
            crop_h, crop_w = self.crop
            width, height = rgb.size
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            rgb = rgb.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(rgb, dtype=np.float32)
        if self.rescale_factor is not None:
            pixels = pixels * np.float32(self.rescale_factor)
        if self.mean is not None and self.std is not None:
            pixels = (pixels - self.mean) / self.std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


class _OnnxViT:
    """An exported ViT session and its pre-processing, read from the file's metadata."""

    output_name = LOGITS_OUTPUT

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.path = required_path(spec)
        self.max_batch = max_batch(spec)
        threads = int(spec.options.get("intra_op_threads", DEFAULT_INTRA_OP_THREADS))
        self.intra_op_threads = max(1, min(threads, usable_cpus()))
        requested = spec.options.get("providers")
        self.requested_providers = string_list(requested) if requested else list(DEFAULT_PROVIDERS)
        self.id2label: dict[int, str] = {}
        self._preprocess: Preprocessing | None = None
        self._session: ort.InferenceSession | None = None

    @property
    def providers(self) -> list[str]:
        """The providers the loaded session runs on, most preferred first."""
        if self._session is None:
            raise RuntimeError("load() not called")
        return list(self._session.get_providers())

    def load(self) -> None:
        """Open the session on the best available providers and read the metadata."""
        providers = choose_providers(self.requested_providers, ort.get_available_providers())
        session = ort.InferenceSession(
            self.path, sess_options=session_options(self.intra_op_threads), providers=providers
        )
        metadata = session.get_modelmeta().custom_metadata_map
        if PREPROCESSOR_KEY not in metadata:
            raise ValueError(f"{self.path} has no {PREPROCESSOR_KEY}: export it with onnx_export")
        self._preprocess = Preprocessing.from_config(json.loads(metadata[PREPROCESSOR_KEY]))
        labels = json.loads(metadata.get(ID2LABEL_KEY, "{}"))
        self.id2label = {int(index): str(name) for index, name in labels.items()}
        self._session = session
        self.run([Image.new("RGB", (8, 8))])

    def run(self, batch: Sequence[FetchedImage | Image.Image]) -> np.ndarray:
        """This backend's output for ``batch``, ``max_batch`` images per session run."""
        if self._session is None or self._preprocess is None:
            raise RuntimeError("load() not called")
        out = []
        for chunk in chunks(batch, self.max_batch):
            images = [
                item.decoded.image if isinstance(item, FetchedImage) else item for item in chunk
            ]
            pixels = np.stack([self._preprocess(image) for image in images])
            (result,) = self._session.run([self.output_name], {INPUT_NAME: pixels})
            out.append(np.asarray(result, dtype=np.float32))
        if not out:
            (output,) = [o for o in self._session.get_outputs() if o.name == self.output_name]
            return np.zeros((0, int(output.shape[1])), np.float32)
        return np.concatenate(out)


class OnnxViTDetector(_OnnxViT):
    """The exported classifier's verdicts."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.ai_index = -1

    def load(self) -> None:
        """Open the session and find which label means ai_generated."""
        super().load()
        self.ai_index = ai_label_index(self.spec, self.id2label)

    def predict(self, batch: Sequence[FetchedImage | Image.Image]) -> list[Detection]:
        """Return one verdict per image."""
        return detections(self.spec, self.run(batch), self.ai_index)


class OnnxViTEmbedder(_OnnxViT):
    """The exported encoder's CLS features, L2-normalised."""

    output_name = EMBEDDING_OUTPUT

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one unit vector per image."""
        vectors: list[list[float]] = l2_normalise(self.run(batch)).tolist()
        return vectors


register("detect", "onnx-vit")(OnnxViTDetector)
register("embed", "onnx-vit")(OnnxViTEmbedder)
