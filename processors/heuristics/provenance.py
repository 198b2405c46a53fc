"""Detect AI-generated images by what their files say about where they came from.

Generators and editors leave traces: Automatic1111 and ComfyUI write their parameters or
workflow into PNG text chunks, many tools name themselves in EXIF ``Software``, and C2PA
content credentials embed a JUMBF manifest labelled ``c2pa``. Their presence is strong
evidence; their absence is weak evidence (metadata is easily stripped), so an image
without traces gets the configured prior, not zero.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deeptrust.processors.models import ModelSpec, register
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage

EXIF_SOFTWARE = 0x0131
EXIF_IMAGE_DESCRIPTION = 0x010E
GENERATOR_TEXT_KEYS = ("parameters", "prompt", "workflow", "sd-metadata", "dream", "invokeai")
GENERATOR_NAMES = re.compile(
    r"stable.?diffusion|midjourney|dall.?e|automatic1111|comfyui|novelai|firefly|"
    r"invokeai|fooocus|imagen|flux|sdxl",
    re.IGNORECASE,
)
C2PA_MARKERS = (b"c2pa", b"jumb")


class ProvenanceDetector:
    """Reports generator traces in metadata as a probability and the signals found."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._prior = float(spec.options.get("prior", "0.05"))
        self._traced = float(spec.options.get("traced", "0.98"))

    def load(self) -> None:
        """Nothing to load: the detector is rules over metadata."""

    def signals(self, image: FetchedImage) -> list[str]:
        """Return the generator traces found in one image's file."""
        found = []
        info = image.decoded.info
        for key in GENERATOR_TEXT_KEYS:
            if key in info:
                found.append(f"png-text:{key}")
        for tag, name in ((EXIF_SOFTWARE, "software"), (EXIF_IMAGE_DESCRIPTION, "description")):
            value = image.decoded.exif.get(tag)
            if isinstance(value, str) and GENERATOR_NAMES.search(value):
                found.append(f"exif-{name}:{value.strip()[:60]}")
        if all(marker in image.data for marker in C2PA_MARKERS):
            found.append("c2pa-manifest")
        return found

    def predict(self, batch: Sequence[FetchedImage]) -> list[Detection]:
        """Return one verdict per image."""
        verdicts = []
        for image in batch:
            signals = self.signals(image)
            probability = self._traced if signals else self._prior
            verdicts.append(
                Detection(
                    ai_probability=probability,
                    label="ai_generated" if probability >= 0.5 else "real",
                    model=self.spec.label,
                    model_version=self.spec.version,
                    signals=signals,
                )
            )
        return verdicts


register("detect", "provenance")(ProvenanceDetector)
