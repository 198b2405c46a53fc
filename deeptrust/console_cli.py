"""``deeptrust console``: serve the moderation console and the search page until SIGTERM.

Settings come from the environment (``DEEPTRUST_CONSOLE_*`` for the reviewers and the
leases, ``DEEPTRUST_KAFKA_*``, the object store's and the search index's ``DEEPTRUST_*``) and
are checked here first, so a missing reviewer stops the command with a clear message.
One worker: leases and sessions live in one SQLite file, which several workers could share,
but each would rebuild the queue itself.
"""

from __future__ import annotations

import click
import uvicorn
from pydantic import ValidationError

from deeptrust.console.settings import ConsoleSettings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8090, show_default=True)
def console(host: str, port: int) -> None:
    """Serve the review queue (/review) and the search page (/search)."""
    try:
        ConsoleSettings()
    except ValidationError as error:
        raise click.ClickException(f"console settings (DEEPTRUST_CONSOLE_*): {error}") from error
    uvicorn.run(
        "deeptrust.console.runtime:app_from_env",
        factory=True,
        host=host,
        port=port,
        log_level="info",
    )


if __name__ == "__main__":
    console()
