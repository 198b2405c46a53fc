"""The HTTP ingest gateway on the real broker: uploads become durable events, results come back.

The gateway runs in uvicorn on a free port, built from the same parts the server builds;
every check goes over HTTP and reads the real topics and the real object store.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer
from PIL import Image

from deeptrust.devtools.local_broker import free_port
from deeptrust.gateway.runtime import GatewayParts
from deeptrust.gateway.settings import GatewaySettings
from deeptrust.gateway.sources import FORM_OVERHEAD
from deeptrust.gateway.status import StatusFollower, StatusStore, Update
from deeptrust.schemas.events import (
    Caption,
    DeadLetterEvent,
    Detection,
    EnrichedEvent,
    Tags,
    UploadEvent,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import dead_letter
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.producer import produce_one
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import wait_for
from tests.events import upload_event
from tests.images import SAMPLES, corrupt_bytes
from tests.unit.test_formats import FILES as FORMAT_FILES

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789"
MAX_BYTES = 1024 * 1024


@dataclass
class RunningGateway:
    """A gateway serving on a port, and a client that sends the API key."""

    url: str
    parts: GatewayParts
    client: httpx.Client

    def status(self, image_id: str) -> httpx.Response:
        return self.client.get(f"/v1/uploads/{image_id}")


StartGateway = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(
    kafka: KafkaSettings, store: LocalObjectStore, tmp_path: Path
) -> Iterator[StartGateway]:
    """Start gateways (uvicorn in a thread each) on this test's topics; stop them at the end."""
    stops: list[Callable[[], None]] = []

    def start(**overrides: object) -> RunningGateway:
        settings = GatewaySettings.model_validate(
            {
                "api_keys": [KEY],
                "max_bytes": MAX_BYTES,
                "status_db": tmp_path / f"status-{len(stops)}.db",
                **overrides,
            }
        )
        gateway, stop = serve(GatewayParts(settings, kafka, store))
        stops.append(stop)
        return gateway

    yield start
    for stop in stops:
        stop()


def serve(parts: GatewayParts) -> tuple[RunningGateway, Callable[[], None]]:
    """Run ``parts``' app in uvicorn on a free port; return it once /readyz says ready."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(parts.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30)

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def stop() -> None:
        client.close()
        server.should_exit = True
        thread.join(30)

    try:
        wait_for(ready, 60, "the gateway's /readyz")
    except BaseException:
        stop()
        raise
    return RunningGateway(url, parts, client), stop


@pytest.fixture
def gateway(start_gateway: StartGateway) -> RunningGateway:
    return start_gateway()


def photo(name: str = "astronaut.jpg") -> bytes:
    return (SAMPLES / name).read_bytes()


def post_file(gateway: RunningGateway, data: bytes, name: str) -> httpx.Response:
    return gateway.client.post("/v1/uploads", files={"file": (name, data)})


def enriched_for(upload: UploadEvent) -> EnrichedEvent:
    """The tag stage's output for an upload, as the pipeline would produce it."""
    return EnrichedEvent(
        event_id=str(uuid.uuid4()),
        image_id=upload.image_id,
        uri=upload.uri,
        uploaded_at=upload.uploaded_at,
        width=512,
        height=512,
        detection=Detection(
            ai_probability=0.02, label="real", model="mobilenet-probe", model_version="1"
        ),
        caption=Caption(text="An astronaut in a suit.", model="image-statistics"),
        tags=Tags(values=["astronaut", "suit"], model="keywords", broader=["person"]),
    )


def uploads_of(kafka: KafkaSettings, topics: TopicNames) -> list[UploadEvent]:
    return [r.event for r in read_to_end(kafka, topics(Topic.UPLOADS), UploadEvent, 30)]


def test_upload_is_stored_emitted_and_answered_with_its_result(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames, store: LocalObjectStore
) -> None:
    data = photo()
    response = post_file(gateway, data, "astronaut.jpg")
    assert response.status_code == 202, response.text
    accepted = response.json()
    image_id = accepted["image_id"]
    assert accepted["status_url"] == f"/v1/uploads/{image_id}"
    assert response.headers["location"] == accepted["status_url"]

    # The 202 came after the broker's acknowledgement: the event is already readable.
    events = uploads_of(kafka, topics)
    assert [e.image_id for e in events] == [image_id]
    event = events[0]
    assert event.event_id == accepted["event_id"]
    assert event.sha256 == hashlib.sha256(data).hexdigest()
    assert event.size_bytes == len(data)
    assert event.content_type == "image/jpeg"
    assert event.source == "gateway"
    assert event.metadata["filename"] == "astronaut.jpg"
    assert event.metadata["uploader"] == hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert store.get(event.uri) == data

    pending = gateway.status(image_id)
    assert pending.status_code == 202
    assert pending.json() == {"status": "pending", "image_id": image_id}

    enriched = enriched_for(event)
    produce_one(kafka, topics(Topic.ENRICHED), enriched, key=image_id)
    wait_for(lambda: gateway.status(image_id).status_code == 200, 30, "the enriched result")
    assert EnrichedEvent.model_validate(gateway.status(image_id).json()) == enriched


def test_every_replica_answers_for_every_upload(
    start_gateway: StartGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    """Each instance follows in a group of its own: an upload to one is known to the other."""
    first, second = start_gateway(), start_gateway()
    response = post_file(first, photo("coffee.jpg"), "coffee.jpg")
    assert response.status_code == 202, response.text
    image_id = response.json()["image_id"]
    wait_for(lambda: second.status(image_id).status_code == 202, 30, "the other replica")

    event = uploads_of(kafka, topics)[0]
    produce_one(kafka, topics(Topic.ENRICHED), enriched_for(event), key=image_id)
    for replica in (first, second):
        wait_for(lambda r=replica: r.status(image_id).status_code == 200, 30, "the result")


def test_a_dead_lettered_image_reports_the_reason(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    response = post_file(gateway, photo("coins.jpg"), "coins.jpg")
    assert response.status_code == 202, response.text
    image_id = response.json()["image_id"]

    # The detect stage's own dead letter for the real upload message.
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics(Topic.UPLOADS)])
    try:
        messages: list = []
        wait_for(lambda: bool(messages.extend(consumer.consume(10, 0.5)) or messages), 30, "it")
    finally:
        consumer.close()
    message = next(m for m in messages if m.error() is None)
    error = InvalidInput(Reason.UNDECODABLE_IMAGE, "image file is truncated")
    encoded = dead_letter("detect", message, error)
    letter = DeadLetterEvent.model_validate_json(encoded.value)
    produce_one(kafka, topics(Topic.DEAD_LETTERS), letter, key=image_id)

    wait_for(lambda: gateway.status(image_id).status_code == 409, 30, "the dead letter")
    body = gateway.status(image_id).json()
    assert body["status"] == "dead_lettered"
    assert body["stage"] == "detect"
    assert body["reason"] == "undecodable_image"
    assert body["detail"] == "image file is truncated"


def test_an_image_never_seen_is_404(gateway: RunningGateway) -> None:
    response = gateway.status("no-such-image")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_refusals_emit_nothing(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    data = photo()
    anonymous = httpx.post(f"{gateway.url}/v1/uploads", files={"file": ("a.jpg", data)})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    wrong = httpx.post(
        f"{gateway.url}/v1/uploads",
        files={"file": ("a.jpg", data)},
        headers={"X-API-Key": KEY + "x"},
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{gateway.url}/v1/uploads/x").status_code == 401

    big = large_jpeg(MAX_BYTES + 1)
    declared = post_file(gateway, big, "big.jpg")
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"] == "too_large"
    streamed = post_chunked(gateway, big, "big.jpg")
    assert streamed.status_code == 413, streamed.text

    text = post_file(gateway, b"just some text\n" * 100, "notes.jpg")
    assert text.status_code == 415
    assert text.json()["error"] == "unsupported_type"
    raw = post_file(gateway, (FORMAT_FILES / "camera.dng").read_bytes(), "picture.jpg")
    assert raw.status_code == 415
    assert "export the photo as JPEG or HEIC" in raw.json()["detail"]
    not_an_image = gateway.client.post("/v1/uploads", content=data)
    assert not_an_image.status_code == 415

    broken = post_file(gateway, b"\xff\xd8\xff" + corrupt_bytes(), "broken.jpg")
    assert broken.status_code == 422
    assert broken.json()["error"] == "undecodable_image"
    no_file = gateway.client.post("/v1/uploads", files={"other": ("a.jpg", data)})
    assert no_file.status_code == 400

    assert uploads_of(kafka, topics) == []
    metrics = httpx.get(f"{gateway.url}/metrics").text
    for reason, count in [
        ("unauthorized", 2),
        ("too_large", 2),
        ("unsupported_type", 3),
        ("undecodable_image", 1),
        ("bad_request", 1),
    ]:
        sample = f'deeptrust_gateway_rejected_uploads_total{{reason="{reason}"}} {count}.0'
        assert sample in metrics
    assert (
        'deeptrust_gateway_requests_total{method="POST",route="/v1/uploads",status="413"} 2.0'
        in metrics
    )


def test_upload_by_uri(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames, store: LocalObjectStore
) -> None:
    data = photo("chelsea.png")
    stored = store.put("incoming/chelsea.png", data)
    response = gateway.client.post("/v1/uploads", json={"uri": stored.uri})
    assert response.status_code == 202, response.text
    event = uploads_of(kafka, topics)[0]
    assert event.uri == stored.uri  # a reference: not copied
    assert event.sha256 == stored.sha256
    assert event.content_type == "image/png"

    outside = gateway.client.post("/v1/uploads", json={"uri": "file:///etc/passwd"})
    assert outside.status_code == 422
    assert outside.json()["error"] == "disallowed_uri"
    remote = gateway.client.post("/v1/uploads", json={"uri": "http://169.254.169.254/latest"})
    assert remote.status_code == 422
    assert remote.json()["error"] == "disallowed_uri"
    missing = gateway.client.post("/v1/uploads", json={"uri": store.root.as_uri() + "/nope.jpg"})
    assert missing.status_code == 422
    assert missing.json()["error"] == "missing_object"
    assert gateway.client.post("/v1/uploads", json={"url": "x"}).status_code == 400
    assert len(uploads_of(kafka, topics)) == 1


def test_remote_fetch_from_an_allowed_host(
    start_gateway: StartGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    """An allowed http(s) host is fetched (here the gateway's own OpenAPI page is a stand-in
    for a remote image host, so the type check must refuse it), redirects are not followed."""
    gateway = start_gateway(fetch_hosts=["127.0.0.1"])
    fetched = gateway.client.post("/v1/uploads", json={"uri": f"{gateway.url}/openapi.json"})
    assert fetched.status_code == 415, fetched.text
    redirect = gateway.client.post("/v1/uploads", json={"uri": f"{gateway.url}/docs/"})
    assert redirect.status_code == 422
    assert redirect.json()["error"] == "fetch_failed"
    assert uploads_of(kafka, topics) == []


def test_no_secret_or_payload_reaches_the_logs_metrics_or_probes(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accepted = post_file(gateway, photo(), "holiday-secret-name.jpg")
    assert accepted.status_code == 202, accepted.text
    image_id = accepted.json()["image_id"]
    assert gateway.status(image_id).status_code in (200, 202)
    wrong = httpx.post(
        f"{gateway.url}/v1/uploads",
        files={"file": ("a.jpg", photo())},
        headers={"X-API-Key": "guessed-key-987"},
    )
    assert wrong.status_code == 401
    # The gateway's own records (this test's client logs its requests too).
    logged = "\n".join(
        f"{record.getMessage()} {record.args}"
        for record in caplog.records
        if record.name.startswith(("deeptrust", "uvicorn"))
    )
    # The refusal is logged (so the log is where a leaked key would show), without the key.
    assert "refused POST /v1/uploads from 127.0.0.1: invalid API key" in logged
    probes = [httpx.get(f"{gateway.url}{path}") for path in ("/metrics", "/healthz", "/readyz")]
    assert [probe.status_code for probe in probes] == [200, 200, 200]
    assert "deeptrust_gateway_requests_total" in probes[0].text
    for text in [logged, *(probe.text for probe in probes)]:
        assert KEY not in text
        assert "guessed-key-987" not in text
    for probe in probes:  # counts and states only: no image, no file name
        assert image_id not in probe.text
        assert "holiday-secret-name" not in probe.text


def test_health_and_docs(gateway: RunningGateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{gateway.url}/docs").status_code == 200
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    assert set(schema["paths"]) >= {"/v1/uploads", "/v1/uploads/{image_id}"}
    body = schema["paths"]["/v1/uploads"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}


def large_jpeg(at_least: int) -> bytes:
    """A real JPEG of at least ``at_least`` bytes (noise compresses badly)."""
    side = 256
    while True:
        noise = Image.effect_noise((side, side), 100).convert("RGB")
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=95)
        if buffer.tell() >= at_least:
            return buffer.getvalue()
        side *= 2


def post_chunked(gateway: RunningGateway, data: bytes, name: str) -> httpx.Response:
    """A multipart upload without Content-Length: the limit must hold while reading."""
    boundary = "gatewaytestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
        yield tail

    return gateway.client.post(
        "/v1/uploads",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def metric(gateway: RunningGateway, name: str) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_a_chunked_body_over_the_cap_is_cut_off_while_streaming(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    """Well over max_bytes + the form overhead, without Content-Length: refused as it arrives.

    The server's own count says the streaming cap refused it before its end (the size check
    after parsing, which reads the whole body first, answers 413 too but counts nothing),
    and so does the detail, which names the streaming limit.
    """
    limit = MAX_BYTES + FORM_OVERHEAD
    data = b"\xff\xd8\xff" + bytes(4 * limit)
    assert metric(gateway, "deeptrust_gateway_bodies_cut_off_total") == 0
    response = post_chunked(gateway, data, "huge.jpg")
    assert response.status_code == 413, response.text
    assert response.json() == {"error": "too_large", "detail": f"over {limit} bytes"}
    assert metric(gateway, "deeptrust_gateway_bodies_cut_off_total") == 1
    assert uploads_of(kafka, topics) == []


def test_a_status_store_failure_after_the_ack_still_answers_202(
    gateway: RunningGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    """The broker has the event: a 5xx would only make the client upload it a second time."""

    def broken(image_id: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    gateway.parts.status.mark_pending = broken  # type: ignore[method-assign]
    response = post_file(gateway, photo("coffee.jpg"), "coffee.jpg")
    assert response.status_code == 202, response.text
    image_id = response.json()["image_id"]
    assert [e.image_id for e in uploads_of(kafka, topics)] == [image_id]
    assert metric(gateway, "deeptrust_gateway_status_write_failures_total") == 1
    # The follower records it from the topic all the same.
    wait_for(lambda: gateway.status(image_id).status_code == 202, 30, "pending from the topic")


def test_a_new_replica_reads_back_only_the_lookback(
    start_gateway: StartGateway, kafka: KafkaSettings, topics: TopicNames
) -> None:
    """A fresh status file starts at now - lookback, not at the topics' earliest offset."""
    producer = Producer(kafka.client_config())
    now_ms = int(time.time() * 1000)
    for image_id, age_s in [("two-hours-old", 7200), ("one-minute-old", 60)]:
        encoded = encode(upload_event(image_id=image_id, event_id=image_id), key=image_id)
        producer.produce(
            topics(Topic.UPLOADS),
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
            timestamp=now_ms - age_s * 1000,
        )
    assert producer.flush(30) == 0

    gateway = start_gateway(status_lookback_s=3600)  # ready only once it has caught up
    assert gateway.status("one-minute-old").status_code == 202
    assert gateway.status("two-hours-old").status_code == 404, "older than the lookback"


class GatedStore(StatusStore):
    """A status store whose writes wait until the test opens the gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.writes = 0

    def apply(self, updates: Iterable[Update], positions: dict[tuple[str, int], int]) -> None:
        self.writes += 1
        assert self.gate.wait(60), "the test never opened the gate"
        super().apply(updates, positions)


def test_the_follower_is_ready_only_once_it_has_caught_up(
    kafka: KafkaSettings, topics: TopicNames, raw_producer: Producer, tmp_path: Path
) -> None:
    for n in range(300):  # 100 a partition, far over the lag that counts as caught up
        event = upload_event(image_id=f"img-{n}", event_id=f"e-{n}")
        encoded = encode(event, key=event.image_id)
        raw_producer.produce(
            topics(Topic.UPLOADS), key=encoded.key, value=encoded.value, headers=encoded.headers
        )
    assert raw_producer.flush(30) == 0
    store = GatedStore(tmp_path / "gated.db")
    follower = StatusFollower(kafka, store, retention_s=3600)
    follower.start()
    try:
        wait_for(lambda: store.writes > 0, 60, "the follower to read the backlog")
        assert not follower.ready(), "assigned, but behind: not ready"
        store.gate.set()
        wait_for(follower.ready, 60, "the follower to catch up")
        assert all(store.get(f"img-{n}") is not None for n in range(300))
    finally:
        store.gate.set()
        follower.close()
        store.close()


def test_a_follower_with_nothing_to_read_is_ready(kafka: KafkaSettings, tmp_path: Path) -> None:
    store = StatusStore(tmp_path / "empty.db")
    follower = StatusFollower(kafka, store, retention_s=3600)
    follower.start()
    try:
        wait_for(follower.ready, 60, "an idle follower to be ready")
    finally:
        follower.close()
        store.close()
