"""Canary by replay: the candidate sees real traffic again, beside production's verdicts.

A range of the uploads topic is copied under a canary prefix (its own topics and consumer
groups, so production is untouched), a detect stage running the candidate processes it,
and the comparison, the offline metrics and the stated gates decide. Only a passing
candidate takes the ``production`` alias, and the models topic tells every detect stage
that follows the model to load it between two batches.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from deeptrust.processors.model_follower import (
    ARCHIVED_BACKENDS,
    ARTEFACT_OPTIONS,
    ArtefactCache,
    UpdateRefused,
)
from deeptrust.schemas.events import (
    DeadLetterEvent,
    DetectedEvent,
    Detection,
    Event,
    ModelUpdateEvent,
)
from deeptrust.streams.codec import PRODUCED_AT
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.producer import produce_one
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from deeptrust.training.canary.candidate_stage import CandidateStage
from deeptrust.training.canary.comparison import (
    Comparison,
    compare,
    dead_lettered_outputs,
    throughput,
)
from deeptrust.training.canary.gates import GateResult, Gates, ProductionBaseline, judge
from deeptrust.training.canary.replay import ReplayCopy, ReplayRange, copy_range
from deeptrust.training.service.vit_recipe import ViTCandidate
from deeptrust.training.tracking.registry import Registry

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)
OPTIONS_VARIABLE = "DEEPTRUST_MODEL_OPTIONS"
MAX_BATCH_VARIABLE = "DEEPTRUST_RUNNER_MAX_BATCH"


class Compared(Protocol):
    """A canary's comparison: whatever it measured, as flat numbers for the tracking server."""

    def metrics(self) -> dict[str, float]:
        """``canary/<name>`` -> value."""
        ...


C = TypeVar("C", bound=Compared)


@dataclass(frozen=True)
class CanaryReport(Generic[C]):
    """Everything the decision rested on (the detector's comparison, or the captioner's)."""

    model: str
    version: str
    prefix: str
    comparison: C
    gates: list[GateResult]
    promoted: bool

    @property
    def passed(self) -> bool:
        """Every gate passed."""
        return all(gate.passed for gate in self.gates)

    def to_json(self) -> str:
        """The report as the tracking server keeps it."""
        body = asdict(self)
        body["passed"] = self.passed
        return json.dumps(body, indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class CanaryEnvironment:
    """How to start the canary's detect stage: the processors' settings it inherits."""

    stage_env: dict[str, str]
    """``DEEPTRUST_*`` settings of production's detect stage (object store, limits)."""
    work_dir: Path
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 600.0


def _candidate_detector(
    store: ObjectStore, event: ModelUpdateEvent, folder: Path, inherited: str | None = None
) -> dict[str, str]:
    """Fetch and check the candidate's artefact; the detect stage's settings to serve it.

    The settings are ``DEEPTRUST_DETECT_BACKEND`` and ``DEEPTRUST_MODEL_OPTIONS``. A probe
    head is a file the probe backends (``mobilenet-blocks``, ``mobilenet-probe``) read as
    ``head``; a fine-tuned ViT is an archive, unpacked here, that the ``hf-vit`` backend
    reads as ``path``. Those options are merged into production's ``inherited`` options (a
    JSON object): shared keys such as ``device`` and ``dtype`` and other tasks' options stay,
    the candidate's detect options win over production's.
    """
    if event.backend not in ARTEFACT_OPTIONS:
        raise ValueError(
            f"version {event.version} has backend {event.backend!r}; the canary runs "
            f"{' and '.join(sorted(ARTEFACT_OPTIONS))} detectors only"
        )
    # The same fetch, hash check and unpacking as a stage that follows promotions.
    cache = ArtefactCache(store, folder)
    try:
        path = cache.fetch(event.artifact_uri, event.artifact_sha256)
        if event.backend in ARCHIVED_BACKENDS:
            path = cache.unpacked(path, event.artifact_sha256)
    except UpdateRefused as error:
        raise ValueError(f"version {event.version}: {error.reason}") from error
    if event.backend == "hf-vit":  # with the threshold its training chose
        options = ViTCandidate.from_folder(path, store.get).spec().options
    else:
        options = {ARTEFACT_OPTIONS[event.backend]: str(path)}
    return {
        "DEEPTRUST_DETECT_BACKEND": event.backend,
        OPTIONS_VARIABLE: json.dumps(merged_options(inherited, "detect", options)),
    }


def merged_options(inherited: str | None, task: str, options: dict[str, str]) -> dict[str, Any]:
    """``inherited`` (the JSON of ``DEEPTRUST_MODEL_OPTIONS``) with ``task``'s ``options`` in."""
    base: Any = json.loads(inherited) if inherited and inherited.strip() else {}
    if not isinstance(base, dict):
        raise ValueError(f"{OPTIONS_VARIABLE} must be a JSON object, not {inherited!r}")
    own = base.get(task) or {}
    if not isinstance(own, dict):
        raise ValueError(f"{OPTIONS_VARIABLE}[{task!r}] must be an object, not {own!r}")
    return {**base, task: {**own, **options}}


def production_baseline(registry: Registry, version: str) -> ProductionBaseline:
    """The production version ``version``'s job scored, and production's version now."""
    return ProductionBaseline(
        scored=registry.scored_production(version), current=registry.version_of("production")
    )


def delete_topics(kafka: KafkaSettings, prefix: str, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic named under ``prefix``; log (never raise) what could not be.

    Returns the topics deleted. The canary's topics hold a copy of production's uploads
    and are of no use once the report is written.
    """
    try:
        admin = AdminClient(kafka.client_config())
        topics = admin.list_topics(timeout=timeout_s).topics
        names = sorted(name for name in topics if name.startswith(prefix))
        if not names:
            return []
        futures = admin.delete_topics(names, operation_timeout=timeout_s)
    except KafkaException as error:
        log.warning("could not delete the canary's topics under %s: %s", prefix, error)
        return []
    deleted = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            deleted.append(name)
        except Exception as error:  # one topic's failure must not hide the others'
            log.warning("could not delete canary topic %s: %s", name, error)
    return sorted(deleted)


def _production_detections(
    kafka: KafkaSettings, wanted: set[str], since_ms: int | None, timeout_s: float
) -> dict[str, Detection]:
    """Production's verdicts with the wanted ids, read from the replay range's start on.

    Reading starts at the first upload's timestamp, not the topic's beginning: at scale the
    detected topic holds days of traffic and the canary needs minutes of it.
    """
    topic = TopicNames(kafka.topic_prefix)(Topic.DETECTED)
    verdicts = read_to_end(kafka, topic, DetectedEvent, timeout_s, since_ms)
    return {
        item.event.event_id: item.event.detection
        for item in verdicts
        if item.event.event_id in wanted
    }


def run_canary(
    kafka: KafkaSettings,
    store: ObjectStore,
    registry: Registry,
    version: str,
    window: ReplayRange,
    gates: Gates,
    environment: CanaryEnvironment,
    promote: bool = True,
) -> CanaryReport[Comparison]:
    """Replay ``window`` through ``version``, compare, judge, and promote if every gate passes."""
    candidate = registry.update_event(version, "candidate")
    prefix = f"{kafka.topic_prefix}canary-v{version}-{uuid.uuid4().hex[:6]}."
    canary = kafka.model_copy(update={"topic_prefix": prefix})
    try:
        create_topics(canary)
        outputs, letters, rate, copied = _replay(
            kafka, canary, store, candidate, window, environment
        )
    finally:
        deleted = delete_topics(kafka, prefix)
        log.info("deleted %d canary topics under %s", len(deleted), prefix)
    wanted = {derived_event_id(u.event_id, "detect", Topic.DETECTED) for u in copied.events}
    production = _production_detections(
        kafka, wanted, copied.first_timestamp_ms, environment.drain_timeout_s
    )
    comparison = compare(production, outputs, copied.messages, letters, rate)
    offline = registry.offline_metrics(version)
    results = judge(gates, comparison, offline, production_baseline(registry, version))
    return conclude(kafka, registry, candidate, prefix, comparison, results, promote)


def conclude(
    kafka: KafkaSettings,
    registry: Registry,
    candidate: ModelUpdateEvent,
    prefix: str,
    comparison: C,
    results: list[GateResult],
    promote: bool,
) -> CanaryReport[C]:
    """Record the report on the candidate's run; promote it if asked and every gate passed."""
    passed = all(result.passed for result in results)
    version = candidate.version
    report = CanaryReport(registry.name, version, prefix, comparison, results, promote and passed)
    # The registry's client, not the fluent API: it knows the tracking URI it was given.
    client, run_id = registry.client, candidate.run_id
    for name, value in comparison.metrics().items():
        client.log_metric(run_id, name, value)
    client.set_tag(run_id, "deeptrust.canary", "passed" if passed else "failed")
    client.log_text(run_id, report.to_json(), f"canary/{prefix.rstrip('.')}.json")
    if report.promoted:
        promote_version(kafka, registry, version)
    return report


def _replay(
    kafka: KafkaSettings,
    canary: KafkaSettings,
    store: ObjectStore,
    candidate: ModelUpdateEvent,
    window: ReplayRange,
    environment: CanaryEnvironment,
) -> tuple[dict[str, Detection], list[str | None], float | None, ReplayCopy]:
    """Copy the window under the canary's prefix and run the candidate's detect stage on it."""
    prefix = canary.topic_prefix
    production_topics, canary_topics = TopicNames(kafka.topic_prefix), TopicNames(prefix)
    copied = copy_range(
        kafka, production_topics(Topic.UPLOADS), canary_topics(Topic.UPLOADS), window
    )
    log.info("replaying %d uploads under %s", copied.messages, prefix)
    detector = _candidate_detector(
        store,
        candidate,
        environment.work_dir / "heads",
        environment.stage_env.get(OPTIONS_VARIABLE),
    )
    env = {
        **environment.stage_env,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": prefix,
        "DEEPTRUST_MODEL_VERSION": candidate.version,
        **detector,
        "DEEPTRUST_DETECT_FOLLOW": "",
    }
    log_path = environment.work_dir / "logs" / f"{prefix}detect.log"
    with CandidateStage(env, log_path) as stage:
        drained = drain(
            canary,
            Topic.DETECTED,
            DetectedEvent,
            copied.messages,
            environment,
            stage.check_running,
        )
    verdicts = {item.event_id: item.detection for item in drained.outputs}
    letters = dead_lettered_outputs(drained.letters)
    return verdicts, letters, drained.images_per_s, copied


@dataclass(frozen=True)
class Drained(Generic[E]):
    """What a canary stage wrote: its outputs, its dead letters, and its throughput."""

    outputs: list[E]
    letters: list[DeadLetterEvent]
    images_per_s: float | None
    """None unless the outputs span more than one of the stage's batches."""


def drain(
    canary: KafkaSettings,
    output: Topic,
    output_type: type[E],
    expected: int,
    environment: CanaryEnvironment,
    check_running: Callable[[], None],
) -> Drained[E]:
    """Wait until every replayed input has an output or a dead letter; time the outputs.

    The stage has ``ready_timeout_s`` to load its model on top of ``drain_timeout_s``, and
    ``check_running`` raises as soon as it exits.
    """
    topics = TopicNames(canary.topic_prefix)
    allowed_s = environment.ready_timeout_s + environment.drain_timeout_s
    deadline = time.monotonic() + allowed_s
    while True:
        check_running()
        outputs = read_to_end(canary, topics(output), output_type, 60)
        letters = read_to_end(canary, topics(Topic.DEAD_LETTERS), DeadLetterEvent, 60)
        if len(outputs) + len(letters) >= expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"canary produced {len(outputs)} outputs and {len(letters)} dead letters "
                f"of {expected} in {allowed_s}s"
            )
        time.sleep(0.5)  # polling the topics' ends; the canary stage works meanwhile
    stamps = [datetime.fromisoformat(item.headers[PRODUCED_AT]) for item in outputs]
    rate = throughput(stamps, _max_batch(environment.stage_env))
    return Drained([item.event for item in outputs], [item.event for item in letters], rate)


def _max_batch(stage_env: dict[str, str]) -> int:
    """The canary stage's batch size: its ``DEEPTRUST_RUNNER_MAX_BATCH`` or the default."""
    configured = stage_env.get(MAX_BATCH_VARIABLE)
    default = int(RunnerSettings.model_fields["max_batch"].default)
    return int(configured) if configured else default


def promote_version(kafka: KafkaSettings, registry: Registry, version: str) -> None:
    """Give ``version`` the production alias and tell the stages, in that order."""
    registry.set_alias("production", version)
    event = registry.update_event(version, "production")
    produce_one(kafka, TopicNames(kafka.topic_prefix)(Topic.MODELS), event, event.key)
    log.info("%s version %s promoted to production", registry.name, version)
