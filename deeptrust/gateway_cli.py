"""``deeptrust gateway``: serve the HTTP ingest gateway with uvicorn until SIGTERM.

Settings come from the environment (``DEEPTRUST_GATEWAY_*``, ``DEEPTRUST_KAFKA_*`` and the
object store's ``DEEPTRUST_*``) and are checked here first, so a missing API key stops the
command with a clear message instead of inside a worker. On SIGTERM uvicorn stops
accepting, finishes the requests in flight, and the lifespan delivers what is in flight.
"""

from __future__ import annotations

import click
import uvicorn
from pydantic import ValidationError

from deeptrust.gateway.settings import GatewaySettings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes; each follows the results into the same status file.",
)
def gateway(host: str, port: int, workers: int) -> None:
    """Serve uploads (POST /v1/uploads) and results (GET /v1/uploads/ID); docs at /docs."""
    try:
        GatewaySettings()
    except ValidationError as error:
        raise click.ClickException(f"gateway settings (DEEPTRUST_GATEWAY_*): {error}") from error
    uvicorn.run(
        "deeptrust.gateway.runtime:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


if __name__ == "__main__":
    gateway()
