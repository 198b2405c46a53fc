"""The ``deeptrust`` command: broker, topics, uploads, stages, search and the demo.

Settings are read once here, from the environment, and passed down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import Progress

from deeptrust.console_cli import console
from deeptrust.dlq_cli import dlq
from deeptrust.gateway_cli import gateway
from deeptrust.report_cli import report
from deeptrust.streams.config import KafkaSettings
from deeptrust.training_cli import (
    evaluate_captions,
    feedback,
    replay,
    retrain,
    retrain_captioner,
    retrain_service,
)
from deeptrust.webhooks.cli import notify

if TYPE_CHECKING:
    from deeptrust.streams.metrics import StageMetrics
    from deeptrust.streams.runner import RunnerSettings

DEFAULT_HOME = Path(".deeptrust")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(verbose: bool) -> None:
    """DeepTrust: enrich photo uploads through Kafka stream processors."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


@cli.command("topics")
@click.option("--partitions", type=int, default=6, show_default=True)
@click.option("--replication-factor", type=int, default=1, show_default=True)
def topics(partitions: int, replication_factor: int) -> None:
    """Create the pipeline's topics under the configured prefix."""
    from deeptrust.streams.topics import create_topics

    created = create_topics(KafkaSettings(), partitions, replication_factor)
    click.echo(f"created {len(created)} topics" + "".join(f"\n  {name}" for name in created))


@cli.command("produce")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--rate", type=float, default=None, help="Uploads per second (default: as fast as possible)."
)
@click.option(
    "--repeat", type=int, default=1, show_default=True, help="Replay the files this many times."
)
def produce(paths: tuple[Path, ...], rate: float | None, repeat: int) -> None:
    """Store images and emit their upload events (also replays a folder at a chosen rate)."""
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.streams.producer import UnsupportedUpload, UploadProducer, image_files, paced

    files = image_files(paths) * repeat
    producer = UploadProducer(KafkaSettings(), ProcessorSettings().object_store())
    refused: list[str] = []
    console = Console(stderr=True)
    with Progress(console=console) as progress:
        task = progress.add_task("uploading", total=len(files))
        for path in paced(files, rate):
            try:
                producer.upload(path.read_bytes(), path.name, refuse_unknown=True)
            except UnsupportedUpload as error:
                refused.append(str(error))
                console.print(f"refused {error}")
            progress.advance(task)
    producer.flush()
    click.echo(f"produced {len(files) - len(refused)} upload events")
    if refused:
        raise click.ClickException(f"{len(refused)} files refused (see docs/formats.md)")


@cli.group()
def stage() -> None:
    """Run pipeline stages."""


@stage.command("run")
@click.argument("name")
@click.option("--metrics-port", type=int, default=8000, show_default=True)
def stage_run(name: str, metrics_port: int) -> None:
    """Run one stage (or the drift processor) until SIGTERM; work in hand is finished first."""
    from deeptrust.streams.kafka_errors import ServiceStopped
    from deeptrust.streams.metrics import StageMetrics
    from deeptrust.streams.runner import RunnerSettings
    from deeptrust.streams.serve import serve_until_signalled

    runner_settings = RunnerSettings()
    services = {"drift": _drift_service, "retrain": retrain_service}
    run = services.get(name, lambda settings: _stage(name, settings))(runner_settings)
    metrics = StageMetrics(name)
    try:
        serve_until_signalled(
            metrics, metrics_port, lambda stop: run(metrics, stop), runner_settings.max_wait_s
        )
    except ServiceStopped as error:
        raise click.ClickException(str(error)) from error


_Run = Callable[["StageMetrics", threading.Event], None]


def _stage(name: str, runner_settings: RunnerSettings) -> _Run:
    from deeptrust.processors.registry import build_stage
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.streams.runner import StageRunner

    built = build_stage(name, ProcessorSettings())
    return lambda metrics, stop: StageRunner(built, KafkaSettings(), runner_settings, metrics).run(
        stop
    )


def _drift_service(runner_settings: RunnerSettings) -> _Run:
    from deeptrust.drift.service import DriftService
    from deeptrust.drift.settings import DriftSettings

    settings = DriftSettings()
    return lambda metrics, stop: DriftService(
        settings, KafkaSettings(), runner_settings, metrics
    ).run(stop)


@cli.group()
def drift() -> None:
    """Look at what the drift processor found."""


@drift.command("report")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_HOME / "drift-report",
    show_default=True,
)
@click.option("--timeout", type=float, default=30.0, show_default=True)
def drift_report(out: Path, timeout: float) -> None:
    """Write PNGs of the drift statistic over time and of the worst window."""
    from deeptrust.drift.report import write_report
    from deeptrust.schemas.events import DriftReportEvent
    from deeptrust.streams.reader import read_to_end
    from deeptrust.streams.topics import Topic, TopicNames

    kafka = KafkaSettings()
    topic = TopicNames(kafka.topic_prefix)(Topic.DRIFT)
    reports = [r.event for r in read_to_end(kafka, topic, DriftReportEvent, timeout)]
    if not reports:
        raise click.ClickException(f"no drift reports on {topic} yet")
    for path in write_report(reports, out):
        click.echo(str(path))


@cli.group()
def alerts() -> None:
    """Follow the alerts topic, or deliver it to subscribed webhooks."""


@alerts.command("tail")
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (repeatable).")
@click.option(
    "--severity",
    type=click.Choice(["info", "warning", "critical"]),
    default="info",
    show_default=True,
    help="Only this severity and above.",
)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert, not now.")
@click.option("--max", "limit", type=int, default=None, help="Stop after this many alerts.")
def alerts_tail(
    kinds: tuple[str, ...], severity: str, from_beginning: bool, limit: int | None
) -> None:
    """Print alerts as they are raised, one line each, until Ctrl-C."""
    from deeptrust.alerts import AlertFilter, one_line
    from deeptrust.schemas.events import AlertEvent
    from deeptrust.streams.reader import follow
    from deeptrust.streams.topics import Topic, TopicNames

    kafka = KafkaSettings()
    wanted = AlertFilter(kinds, severity)
    shown = 0
    for received in follow(
        kafka, TopicNames(kafka.topic_prefix)(Topic.ALERTS), AlertEvent, from_beginning
    ):
        if wanted.matches(received.event):
            click.echo(one_line(received.event))
            shown += 1
            if limit is not None and shown >= limit:
                return


@cli.command("search")
@click.argument("query")
@click.option("--limit", type=int, default=10, show_default=True)
def search(query: str, limit: int) -> None:
    """Search the index the search sink keeps: image ids with captions and tags."""
    from deeptrust.processors.search_index import SearchIndex
    from deeptrust.processors.settings import ProcessorSettings

    index = SearchIndex(ProcessorSettings().search_db)
    for hit in index.search(query, limit):
        click.echo(f"{hit.image_id}\t{hit.score:.2f}\t{hit.caption}\t[{', '.join(hit.tags)}]")
    index.close()


@cli.group()
def schemas() -> None:
    """Work with the event schemas."""


@schemas.command("export")
def schemas_export() -> None:
    """Rewrite the JSON Schema files from the event models."""
    from deeptrust.schemas.files import export

    for path in export():
        click.echo(str(path))


alerts.add_command(notify)
cli.add_command(console)
cli.add_command(dlq)
cli.add_command(gateway)
cli.add_command(evaluate_captions)
cli.add_command(feedback)
cli.add_command(replay)
cli.add_command(report)
cli.add_command(retrain)
cli.add_command(retrain_captioner)


def main() -> None:
    """Entry point of the ``deeptrust`` script."""
    cli()


if __name__ == "__main__":
    main()
