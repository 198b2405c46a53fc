"""Builds a stage by name from the settings; the CLI's ``stage run NAME`` starts here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import deeptrust.processors.backbones  # registers the ONNX Runtime backbones
import deeptrust.processors.detectors  # registers the trained detector heads
import deeptrust.processors.heuristics  # registers the weight-free model backends
import deeptrust.processors.llm.models  # registers the LLM-backed tagger and captioner
import deeptrust.processors.transformers_backends  # noqa: F401 - registers hf-vit, onnx-vit, hf-blip
from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.detect import DetectStage
from deeptrust.processors.model_follower import ModelFollower
from deeptrust.processors.moderation import ModerationRouter
from deeptrust.processors.search_sink import SearchSink
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.processors.tag import TagStage
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.stage import Stage


def _detect(s: ProcessorSettings, kafka: KafkaSettings) -> DetectStage:
    """The detect stage, following the model changelog when ``detect_follow`` names a model."""
    store = s.object_store()
    detector = s.model_spec("detect")
    follower = None
    if s.detect_follow:
        follower = ModelFollower(
            kafka, s.model_store(), s.detect_follow, detector, s.model_cache_dir
        )
    return DetectStage(
        store, detector, s.model_spec("embed"), s.max_pixels, follower, s.embedding_encoding
    )


def _caption(s: ProcessorSettings, kafka: KafkaSettings) -> CaptionStage:
    """The caption stage, following the model changelog when ``caption_follow`` names a model."""
    captioner = s.model_spec("caption")
    follower = None
    if s.caption_follow:
        follower = ModelFollower(
            kafka, s.model_store(), s.caption_follow, captioner, s.model_cache_dir, stage="caption"
        )
    return CaptionStage(s.object_store(), captioner, s.max_pixels, follower)


_BUILDERS: dict[str, Callable[[ProcessorSettings, KafkaSettings], Stage[Any, Any]]] = {
    "detect": _detect,
    "caption": _caption,
    "tag": lambda s, _: TagStage(s.model_spec("tag")),
    "moderation": lambda s, _: ModerationRouter(s.moderation_threshold, s.moderation_sample_rate),
    "search": lambda s, _: SearchSink(s.search_db),
}
STAGE_NAMES = tuple(_BUILDERS)


def build_stage(
    name: str, settings: ProcessorSettings, kafka: KafkaSettings | None = None
) -> Stage[Any, Any]:
    """Return the stage called ``name``, configured from ``settings``.

    ``kafka`` (default: read from ``DEEPTRUST_KAFKA_*``, as the runner does) is for stages
    that read Kafka beside their input, such as a detect stage that follows model updates.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}"
        ) from None
    return builder(settings, kafka if kafka is not None else KafkaSettings())
