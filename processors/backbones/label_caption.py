"""A caption from MobileNetV2's ImageNet labels and the image's look, with no language model.

``caption``/``mobilenet-labels`` writes what the classifier saw, then what the pixels
measure: ``tabby, Egyptian cat; a landscape-format colour photo in mostly orange tones``.
The labels are the classes' usual names, confident ones only (the best always), the same
choice ``labels-llm`` hands its language model; the ``caption-labels`` tagger reads them
back as tags, which the tag stage maps onto the vocabulary with their broader terms
(``tabby`` -> ``cat``, ``animal``). ImageNet has no class for a person, so with the option
``faces`` (``"true"``) a face found by OpenCV's Haar cascades adds ``person`` and ``face``
(two or more: ``people``, ``faces``), and a large face makes it a ``portrait``.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import MobileNetV2
from deeptrust.processors.heuristics.faces import FaceFinder
from deeptrust.processors.heuristics.statistics_caption import describe
from deeptrust.processors.llm.prompts import LABEL_FLOOR, MAX_LABELS
from deeptrust.processors.models import ModelSpec, register

LABELS_END = "; "
"""Between the labels and the look: what the ``caption-labels`` tagger splits on."""


class LabelCaptioner:
    """Image in, ``labels; look`` out."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        backbone_spec = ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options=spec.options)
        self._backbone = MobileNetV2(backbone_spec)
        wants_faces = spec.options.get("faces", "false").lower() in {"1", "true", "yes"}
        self._faces = FaceFinder() if wants_faces else None

    def load(self) -> None:
        """Build the classifier (and load the face cascade when asked for)."""
        self._backbone.load()
        if self._faces is not None:
            self._faces.load()

    def predict(self, batch: Sequence[Image.Image]) -> list[str]:
        """Return one caption per image."""
        found = self._backbone.top_labels(batch, k=MAX_LABELS)
        captions = []
        for image, labels in zip(batch, found, strict=True):
            names = [s.label.name for s in labels if s.probability >= LABEL_FLOOR]
            names = names or [labels[0].label.name]
            if self._faces is not None:
                names = self._faces.people_words(image) + names
            captions.append(", ".join(names) + LABELS_END + describe(image))
        return captions


register("caption", "mobilenet-labels")(LabelCaptioner)
