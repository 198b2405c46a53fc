"""BLIP image captioning through transformers (``Salesforce/blip-image-captioning-base`` class).

``caption``/``hf-blip``: ``BlipForConditionalGeneration`` + ``BlipProcessor`` from
``options["path"]`` (a ``save_pretrained`` directory or hub id, or a LoRA adapter the caption
fine-tune wrote, merged into its recorded base), greedy ``generate`` over a batch. Options:
``max_new_tokens`` (default 30), ``min_new_tokens`` (default 0), ``num_beams`` (default 1),
``prompt`` (conditional captioning, e.g. "a photography of"; the caption then starts with
it), and ``device``/``dtype``/``max_batch`` as for ``hf-vit``. torch and transformers are
imported in ``load()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from deeptrust.processors.models import ModelSpec, register
from deeptrust.processors.transformers_backends.adapters import load_pretrained_at
from deeptrust.processors.transformers_backends.common import chunks, max_batch, required_path
from deeptrust.processors.transformers_backends.vit import rgb, torch_device_and_dtype

DEFAULT_MAX_NEW_TOKENS = 30
# Caption events need text; a model that stops at once (an end token first) still gets one,
# marked as such rather than invented.
EMPTY_CAPTION = "(no caption)"


class HFBlipCaptioner:
    """Captions a batch of images in one ``generate`` call per ``max_batch`` chunk."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.path = required_path(spec)
        self.max_batch = max_batch(spec)
        self.generate_options = {
            "max_new_tokens": int(spec.options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            "min_new_tokens": int(spec.options.get("min_new_tokens", 0)),
            "num_beams": int(spec.options.get("num_beams", 1)),
            "do_sample": False,
        }
        if self.generate_options["max_new_tokens"] < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.prompt = spec.options.get("prompt")
        self._processor: Any = None
        self._model: Any = None
        self._device: Any = None
        self._dtype: Any = None

    def load(self) -> None:
        """Load processor and weights onto the device in eval mode, then caption one image."""
        import transformers

        self._device, self._dtype = torch_device_and_dtype(self.spec)
        self._processor = transformers.BlipProcessor.from_pretrained(self.path)
        model = load_pretrained_at(
            transformers.BlipForConditionalGeneration, self.path, self._dtype
        )
        self._model = model.to(self._device).eval()
        self.predict([Image.new("RGB", (8, 8))])

    def _generate(self, images: Sequence[Image.Image]) -> list[str]:
        import torch

        texts = [self.prompt] * len(images) if self.prompt else None
        inputs = self._processor(images=list(images), text=texts, return_tensors="pt")
        inputs = {
            key: value.to(self._device, dtype=self._dtype)
            if key == "pixel_values"
            else value.to(self._device)
            for key, value in inputs.items()
        }
        with torch.inference_mode():
            tokens = self._model.generate(**inputs, **self.generate_options)
        decoded = self._processor.batch_decode(tokens, skip_special_tokens=True)
        return [" ".join(str(text).split()) or EMPTY_CAPTION for text in decoded]

    def predict(self, batch: Sequence[Image.Image]) -> list[str]:
        """Return one caption per image."""
        if self._model is None:
            raise RuntimeError("load() not called")
        captions: list[str] = []
        for chunk in chunks(batch, self.max_batch):
            captions += self._generate([rgb(image) for image in chunk])
        return captions


register("caption", "hf-blip")(HFBlipCaptioner)
