"""Commands of the training side: the tracking server, human feedback, the retrain consumer.

MLflow and torch live in the ``train`` extra (``.venv-train``), so they are imported inside
the commands: the rest of the CLI works in an environment without them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deeptrust.streams.config import KafkaSettings

if TYPE_CHECKING:
    from deeptrust.streams.metrics import StageMetrics
    from deeptrust.streams.runner import RunnerSettings
    from deeptrust.training.canary.replay import ReplayRange
    from deeptrust.training.canary.run import CanaryReport
    from deeptrust.training.service.settings import TrainingSettings

DEFAULT_HOME = Path(".deeptrust")


def retrain_service(
    runner_settings: RunnerSettings,
) -> Callable[[StageMetrics, threading.Event], None]:
    """The retrain consumer as ``deeptrust stage run retrain`` runs it.

    With captioned data configured (``DEEPTRUST_TRAINING_CAPTION_DATASETS``) each request
    retrains the captioner too.
    """
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.service.caption_job import CaptionRetrainJob
    from deeptrust.training.service.consumer import RetrainService
    from deeptrust.training.service.job import RetrainJob
    from deeptrust.training.service.settings import TrainingSettings

    kafka, settings, processors = KafkaSettings(), TrainingSettings(), ProcessorSettings()
    job = RetrainJob(settings, processors.model_store(), kafka)
    captions = None
    if settings.caption_datasets:
        captions = CaptionRetrainJob(
            settings,
            processors.model_store(),
            processors.model_spec("caption"),
            processors.max_pixels,
        )

    def serve(metrics: StageMetrics, stop: threading.Event) -> None:
        RetrainService(job, kafka, runner_settings, metrics, caption_job=captions).run(stop)

    return serve


@click.command("retrain")
@click.option("--request-id", default=None, help="Idempotency key (default: a new UUID).")
@click.option("--no-feedback", is_flag=True, help="Leave the feedback topic out (no broker).")
def retrain(request_id: str | None, no_feedback: bool) -> None:
    """Run one retrain job now, without the consumer: train, evaluate, register a candidate."""
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.service.job import RetrainJob
    from deeptrust.training.service.settings import TrainingSettings

    job = RetrainJob(
        TrainingSettings(),
        ProcessorSettings().model_store(),
        None if no_feedback else KafkaSettings(),
    )
    outcome = job.run(request_id or str(uuid.uuid4()), {"reason": "manual"})
    shown = ", ".join(f"{name} {value:.3f}" for name, value in sorted(outcome.metrics.items()))
    click.echo(f"version {outcome.version} (run {outcome.run_id}) is the candidate: {shown}")


@click.command("retrain-captioner")
@click.option("--request-id", default=None, help="Idempotency key (default: a new UUID).")
def retrain_captioner(request_id: str | None) -> None:
    """Fine-tune the captioner now: LoRA on the caption datasets, scored, a candidate.

    Reads DEEPTRUST_TRAINING_CAPTION_DATASETS (Flickr30k-layout folders) and
    DEEPTRUST_TRAINING_CAPTION_CONFIG; production is the registered captioner's production
    alias, else the caption stage's configured model.
    """
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.service.caption_job import CaptionRetrainJob
    from deeptrust.training.service.settings import TrainingSettings

    processors = ProcessorSettings()
    job = CaptionRetrainJob(
        TrainingSettings(),
        processors.model_store(),
        processors.model_spec("caption"),
        processors.max_pixels,
    )
    outcome = job.run(request_id or str(uuid.uuid4()))
    shown = ", ".join(f"{name} {value:.3f}" for name, value in sorted(outcome.metrics.items()))
    click.echo(
        f"captioner version {outcome.version} (run {outcome.run_id}) is the candidate: {shown}"
    )


@click.command("evaluate-captions")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The images' folder (default: flickr30k_images/ beside the CSV, else its folder).",
)
@click.option("--limit", type=int, default=None, help="Score only the first N images.")
@click.option("--batch", type=int, default=16, show_default=True)
def evaluate_captions(dataset: Path, images: Path | None, limit: int | None, batch: int) -> None:
    """Score the configured caption model on a Flickr30k-layout DATASET; log it to MLflow.

    DATASET is the ``results.csv`` or its folder. BLEU-4 and CIDEr-D against the references,
    per-image captions as an artefact, in the experiment ``<experiment>-captions``.
    """
    import mlflow

    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.datasets.example import read_local
    from deeptrust.training.datasets.flickr30k import read_flickr30k
    from deeptrust.training.evaluation.caption_run import score_captioner
    from deeptrust.training.service.settings import TrainingSettings

    settings, processors = TrainingSettings(), ProcessorSettings()
    loaded = read_flickr30k(dataset, images)
    examples = loaded.examples[:limit] if limit else loaded.examples
    spec = processors.model_spec("caption")
    score = score_captioner(spec, examples, read_local, processors.max_pixels, batch)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(f"{settings.experiment}-captions")
    with mlflow.start_run(run_name=f"captions-{spec.backend}") as run:
        mlflow.log_params(
            {
                "model": score.model,
                "dataset": str(dataset),
                "images": len(score.captions),
                "skipped_lines": len(loaded.skipped),
                "unreadable": len(score.unreadable),
            }
        )
        mlflow.log_metrics(score.metrics)
        mlflow.log_text(score.table(), "captions.csv")
    shown = ", ".join(f"{name} {value:.3f}" for name, value in sorted(score.metrics.items()))
    click.echo(f"{score.model} on {len(score.captions)} images (run {run.info.run_id}): {shown}")


@click.command("feedback")
@click.argument("image_id")
@click.argument("label", type=click.Choice(["ai_generated", "real"]))
@click.option("--uri", required=True, help="Where the image is (the upload event's uri).")
@click.option("--reviewer", required=True, help="Who decided.")
@click.option("--note", default="", help="Why, for the record.")
def feedback(image_id: str, label: str, uri: str, reviewer: str, note: str) -> None:
    """Record a human's label for an image on the feedback topic (training data)."""
    from deeptrust.schemas.events import FeedbackEvent
    from deeptrust.streams.producer import produce_one
    from deeptrust.streams.topics import Topic, TopicNames

    kafka = KafkaSettings()
    event = FeedbackEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "image_id": image_id,
            "uri": uri,
            "label": label,
            "reviewer": reviewer,
            "decided_at": datetime.now(UTC),
            "note": note,
        }
    )
    produce_one(kafka, TopicNames(kafka.topic_prefix)(Topic.FEEDBACK), event, event.image_id)
    click.echo(f"{image_id}: {label} (by {reviewer})")


_TIMES = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
"""Times --since and --until accept (UTC)."""


@click.command("replay")
@click.option("--version", "version", required=True, help="The registered version to try.")
@click.option("--since", type=click.DateTime(_TIMES), help="Replay uploads from this time (UTC)...")
@click.option("--until", type=click.DateTime(_TIMES), help="...to this time (UTC, exclusive).")
@click.option("--from-offset", type=int, help="Or from this offset, on every partition...")
@click.option("--to-offset", type=int, help="...to this offset (exclusive).")
@click.option(
    "--gates",
    "gates_file",
    type=click.Path(exists=True, path_type=Path),
    help="A TOML file with a [gates] table (defaults otherwise).",
)
@click.option("--promote/--no-promote", default=True, show_default=True)
@click.option(
    "--task",
    type=click.Choice(["detect", "caption"]),
    default="detect",
    show_default=True,
    help="The detector (uploads replayed) or the captioner (detected images replayed).",
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_HOME / "canary",
    show_default=True,
)
def replay(
    version: str,
    since: datetime | None,
    until: datetime | None,
    from_offset: int | None,
    to_offset: int | None,
    gates_file: Path | None,
    promote: bool,
    task: str,
    work_dir: Path,
) -> None:
    """Canary a candidate on replayed traffic; promote it if every gate passes."""
    import os

    from mlflow import MlflowClient

    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.canary.gates import Gates
    from deeptrust.training.canary.replay import ReplayRange
    from deeptrust.training.canary.run import CanaryEnvironment, run_canary
    from deeptrust.training.service.settings import TrainingSettings
    from deeptrust.training.tracking.registry import Registry

    settings = TrainingSettings()
    window = ReplayRange(
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        from_offset=from_offset,
        to_offset=to_offset,
    )
    stage_env = {key: value for key, value in os.environ.items() if key.startswith("DEEPTRUST_")}
    if task == "caption":
        _replay_captioner(settings, version, window, gates_file, stage_env, promote, work_dir)
        return
    registry = Registry(MlflowClient(settings.tracking_uri), settings.registered_model)
    report = run_canary(
        KafkaSettings(),
        ProcessorSettings().model_store(),
        registry,
        version,
        window,
        Gates.load(gates_file),
        CanaryEnvironment(stage_env, work_dir),
        promote,
    )
    comparison = report.comparison
    _decided(
        report,
        f"compared {comparison.compared} of {comparison.replayed} replayed uploads: "
        f"agreement {comparison.agreement:.3f}, mean |shift| {comparison.mean_abs_shift:.3f}",
    )


def _replay_captioner(
    settings: TrainingSettings,
    version: str,
    window: ReplayRange,
    gates_file: Path | None,
    stage_env: dict[str, str],
    promote: bool,
    work_dir: Path,
) -> None:
    """``replay --task caption``: the captioner's canary, on replayed detected images."""
    from mlflow import MlflowClient

    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.training.canary.caption_canary import CaptionGates, run_caption_canary
    from deeptrust.training.canary.run import CanaryEnvironment
    from deeptrust.training.tracking.registry import Registry

    client = MlflowClient(settings.tracking_uri)
    registry = Registry(client, settings.caption_registered_model, "caption")
    report = run_caption_canary(
        KafkaSettings(),
        ProcessorSettings().model_store(),
        registry,
        version,
        window,
        CaptionGates.load(gates_file),
        CanaryEnvironment(stage_env, work_dir),
        promote,
    )
    comparison = report.comparison
    _decided(
        report,
        f"compared {comparison.compared} of {comparison.replayed} replayed images: "
        f"{comparison.changed:.3f} of the captions changed, {comparison.empty_rate:.3f} empty",
    )


def _decided(report: CanaryReport[Any], summary: str) -> None:
    """Print the gates and ``summary``, say what was decided; a failed gate fails the command."""
    for gate in report.gates:
        click.echo(str(gate))
    click.echo(summary)
    if report.promoted:
        click.echo(f"{report.model} version {report.version} promoted to production")
    elif report.passed:
        click.echo("every gate passed; not promoted (--no-promote)")
    else:
        raise click.ClickException(f"version {report.version} not promoted: a gate failed")
