"""``deeptrust report``: the business metrics from the topics, as a table, PNGs and gauges."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.table import Table

_TIMES = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]


@click.command("report")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".deeptrust/report"),
    show_default=True,
    help="Where the PNGs go.",
)
@click.option(
    "--sample-rate",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="The rate the moderation router sampled at [default: DEEPTRUST_MODERATION_SAMPLE_RATE].",
)
@click.option("--since", type=click.DateTime(_TIMES), help="Only events from this time (UTC).")
@click.option("--points", type=click.IntRange(2, 500), default=12, show_default=True)
@click.option(
    "--detected/--no-detected",
    default=True,
    show_default=True,
    help="Read detected.v1 to check the unflagged count against sampled / rate.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--serve", "port", type=int, default=None, help="Then serve gauges on this port.")
@click.option("--interval", type=float, default=60.0, show_default=True, help="Refresh, seconds.")
def report(
    out: Path,
    sample_rate: float | None,
    since: datetime | None,
    points: int,
    detected: bool,
    timeout: float,
    port: int | None,
    interval: float,
) -> None:
    """Flag precision, recall, reviewer agreement and search quality, with 95% intervals."""
    from deeptrust.business.exporter import serve
    from deeptrust.business.plots import write_plots
    from deeptrust.business.report import BusinessReport, build_report, business_rows, timeline
    from deeptrust.business.topics import read_observations
    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.streams.config import KafkaSettings

    kafka = KafkaSettings()
    rate = sample_rate if sample_rate is not None else ProcessorSettings().moderation_sample_rate
    since_ms = None if since is None else int(since.replace(tzinfo=UTC).timestamp() * 1000)
    try:
        observations = read_observations(kafka, rate, timeout, since_ms, detected)
    except RuntimeError as error:  # a topic missing or unreadable: say which, no traceback
        raise click.ClickException(str(error)) from error
    console = Console(width=None if sys.stdout.isatty() else 160)
    current = build_report(observations)
    console.print(_table(business_rows(current)))
    for path in write_plots(timeline(observations, points), out):
        click.echo(str(path))
    if port is None:
        return

    def compute() -> BusinessReport:
        return build_report(read_observations(kafka, rate, timeout, since_ms, detected))

    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    click.echo(f"serving business gauges on http://127.0.0.1:{port}/metrics")
    serve(compute, port, interval, stop, initial=current)


def _table(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="Business metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
