"""``deeptrust-dev demo --serve``: the console and the search page on the demo's topics.

After the demo's tables, one console process serves the review queue (the demo's flagged
and sampled images) and the search page (the demo's index) until Ctrl-C. The demo names one
reviewer, ``demo``, with a token made for this run and printed beside the address: a
sign-in for a laptop, not a secret worth keeping.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr
from rich.console import Console

from deeptrust.console.queue import Lane
from deeptrust.console.runtime import ConsoleParts
from deeptrust.console.settings import ConsoleSettings
from deeptrust.processors.moderation import route
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import EnrichedEvent
from deeptrust.streams.config import KafkaSettings

REVIEWER = "demo"
SERVE_SAMPLE_RATE = 0.5
"""The review sample the demo draws when it serves (production: 0.02), so that among eight
photographs the sampled lane has some to show."""


def expected_lanes(events: list[EnrichedEvent], settings: ProcessorSettings) -> dict[Lane, int]:
    """How many of ``events`` the moderation router sends to each lane."""
    lanes: dict[Lane, int] = {"flagged": 0, "sampled": 0}
    for event in events:
        lane = route(event, settings.moderation_threshold, settings.moderation_sample_rate)
        if lane is not None:
            lanes[lane] += 1
    return lanes


def serve_console(
    console: Console,
    kafka: KafkaSettings,
    settings: ProcessorSettings,
    state_dir: Path,
    expected: dict[Lane, int],
    host: str,
    port: int,
    stop: threading.Event | None = None,
) -> None:
    """Serve the console on the demo's topics until Ctrl-C (or ``stop``); print where it is."""
    stop = stop or threading.Event()
    token = secrets.token_urlsafe(18)
    console_settings = ConsoleSettings(
        reviewers={REVIEWER: SecretStr(token)}, state_db=state_dir / "console.db"
    )
    parts = ConsoleParts(
        console_settings,
        kafka,
        settings.object_store(),
        settings.search_db,
        settings.moderation_sample_rate,
    )
    server = uvicorn.Server(uvicorn.Config(parts.app(), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="demo-console", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    try:
        with console.status("rebuilding the review queue from moderation.v1"):
            _wait_ready(url, thread)
            waiting = _wait_queued(parts, expected)
        console.print(
            f"[bold]moderation console[/bold]: {url}/login  (reviewer {REVIEWER}, "
            f"token [bold]{token}[/bold]); waiting: {waiting['flagged']} flagged, "
            f"{waiting['sampled']} sampled"
        )
        console.print(f"[bold]search page[/bold]: {url}/search?q=cat")
        console.print("keys on the review page: a AI-generated, r real, s skip, u undo")
        console.print("Ctrl-C stops the console, the stages and what the demo started")
        while thread.is_alive() and not stop.is_set():
            thread.join(0.5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.should_exit = True
        thread.join(30)


def _wait_ready(url: str, thread: threading.Thread, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise SystemExit(f"the console stopped before it served {url} (is the port free?)")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the console at {url} was not ready after {timeout_s}s")


def _wait_queued(
    parts: ConsoleParts, expected: dict[Lane, int], timeout_s: float = 30.0
) -> dict[Lane, int]:
    """The queue's counts once the router's events for the demo's images are all in."""
    deadline = time.monotonic() + timeout_s
    waiting = parts.queue.waiting()
    while any(waiting[lane] < n for lane, n in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
        waiting = parts.queue.waiting()
    return waiting
