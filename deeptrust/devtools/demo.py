"""``make demo``: the whole pipeline on the local broker, end to end, a table, then the console.

Every run gets its own topic prefix, consumer groups and search index, so runs never see
each other's events; the broker and the language-model server are stopped at the end only
if this run started them. The demo runs the real offline models: MobileNetV2 embeddings,
captions worded by Gemma 3 270M from MobileNetV2's labels, and Gemma's tags.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from deeptrust.devtools.demo_serve import SERVE_SAMPLE_RATE, expected_lanes, serve_console
from deeptrust.devtools.llm_server import MODEL_ALIAS, LocalLLMServer
from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.local_s3 import LocalS3
from deeptrust.devtools.processes import StageProcess
from deeptrust.devtools.wordnet import lay_out_wordnet
from deeptrust.processors.registry import STAGE_NAMES
from deeptrust.processors.search_index import SearchIndex
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import EnrichedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.producer import UploadProducer, image_files
from deeptrust.streams.reader import Received, read_until
from deeptrust.streams.topics import Topic, TopicNames, create_topics

S3_BUCKET = "deeptrust-demo"

GENERATED = Path(__file__).resolve().parents[2] / "samples" / "generated"
GENERATED_PER_FAMILY = 2


def run_demo(
    console: Console,
    images: Path,
    query: str,
    home: Path,
    s3: bool = False,
    serve: tuple[str, int] | None = None,
) -> None:
    """Run the pipeline on ``images`` and print what it made of them.

    With ``s3`` the images go to a bucket on a local S3 API server (moto's) instead of the
    local directory, and every stage reads them from there through boto3. With ``serve``
    (host, port) the console and the search page stay up on the demo's topics afterwards,
    until Ctrl-C, with the stages still running.
    """
    with console.status("laying WordNet out for the tag stage (fetched once, via apt)"):
        lay_out_wordnet()
    s3_server = LocalS3(home / "s3") if s3 else None
    s3_env: dict[str, str] = {}
    if s3_server is not None:
        with console.status("starting a local S3 API server (moto)"):
            s3_server.start()
            s3_server.create_bucket(S3_BUCKET)
        s3_env = s3_server.environment(S3_BUCKET)
        os.environ.update(s3_env)  # this process uploads through the same settings
    broker = LocalBroker(home / "kafka")
    started_broker = broker.pid() is None
    with console.status("starting Kafka (the first run fetches its jars from Maven Central)"):
        broker.start()
    llm = LocalLLMServer(home / "llm")
    started_llm = llm.pid() is None
    with console.status("starting the language-model server (Gemma 3 270M on llama.cpp)"):
        llm.start()
    run_id = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"demo-{run_id}."
    )
    settings = ProcessorSettings(
        object_store_root=home / "objects",
        search_db=home / "demo" / f"search-{run_id}.db",
        moderation_sample_rate=SERVE_SAMPLE_RATE if serve else 0.02,
    )
    if serve:
        s3_env = {**s3_env, "DEEPTRUST_MODERATION_SAMPLE_RATE": str(SERVE_SAMPLE_RATE)}
    create_topics(kafka, partitions=3)
    stages = _start_stages(console, kafka, settings, llm, home / "demo" / run_id, s3_env)
    try:
        names = _upload(console, kafka, settings, images)
        started = time.monotonic()
        enriched = _await_enriched(console, kafka, set(names))
        elapsed = time.monotonic() - started
        console.print(f"{len(enriched)} of {len(names)} images enriched in {elapsed:.1f}s")
        _print_table(console, enriched, names)
        _print_search(console, settings.search_db, query, names)
        if serve is not None:
            lanes = expected_lanes(enriched, settings)
            serve_console(console, kafka, settings, home / "demo" / run_id, lanes, *serve)
    finally:
        for stage in stages:
            stage.terminate()
        if started_broker:
            broker.stop()
        if started_llm:
            llm.stop()
        if s3_server is not None:
            s3_server.stop()


def generated_samples(folder: Path = GENERATED) -> list[Path]:
    """A few AI-generated images beside the photographs: the project's own generators' draws.

    Two of each family in ``samples/generated`` (made by ``make train-detector``, under the
    project's licence), so the table shows what the detector makes of generated images and
    the moderation console's flagged lane has something in it.
    """
    if not folder.is_dir():
        return []
    return [
        path
        for family in sorted(p for p in folder.iterdir() if p.is_dir())
        for path in sorted(family.glob("*.png"))[:GENERATED_PER_FAMILY]
    ]


def _upload(
    console: Console, kafka: KafkaSettings, settings: ProcessorSettings, images: Path
) -> dict[str, str]:
    """Upload every image under ``images`` and the generated samples; {image id: name}."""
    files = [(path, path.name) for path in image_files([images])]
    files += [(path, f"generated/{path.parent.name}/{path.name}") for path in generated_samples()]
    producer = UploadProducer(kafka, settings.object_store(), source="demo")
    names: dict[str, str] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("uploading sample images", total=len(files))
        for path, name in files:
            names[producer.upload(path.read_bytes(), path.name).image_id] = name
            progress.advance(task)
    producer.flush()
    producer.close()
    return names


def _start_stages(
    console: Console,
    kafka: KafkaSettings,
    settings: ProcessorSettings,
    llm: LocalLLMServer,
    logs: Path,
    extra_env: dict[str, str],
) -> list[StageProcess]:
    env = {
        **extra_env,
        "DEEPTRUST_CAPTION_BACKEND": "labels-llm",
        "DEEPTRUST_TAG_BACKEND": "llm",
        "DEEPTRUST_LLM_BASE_URL": llm.base_url,
        "DEEPTRUST_LLM_MODEL": MODEL_ALIAS,
        "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "DEEPTRUST_OBJECT_STORE_ROOT": str(settings.object_store_root.resolve()),
        "DEEPTRUST_SEARCH_DB": str(settings.search_db.resolve()),
        "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.2",
    }
    stages = [StageProcess(name, env, free_port(), logs / f"{name}.log") for name in STAGE_NAMES]
    with console.status(f"starting stages: {', '.join(STAGE_NAMES)}"):
        for stage in stages:
            stage.start()
        for stage in stages:
            stage.wait_ready()
    return stages


def _await_enriched(console: Console, kafka: KafkaSettings, ids: set[str]) -> list[EnrichedEvent]:
    topic = TopicNames(kafka.topic_prefix)(Topic.ENRICHED)

    def complete(received: list[Received[EnrichedEvent]]) -> bool:
        return ids <= {item.event.image_id for item in received}

    with console.status("waiting for every enriched event"):
        received = read_until(kafka, topic, EnrichedEvent, complete, timeout_s=180)
    if not complete(received):
        raise SystemExit(f"timed out: {len(received)} of {len(ids)} images enriched")
    return [item.event for item in received]


def _print_table(console: Console, events: list[EnrichedEvent], names: dict[str, str]) -> None:
    table = Table(title="DeepTrust: enriched uploads")
    for column in ("image", "AI probability", "verdict", "caption", "tags"):
        table.add_column(column)
    for event in sorted(events, key=lambda e: names[e.image_id]):
        table.add_row(
            names[event.image_id],
            f"{event.detection.ai_probability:.2f}",
            event.detection.label,
            event.caption.text,
            ", ".join(event.tags.values),
        )
    console.print(table)
    sample = events[0]
    console.print(
        f"models: detect={sample.detection.model}, caption={sample.caption.model}, "
        f"tags={sample.tags.model}"
    )


def _print_search(console: Console, path: Path, query: str, names: dict[str, str]) -> None:
    index = SearchIndex(path)
    deadline = time.monotonic() + 60
    while index.count() < len(names) and time.monotonic() < deadline:
        time.sleep(0.2)
    hits = index.search(query, limit=5)
    index.close()
    table = Table(title=f'search: "{query}"')
    for column in ("image", "image id", "score", "caption"):
        table.add_column(column)
    for hit in hits:
        table.add_row(names.get(hit.image_id, "?"), hit.image_id, f"{hit.score:.2f}", hit.caption)
    console.print(table)
