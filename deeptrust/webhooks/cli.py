"""``deeptrust alerts notify``: run the webhook notifier.

Also runnable on its own: ``python -m deeptrust.webhooks.cli --subscriptions FILE``.
Heavy imports happen inside the command, so importing it costs the main CLI nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command("notify")
@click.option(
    "--subscriptions",
    "subscriptions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML file of subscriptions (docs/alerts.md).",
)
@click.option("--metrics-port", type=int, default=8000, show_default=True)
@click.option("--group", default=None, help="Consumer group  [default: <prefix>alert-webhooks]")
def notify(subscriptions_file: Path, metrics_port: int, group: str | None) -> None:
    """Deliver alerts to subscribed webhooks until SIGTERM; the alert in hand is finished."""
    from deeptrust.streams.config import KafkaSettings
    from deeptrust.streams.kafka_errors import ServiceStopped
    from deeptrust.streams.metrics import StageMetrics
    from deeptrust.streams.runner import RunnerSettings
    from deeptrust.streams.serve import serve_until_signalled
    from deeptrust.webhooks.delivery import WebhookSender
    from deeptrust.webhooks.metrics import WebhookMetrics
    from deeptrust.webhooks.service import NAME, AlertWebhookService
    from deeptrust.webhooks.subscriptions import SubscriptionError, load_subscriptions

    try:
        config = load_subscriptions(subscriptions_file)
    except SubscriptionError as error:
        raise click.ClickException(str(error)) from error
    runner = RunnerSettings()
    metrics = StageMetrics(NAME)
    names = [subscription.name for subscription in config.subscriptions]
    webhook_metrics = WebhookMetrics(metrics.registry, names)
    service = AlertWebhookService(
        config.subscriptions,
        WebhookSender(config.retry, webhook_metrics),
        webhook_metrics,
        KafkaSettings(),
        runner,
        metrics,
        group,
    )
    try:
        serve_until_signalled(metrics, metrics_port, service.run, runner.max_wait_s)
    except ServiceStopped as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as the main CLI: no URL per request
    notify()
