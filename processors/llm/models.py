"""The LLM-backed tagger and captioner, registered as model backends.

- ``tag``/``llm``: search tags for a caption, from the language model.
- ``caption``/``labels-llm``: no captioning model installs offline, so a real model still
  does the work in two steps: MobileNetV2's ImageNet labels (what is in the picture) and the
  image's measured look (brightness, colours) are turned into a sentence by the language
  model. The ``model`` field of every caption says exactly that.

Both talk to an OpenAI-compatible server (``DEEPTRUST_LLM_*``): vLLM in production, the
local llama.cpp server with Gemma 3 270M in tests and the demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import MobileNetV2
from deeptrust.processors.heuristics.statistics_caption import describe
from deeptrust.processors.llm.client import CompletionClient, LLMSettings
from deeptrust.processors.llm.prompts import (
    STOP,
    caption_prompt,
    parse_sentence,
    parse_tags,
    tag_prompt,
)
from deeptrust.processors.models import ModelSpec, register


class LLMTagger:
    """Caption in, tags out, one request per caption, batched concurrently."""

    def __init__(self, spec: ModelSpec, settings: LLMSettings | None = None) -> None:
        self._settings = settings or LLMSettings()
        self.spec = replace(spec, name=self._settings.model)
        self._client = CompletionClient(self._settings)

    def load(self) -> None:
        """Connect, and fail now (not on the first batch) if the model is not served."""
        self._client.open()
        _require_model(self._client, self._settings.model)

    def predict(self, batch: Sequence[str]) -> list[list[str]]:
        """Return the tags of each caption."""
        answers = self._client.complete([tag_prompt(caption) for caption in batch], STOP)
        return [parse_tags(answer) for answer in answers]


class LabelCaptioner:
    """Image in, sentence out: ImageNet labels and the image's look, worded by the LLM."""

    def __init__(self, spec: ModelSpec, settings: LLMSettings | None = None) -> None:
        self._settings = settings or LLMSettings()
        self.spec = replace(spec, name=f"mobilenet-v2 labels + {self._settings.model}")
        backbone_spec = ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options=spec.options)
        self._backbone = MobileNetV2(backbone_spec)
        self._client = CompletionClient(self._settings)

    def load(self) -> None:
        """Load the classifier and connect to the language model."""
        self._backbone.load()
        self._client.open()
        _require_model(self._client, self._settings.model)

    def predict(self, batch: Sequence[Image.Image]) -> list[str]:
        """Return one caption per image."""
        labels = self._backbone.top_labels(batch, k=5)
        prompts = [
            caption_prompt([(s.label.name, s.probability) for s in found], describe(image))
            for image, found in zip(batch, labels, strict=True)
        ]
        return [parse_sentence(answer) for answer in self._client.complete(prompts, STOP)]


def _require_model(client: CompletionClient, model: str) -> None:
    served = client.models()
    if model not in served:
        raise RuntimeError(f"the LLM server does not serve {model!r}; it serves {served}")


register("tag", "llm")(LLMTagger)
register("caption", "labels-llm")(LabelCaptioner)
