"""The captioner's canary: replayed detected images captioned again, beside production's.

A range of ``detected.v1`` is copied under a canary prefix
(:mod:`deeptrust.training.canary.replay`), a caption stage serving the candidate's archive
(``hf-blip``, the adapter merged into its recorded base) captions it, and its captions are
paired by event id with the ones production's caption stage wrote to ``captioned.v1``.
Captions have no right answer on live traffic, so the online gates ask what can go wrong
there (dead letters, empty captions, throughput) and the quality gates read the retrain
job's offline BLEU-4 and CIDEr-D on the test split beside production's. A candidate that
passes every gate takes the ``production`` alias and is announced on ``models.v1``, where
caption stages that follow the captioner load it between two batches.
"""

from __future__ import annotations

import json
import logging
import tomllib
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from deeptrust.processors.model_follower import ArtefactCache, UpdateRefused
from deeptrust.processors.transformers_backends.blip import EMPTY_CAPTION
from deeptrust.schemas.events import CaptionedEvent, DetectedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from deeptrust.training.canary.candidate_stage import CandidateStage
from deeptrust.training.canary.comparison import dead_lettered_outputs
from deeptrust.training.canary.gates import GateResult, ProductionBaseline, at_least, at_most
from deeptrust.training.canary.replay import ReplayRange, copy_range
from deeptrust.training.canary.run import (
    OPTIONS_VARIABLE,
    CanaryEnvironment,
    CanaryReport,
    conclude,
    delete_topics,
    drain,
    merged_options,
    production_baseline,
)
from deeptrust.training.tracking.registry import Registry

log = logging.getLogger(__name__)
STAGE = "caption"


class CaptionGates(BaseModel):
    """Limits for a captioner's promotion; the ``[caption_gates]`` table of a TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_compared: int = Field(default=1, ge=1, description="Replayed images seen by both.")
    max_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_empty_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of captions that came out empty."
    )
    min_images_per_s: float = Field(default=0.0, ge=0.0)
    min_cider_delta: float = Field(
        default=0.0, description="Candidate test CIDEr-D minus production's, on the same images."
    )
    min_bleu4_delta: float = Field(default=-0.01, description="The same for BLEU-4.")

    @classmethod
    def load(cls, path: Path | None) -> CaptionGates:
        """The gates in ``path`` (a ``[caption_gates]`` table), or the defaults."""
        if path is None:
            return cls()
        with path.open("rb") as handle:
            return cls.model_validate(tomllib.load(handle).get("caption_gates", {}))


@dataclass(frozen=True)
class CaptionComparison:
    """How the candidate's captions differ from production's on replayed images."""

    replayed: int
    compared: int
    """Images captioned by both."""
    changed: float
    """Share of compared images whose caption differs from production's."""
    candidate_empty: int
    """Compared images the candidate captioned with nothing."""
    candidate_errors: int
    """Replayed images production captioned and the candidate dead-lettered."""
    production_processed: int
    candidate_images_per_s: float | None

    @property
    def error_rate(self) -> float:
        """Share of the images production captioned that the candidate dead-lettered."""
        return (
            self.candidate_errors / self.production_processed if self.production_processed else 0.0
        )

    @property
    def empty_rate(self) -> float:
        """Share of compared images the candidate gave no caption."""
        return self.candidate_empty / self.compared if self.compared else 0.0

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the tracking server, ``canary/<name>``."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        values |= {"error_rate": self.error_rate, "empty_rate": self.empty_rate}
        return {f"canary/{name}": float(value) for name, value in values.items()}


def compare_captions(
    production: dict[str, str],
    candidate: dict[str, str],
    replayed: int,
    dead_lettered: list[str | None],
    images_per_s: float | None,
) -> CaptionComparison:
    """Captions keyed by output event id, side by side."""
    shared = sorted(production.keys() & candidate.keys())
    changed = sum(candidate[key] != production[key] for key in shared)
    return CaptionComparison(
        replayed=replayed,
        compared=len(shared),
        changed=changed / len(shared) if shared else 0.0,
        candidate_empty=sum(candidate[key] == EMPTY_CAPTION for key in shared),
        candidate_errors=sum(1 for key in dead_lettered if key is not None and key in production),
        production_processed=len(production),
        candidate_images_per_s=images_per_s,
    )


def judge_captions(
    gates: CaptionGates,
    comparison: CaptionComparison,
    offline: dict[str, float],
    baseline: ProductionBaseline,
) -> list[GateResult]:
    """Every gate on the evidence; a gate without evidence fails rather than passes."""
    rate = comparison.candidate_images_per_s
    throughput = (
        GateResult(
            "images_per_s",
            gates.min_images_per_s <= 0,
            None,
            gates.min_images_per_s,
            "not measured (the captions came in one batch)",
        )
        if rate is None
        else at_least("images_per_s", rate, gates.min_images_per_s)
    )
    results = [
        at_least("compared", float(comparison.compared), float(gates.min_compared)),
        at_most("error_rate", comparison.error_rate, gates.max_error_rate),
        at_most("empty_rate", comparison.empty_rate, gates.max_empty_rate),
        throughput,
    ]
    if baseline.stale:
        detail = (
            f"production changed since training (the job scored {baseline.scored or 'none'}, "
            f"production is {baseline.current}): retrain or re-evaluate"
        )
        return [*results, GateResult("cider_d_delta", False, None, gates.min_cider_delta, detail)]
    for metric, limit in (("cider_d", gates.min_cider_delta), ("bleu4", gates.min_bleu4_delta)):
        ours, theirs = offline.get(metric), offline.get(f"production/{metric}")
        delta = None if ours is None or theirs is None else ours - theirs
        results.append(at_least(f"{metric}_delta", delta, limit))
    return results


def run_caption_canary(
    kafka: KafkaSettings,
    store: ObjectStore,
    registry: Registry,
    version: str,
    window: ReplayRange,
    gates: CaptionGates,
    environment: CanaryEnvironment,
    promote: bool = True,
) -> CanaryReport[CaptionComparison]:
    """Replay ``window`` of detected images through ``version``; promote if every gate passes."""
    candidate = registry.update_event(version, "candidate")
    if (candidate.task, candidate.backend) != ("caption", "hf-blip"):
        raise ValueError(
            f"version {version} is a {candidate.task} model on {candidate.backend}; the caption "
            "canary runs hf-blip captioners"
        )
    try:
        cache = ArtefactCache(store, environment.work_dir / "captioners")
        archive = cache.fetch(candidate.artifact_uri, candidate.artifact_sha256)
        folder = cache.unpacked(archive, candidate.artifact_sha256)
    except UpdateRefused as error:
        raise ValueError(f"version {version}: {error.reason}") from error
    prefix = f"{kafka.topic_prefix}canary-captioner-v{version}-{uuid.uuid4().hex[:6]}."
    canary = kafka.model_copy(update={"topic_prefix": prefix})
    production_topics, canary_topics = TopicNames(kafka.topic_prefix), TopicNames(prefix)
    try:
        create_topics(canary)
        copied = copy_range(
            kafka,
            production_topics(Topic.DETECTED),
            canary_topics(Topic.DETECTED),
            window,
            event_type=DetectedEvent,
        )
        log.info("replaying %d detected images under %s", copied.messages, prefix)
        env = {
            **environment.stage_env,
            "DEEPTRUST_KAFKA_TOPIC_PREFIX": prefix,
            "DEEPTRUST_MODEL_VERSION": candidate.version,
            "DEEPTRUST_CAPTION_BACKEND": "hf-blip",
            OPTIONS_VARIABLE: json.dumps(
                merged_options(
                    environment.stage_env.get(OPTIONS_VARIABLE), STAGE, {"path": str(folder)}
                )
            ),
            "DEEPTRUST_CAPTION_FOLLOW": "",
        }
        log_path = environment.work_dir / "logs" / f"{prefix}caption.log"
        with CandidateStage(env, log_path, stage=STAGE) as stage:
            drained = drain(
                canary,
                Topic.CAPTIONED,
                CaptionedEvent,
                copied.messages,
                environment,
                stage.check_running,
            )
    finally:
        deleted = delete_topics(kafka, prefix)
        log.info("deleted %d canary topics under %s", len(deleted), prefix)
    wanted = {derived_event_id(e.event_id, STAGE, Topic.CAPTIONED) for e in copied.events}
    production = {
        item.event.event_id: item.event.caption.text
        for item in read_to_end(
            kafka,
            production_topics(Topic.CAPTIONED),
            CaptionedEvent,
            environment.drain_timeout_s,
            copied.first_timestamp_ms,
        )
        if item.event.event_id in wanted
    }
    comparison = compare_captions(
        production,
        {event.event_id: event.caption.text for event in drained.outputs},
        copied.messages,
        dead_lettered_outputs(drained.letters, STAGE, Topic.CAPTIONED),
        drained.images_per_s,
    )
    offline = registry.offline_metrics(version)
    results = judge_captions(gates, comparison, offline, production_baseline(registry, version))
    return conclude(kafka, registry, candidate, prefix, comparison, results, promote)
