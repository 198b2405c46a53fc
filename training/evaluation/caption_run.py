"""Score a captioning model on a captioned dataset: BLEU-4 and CIDEr-D against its references.

The model is loaded from the same :class:`~deeptrust.processors.models.ModelSpec` the caption stage
gets (``ProcessorSettings().spec("caption")``), and fed the same decoded images the stage
would, in batches, so the score is the score of what production runs. The dataset is
anything with reference captions in the Flickr30k layout
(:func:`deeptrust.training.datasets.flickr30k.read_flickr30k`). An image that cannot be read or
decoded is counted and left out, not scored as an empty caption.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.images import decode_image
from deeptrust.training.datasets.example import Example
from deeptrust.training.evaluation.captions import caption_metrics


@dataclass(frozen=True)
class CaptionScore:
    """What a captioner wrote for each scored image, and the corpus metrics."""

    model: str
    captions: dict[str, str]
    references: dict[str, tuple[str, ...]]
    metrics: dict[str, float]
    unreadable: tuple[str, ...]

    def table(self) -> str:
        """One CSV row per scored image: name, candidate, references joined by ``|``."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["image", "caption", "references"])
        for name, caption in sorted(self.captions.items()):
            writer.writerow([name, caption, " | ".join(self.references[name])])
        return out.getvalue()


def score_captioner(
    spec: ModelSpec,
    examples: Sequence[Example],
    read: Callable[[str], bytes],
    max_pixels: int,
    batch_size: int = 16,
) -> CaptionScore:
    """Caption every example that has references, in batches; score the corpus."""
    wanted = [example for example in examples if example.captions]
    if not wanted:
        raise ValueError("no example has reference captions: nothing to score against")
    model = cast(BatchModel[Image.Image, str], load_model(spec))
    images: list[tuple[str, Image.Image]] = []
    unreadable: list[str] = []
    for example in wanted:
        try:
            images.append((example.name, decode_image(read(example.uri), max_pixels).image))
        except (InvalidInput, OSError):
            unreadable.append(example.name)
    if not images:
        raise ValueError(f"none of the {len(wanted)} captioned images could be decoded")
    captions: dict[str, str] = {}
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        texts = model.predict([image for _, image in batch])
        captions.update(zip((name for name, _ in batch), texts, strict=True))
    seconds = time.perf_counter() - started
    references = {example.name: example.captions for example in wanted if example.name in captions}
    metrics = caption_metrics(captions, references)
    metrics |= {"images": float(len(captions)), "images_per_s": len(captions) / seconds}
    return CaptionScore(model.spec.label, captions, references, metrics, tuple(unreadable))
