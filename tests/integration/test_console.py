"""The moderation console and the search page in a real browser, on the real broker.

Moderation events go onto ``moderation.v1`` with the broker timestamps a queue would have;
the console is built from the same parts the server builds and served by uvicorn; Debian's
Chromium (driven by Playwright, never a downloaded browser) signs in, reads the item and
presses the keys. Every decision and click is read back from its topic.

With ``DEEPTRUST_SCREENSHOT_DIR`` set, the run saves the screenshots docs/console.md shows.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from confluent_kafka import Producer
from playwright.sync_api import Browser, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from deeptrust.console.runtime import ConsoleParts
from deeptrust.console.settings import ConsoleSettings
from deeptrust.devtools.browser import LAUNCH_FLAGS, BrowserUnavailable, ensure_chromium
from deeptrust.devtools.local_broker import free_port
from deeptrust.processors.search_index import SearchIndex
from deeptrust.schemas.events import (
    Caption,
    Detection,
    EnrichedEvent,
    FeedbackEvent,
    ModerationEvent,
    SearchInteractionEvent,
    Tags,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.reader import Received, read_until
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import wait_for
from tests.images import SAMPLES

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789abc"
SCREENSHOTS = os.environ.get("DEEPTRUST_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, installed by the project's helper if missing; skip only if that fails."""
    try:
        return ensure_chromium()
    except BrowserUnavailable as error:
        pytest.skip(f"no browser for the console tests: {error}")


@pytest.fixture
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # launch() gives every browser a new, empty profile directory of its own.
        launched = playwright.chromium.launch(executable_path=str(chromium), args=LAUNCH_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass(frozen=True)
class Seeded:
    """What the test put in front of the console."""

    flagged: list[ModerationEvent]
    sampled: list[ModerationEvent]


def moderation(store: LocalObjectStore, name: str, reason: str, p: float) -> ModerationEvent:
    stored = store.put(f"review/{name}", (SAMPLES / name).read_bytes())
    return ModerationEvent(
        event_id=str(uuid.uuid4()),
        image_id=f"img-{Path(name).stem}",
        uri=stored.uri,
        reason=reason,
        ai_probability=p,
        caption=f"a photograph: {Path(name).stem}",
        tags=[Path(name).stem],
        signals=["c2pa: generator=test"] if reason == "flagged" and p < 0.5 else [],
    )


@pytest.fixture
def seeded(kafka: KafkaSettings, topics: TopicNames, store: LocalObjectStore) -> Seeded:
    """Three flagged images (oldest first: astronaut, camera, coffee), two sampled."""
    flagged = [
        moderation(store, "astronaut.jpg", "flagged", 0.97),
        moderation(store, "camera.jpg", "flagged", 0.81),
        moderation(store, "coffee.jpg", "flagged", 0.35),
    ]
    outside = ModerationEvent.model_validate(
        {
            **moderation(store, "camera.jpg", "sampled", 0.02).model_dump(),
            "image_id": "img-outside",
            "uri": "file:///etc/hosts",  # a URI a bad event could carry: outside the store
        }
    )
    sampled = [moderation(store, "rocket.jpg", "sampled", 0.04), outside]
    producer = Producer(kafka.client_config())
    start_ms = int(time.time() * 1000) - 600_000
    # Timestamps a minute apart, in the order the router would have written them; the
    # events land on different partitions, so only the timestamps tell which is oldest.
    for minutes, event in enumerate([*flagged, *sampled]):
        encoded = encode(event, key=event.image_id)
        producer.produce(
            topics(Topic.MODERATION),
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
            timestamp=start_ms + minutes * 60_000,
        )
    # A message of the moderation schema that is not JSON: skipped, counted, nothing else.
    producer.produce(
        topics(Topic.MODERATION),
        key=b"junk",
        value=b"{not json",
        headers=[("schema", b"moderation"), ("schema-version", b"1")],
    )
    assert producer.flush(30) == 0
    return Seeded(flagged, sampled)


def enriched(
    store: LocalObjectStore, name: str, caption: str, tags: list[str], p: float
) -> EnrichedEvent:
    stored = store.put(f"search/{name}", (SAMPLES / name).read_bytes())
    return EnrichedEvent(
        event_id=str(uuid.uuid4()),
        image_id=f"found-{Path(name).stem}",
        uri=stored.uri,
        uploaded_at=datetime.now(UTC),
        width=64,
        height=64,
        detection=Detection(
            ai_probability=p,
            label="ai_generated" if p >= 0.5 else "real",
            model="test",
            model_version="1",
        ),
        caption=Caption(text=caption, model="test"),
        tags=Tags(values=tags, model="test"),
    )


@pytest.fixture
def search_db(tmp_path: Path, store: LocalObjectStore) -> Path:
    """The index the search sink keeps, holding two cats (one AI-generated) and a rocket."""
    path = tmp_path / "search.db"
    index = SearchIndex(path)
    index.upsert(
        [
            enriched(store, "chelsea.png", "a tabby cat on a rug", ["cat", "tabby"], 0.1),
            enriched(store, "coins.jpg", "a cat made of coins", ["cat", "coin"], 0.9),
            enriched(store, "rocket.jpg", "a rocket on its launch pad", ["rocket"], 0.2),
        ]
    )
    index.close()
    return path


@dataclass
class Console:
    url: str
    parts: ConsoleParts


@pytest.fixture
def console(
    kafka: KafkaSettings, store: LocalObjectStore, tmp_path: Path, seeded: Seeded, search_db: Path
) -> Iterator[Console]:
    settings = ConsoleSettings(
        reviewers={"alice": ALICE, "bob": BOB},
        state_db=tmp_path / "console.db",
        lease_s=300,
    )
    parts = ConsoleParts(settings, kafka, store, search_db, sample_rate=0.5)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(parts.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), 60, "the console's /readyz")
        yield Console(url, parts)
    finally:
        server.should_exit = True
        thread.join(30)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def signed_in(browser: Browser, console: Console, token: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(f"{console.url}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/review?lane=flagged")
    return page


def shown_image(page: Page) -> str:
    return page.get_attribute("#item", "data-image-id") or ""


def image_loaded(page: Page, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def press(page: Page, key: str) -> None:
    """Press a review key and wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


def feedback_until(
    kafka: KafkaSettings, topics: TopicNames, done: Callable[[list[FeedbackEvent]], bool]
) -> list[FeedbackEvent]:
    received: list[Received[FeedbackEvent]] = read_until(
        kafka, topics(Topic.FEEDBACK), FeedbackEvent, lambda r: done([x.event for x in r]), 30
    )
    return [r.event for r in received]


def snapshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_reviewers_decide_with_keys_and_decisions_land_on_feedback(
    browser: Browser, console: Console, seeded: Seeded, kafka: KafkaSettings, topics: TopicNames
):
    oldest, second, third = (e.image_id for e in seeded.flagged)
    alice = signed_in(browser, console, ALICE)
    assert shown_image(alice) == oldest, "the oldest flagged image comes first"
    assert alice.text_content("#reviewer") == "alice"
    assert alice.text_content("#probability") == "0.970"
    assert alice.text_content("#caption") == "a photograph: astronaut"
    wait_for(lambda: image_loaded(alice, "#item img"), 10, "the item's image")
    snapshot(alice, "console-review.png")

    bob = signed_in(browser, console, BOB)
    assert shown_image(bob) == second, "alice's leased item is not shown to bob"

    press(alice, "a")
    assert alice.text_content("#notice") == "Recorded."
    decided = feedback_until(kafka, topics, lambda events: len(events) >= 1)
    assert [(e.image_id, e.label, e.reviewer) for e in decided] == [
        (oldest, "ai_generated", "alice")
    ]
    assert decided[0].uri == seeded.flagged[0].uri
    assert shown_image(alice) == third, "the next free item: bob still holds the second"

    press(alice, "s")
    assert alice.is_visible("#empty"), "nothing left for alice: decided, leased, skipped"
    press(alice, "u")
    assert alice.text_content("#notice") == "Reopened your last decision: decide again."
    assert shown_image(alice) == oldest
    press(alice, "r")
    both = feedback_until(kafka, topics, lambda events: len(events) >= 2)
    assert [(e.image_id, e.label, e.reviewer) for e in both] == [
        (oldest, "ai_generated", "alice"),
        (oldest, "real", "alice"),
    ], "the correction follows the first decision, under the same key"
    assert both[0].event_id != both[1].event_id

    sampled = alice.context.new_page()
    sampled.goto(f"{console.url}/review?lane=sampled")
    assert shown_image(sampled) == seeded.sampled[0].image_id, "the sampled lane is apart"

    # The report page: three flagged images queued, one decided (astronaut, last called
    # real), so the flag precision rests on one decision, and it is not AI-generated.
    report = alice.context.new_page()
    report.goto(f"{console.url}/report")
    rows = dict(
        zip(
            report.locator("#report th").all_text_contents(),
            report.locator("#report td").all_text_contents(),
            strict=True,
        )
    )
    assert rows["flagged images (reviewed / entered)"] == "1 / 3"
    # Wilson at n = 1, x = 0: upper bound (z²/2 + z·sqrt(z²/4)) / (1 + z²) = 0.7935.
    assert rows["flag precision (Wilson 95%)"] == "0.0% [0.0%, 79.3%]"
    snapshot(report, "console-report.png")


def test_posts_without_the_session_csrf_token_are_refused(
    browser: Browser, console: Console, seeded: Seeded, kafka: KafkaSettings, topics: TopicNames
):
    alice = signed_in(browser, console, ALICE)
    lease_id = alice.get_attribute("form[data-key=a] input[name=lease_id]", "value")
    form = {"lease_id": lease_id, "label": "ai_generated", "lane": "flagged"}
    request = alice.context.request
    # The session cookie alone (what a forged cross-site form would carry) is not enough.
    assert request.post(f"{console.url}/review/decide", form=form).status == 403
    assert request.post(f"{console.url}/review/decide", form={**form, "csrf": "x"}).status == 403
    stranger = browser.new_context().request
    assert stranger.post(f"{console.url}/review/decide", form=form).status == 403
    assert stranger.get(f"{console.url}/review/image/{shown_image(alice)}").status == 401
    assert stranger.post(f"{console.url}/login", form={"token": ALICE}).status == 403
    image = request.get(f"{console.url}/review/image/{shown_image(alice)}?size=64")
    assert (image.status, image.headers["content-type"]) == (200, "image/jpeg")
    outside = request.get(f"{console.url}/review/image/img-outside")
    assert outside.status == 404, "the store's fetch policy refuses a URI outside its root"
    assert request.get(f"{console.url}/review/image/never-queued").status == 404
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(request.get(f"{console.url}/metrics").text())
        for sample in family.samples
    }
    junk = (("reason", "undecodable_message"), ("topic", topics(Topic.MODERATION)))
    assert samples[("deeptrust_console_skipped_messages_total", junk)] == 1, "junk counted"
    assert samples[("deeptrust_console_refused_requests_total", (("reason", "csrf"),))] == 4
    csrf = alice.get_attribute("form[data-key=a] input[name=csrf]", "value")
    accepted = request.post(f"{console.url}/review/decide", form={**form, "csrf": csrf})
    assert accepted.status == 200, "the same POST with its token is taken"
    decided = feedback_until(kafka, topics, lambda events: len(events) >= 1)
    assert [(e.image_id, e.reviewer) for e in decided] == [(seeded.flagged[0].image_id, "alice")]


def test_search_shows_results_and_a_click_lands_on_search_interactions(
    browser: Browser, console: Console, kafka: KafkaSettings, topics: TopicNames
):
    page = browser.new_context().new_page()
    page.goto(f"{console.url}/search")
    page.fill("#q", "cat")
    with page.expect_navigation():
        page.press("#q", "Enter")
    ids = page.eval_on_selector_all(".result", "items => items.map(i => i.dataset.imageId)")
    assert sorted(ids) == ["found-chelsea", "found-coins"]
    assert page.text_content("#count") == "2 results for “cat”"
    for n in range(len(ids)):
        wait_for(lambda n=n: image_loaded(page, f".result:nth-child({n + 1}) img"), 10, "thumbs")
    snapshot(page, "console-search.png")

    page.select_option("#filter", "hide_ai")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.eval_on_selector_all(".result", "r => r.map(i => i.dataset.imageId)") == [
        "found-chelsea"
    ]
    assert page.text_content(".result .ai") == "real (0.10)"
    with page.expect_navigation():
        page.click(".result .thumb")
    assert "/search/view/found-chelsea" in page.url
    wait_for(lambda: image_loaded(page, "#viewed"), 10, "the viewed image")

    def clicked(received: list[Received[SearchInteractionEvent]]) -> bool:
        return any(r.event.kind == "click" for r in received)

    received = read_until(
        kafka, topics(Topic.SEARCH_INTERACTIONS), SearchInteractionEvent, clicked, 30
    )
    events = sorted((r.event for r in received), key=lambda e: e.occurred_at)
    assert [(e.kind, e.query, e.results) for e in events] == [
        ("impression", "cat", ids),
        ("impression", "cat", ["found-chelsea"]),
        ("click", "cat", ["found-chelsea"]),
    ]
    click = events[-1]
    assert (click.image_id, click.rank) == ("found-chelsea", 1)
    assert len({e.session_id for e in events}) == 1, "one browser, one session"
    cookie = page.context.cookies()[0]["value"]
    assert click.session_id != cookie, "events name the session, never its secret"
