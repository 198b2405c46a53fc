"""A model server that fails for a while, and an input it always fails on, on the real broker.

The tag stage talks to the real language model (llama.cpp serving Gemma 3 270M) through a
proxy this test runs, which answers 503 to the first three requests and 500 to any request
whose prompt holds a poison word, and forwards everything else untouched. The stage must
retry the transient failures (nothing dead-lettered for them), dead-letter the poison item
alone as ``processing_failed`` once its retries are spent, and tag every other caption
exactly once.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from confluent_kafka import Producer

from deeptrust.devtools.llm_server import MODEL_ALIAS, LocalLLMServer
from deeptrust.devtools.local_broker import free_port
from deeptrust.schemas.events import (
    Caption,
    CaptionedEvent,
    DeadLetterEvent,
    Detection,
    EnrichedEvent,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.reader import read_to_end, read_until
from deeptrust.streams.topics import Topic
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
POISON = "zyzzogeton"
CAPTIONS = [
    "A cup of espresso on a saucer.",
    "An astronaut in a white space suit.",
    f"A {POISON} on a wooden table.",
    "A cat sleeping on a sofa.",
    "A red rocket on a launch pad.",
]


class FaultyProxy:
    """Forwards to the model server; 503 for the first ``transient`` requests, 500 on poison."""

    def __init__(self, upstream: str, transient: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.transient = transient
        self.answered: Counter[int] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the model list: never faulty
                upstream = httpx.get(proxy.upstream + self.path.removeprefix("/v1"), timeout=30)
                self._reply(upstream.status_code, upstream.content)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply(*proxy.answer(self.path, body))

            def _reply(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            if self.transient > 0:
                self.transient -= 1
                self.answered[503] += 1
                return 503, b'{"error": "overloaded"}'
        if POISON.encode() in body:
            self.answered[500] += 1
            return 500, b'{"error": "cannot handle this prompt"}'
        upstream = httpx.post(
            self.upstream + path.removeprefix("/v1"),
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        self.answered[upstream.status_code] += 1
        return upstream.status_code, upstream.content


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLLMServer]:
    local = LocalLLMServer(tmp_path_factory.mktemp("llm"), port=free_port())
    local.start(timeout_s=180)
    yield local
    local.stop()


@pytest.fixture
def proxy(llm: LocalLLMServer) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(llm.base_url, transient=3)
    faulty.thread.start()
    yield faulty
    faulty.server.shutdown()
    faulty.server.server_close()


def captioned(index: int, text: str) -> CaptionedEvent:
    now = datetime.now(UTC)
    return CaptionedEvent(
        event_id=str(uuid.uuid4()),
        image_id=f"img-{index}",
        uri=f"file:///nowhere/{index}.jpg",
        uploaded_at=now,
        width=64,
        height=64,
        detection=Detection(
            ai_probability=0.1, label="real", model="mobilenet-probe", model_version="1"
        ),
        caption=Caption(text=text, model="test-captions"),
    )


def test_transient_failures_are_retried_and_a_poison_pill_is_dead_lettered_alone(
    kafka, topics, start_stage, proxy: FaultyProxy
):
    producer = Producer(kafka.client_config())
    for index, text in enumerate(CAPTIONS):
        encoded = encode(captioned(index, text), key=f"img-{index}")
        producer.produce(
            topics(Topic.CAPTIONED), encoded.value, encoded.key, headers=encoded.headers
        )
    producer.flush(30)

    tag = start_stage(
        "tag",
        DEEPTRUST_TAG_BACKEND="llm",
        DEEPTRUST_LLM_BASE_URL=proxy.base_url,
        DEEPTRUST_LLM_MODEL=MODEL_ALIAS,
        DEEPTRUST_LLM_TIMEOUT_S="120",
        DEEPTRUST_RUNNER_MAX_BATCH="1",
        DEEPTRUST_RUNNER_BACKOFF_S="0.1",
        DEEPTRUST_RUNNER_MAX_BACKOFF_S="0.5",
    )
    healthy = {f"img-{i}" for i, text in enumerate(CAPTIONS) if POISON not in text}

    def all_tagged(received) -> bool:
        return healthy <= {item.event.image_id for item in received}

    read_until(kafka, topics(Topic.ENRICHED), EnrichedEvent, all_tagged, 300)
    wait_for(
        lambda: tag.metric("deeptrust_dead_lettered_total", reason="processing_failed") >= 1,
        120,
        "the poison pill's dead letter",
    )

    enriched = Counter(
        item.event.image_id
        for item in read_to_end(kafka, topics(Topic.ENRICHED), EnrichedEvent, 30)
    )
    assert enriched == Counter(healthy)
    letters = read_to_end(kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, 30)
    assert [(item.event.original_key, item.event.reason) for item in letters] == [
        ("img-2", "processing_failed")
    ]
    assert "LLMError" in letters[0].event.detail
    assert proxy.answered[503] == 3
    assert tag.metric("deeptrust_failed_batches_total") >= 3 + 5  # the outage, then the pill
    assert tag.returncode is None
