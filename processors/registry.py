"""Builds a stage by name from the settings; the CLI's ``stage run NAME`` starts here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import processors.backbones  # registers the ONNX Runtime backbones
import processors.detectors  # registers the trained detector heads
import processors.heuristics  # registers the weight-free model backends
import processors.llm.models  # registers the LLM-backed tagger and captioner
import processors.transformers_backends  # noqa: F401 - registers hf-vit, onnx-vit, hf-blip
from processors.caption import CaptionStage
from processors.detect import DetectStage
from processors.moderation import ModerationRouter
from processors.search_sink import SearchSink
from processors.settings import ProcessorSettings
from processors.tag import TagStage
from streams.stage import Stage

_BUILDERS: dict[str, Callable[[ProcessorSettings], Stage[Any, Any]]] = {
    "detect": lambda s: DetectStage(
        s.object_store(), s.model_spec("detect"), s.model_spec("embed"), s.max_pixels
    ),
    "caption": lambda s: CaptionStage(s.object_store(), s.model_spec("caption"), s.max_pixels),
    "tag": lambda s: TagStage(s.model_spec("tag")),
    "moderation": lambda s: ModerationRouter(s.moderation_threshold, s.moderation_sample_rate),
    "search": lambda s: SearchSink(s.search_db),
}
STAGE_NAMES = tuple(_BUILDERS)


def build_stage(name: str, settings: ProcessorSettings) -> Stage[Any, Any]:
    """Return the stage called ``name``, configured from ``settings``."""
    try:
        return _BUILDERS[name](settings)
    except KeyError:
        raise ValueError(
            f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}"
        ) from None
