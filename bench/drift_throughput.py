"""Embeddings a second the drift processor sustains on one core: alone, and on the broker.

Run: ``.venv/bin/python bench/drift_throughput.py [--events 48000] [--encoding float32]``
(``list``: the JSON list of the schema's first revision). Both measurements
use the same pre-encoded messages, carrying real MobileNetV2 embeddings of crops of the
sample photographs, and the default drift settings (KL detector, windows of 500, a
reference of 1000). "Alone" decodes each message and feeds the monitor in this process,
pinned to CPU 0. "On the broker" starts ``deeptrust stage run drift`` pinned to CPU 0
against a local broker that already holds every message, and times it from its first
consumed batch to the last message consumed (joining the group and restoring the drift
state are paid once per start, not per message); their ratio is the service's
efficiency. The result is written
to ``bench/results/drift_throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import numpy as np
from confluent_kafka import Producer
from PIL import Image
from publish import cpu_model, publish

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.drift.monitor import DriftMonitor, Embedded
from deeptrust.drift.reference import ReferenceStore
from deeptrust.drift.settings import DriftSettings
from deeptrust.drift.shifts import random_crops
from deeptrust.processors.models import load_model
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import EmbeddingEvent
from deeptrust.schemas.vectors import Encoding
from deeptrust.streams.codec import Encoded, decode, encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames, create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "drift_throughput.md"
TARGET = 300.0
ENCODINGS = {"float32": "packed float32", "float16": "packed float16", "list": "a JSON list"}


def messages(count: int, distinct: int, encoding: Encoding) -> list[tuple[Encoded, float]]:
    """``count`` encoded embedding events (``distinct`` real embeddings, cycled)."""
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples/images").iterdir())]
    embedder = load_model(ProcessorSettings().model_spec("embed"))
    vectors = embedder.predict(random_crops(photos, distinct, np.random.default_rng(0)))
    start = time.time() - count / TARGET
    encoded = []
    for index in range(count):
        at = start + index / TARGET
        event = EmbeddingEvent.packing(
            vectors[index % distinct],
            encoding,
            event_id=f"e{index}",
            image_id=f"img-{index}",
            uploaded_at=datetime.fromtimestamp(at, UTC),
            model=embedder.spec.label,
            model_version=embedder.spec.version,
        )
        encoded.append((encode(event, event.image_id), at))
    return encoded


def alone(encoded: list[tuple[Encoded, float]], reference_dir: Path) -> float:
    """Events a second through decode and the monitor, in this process on CPU 0."""
    os.sched_setaffinity(0, {0})
    monitor = DriftMonitor(
        DriftSettings(reference_dir=reference_dir), ReferenceStore(reference_dir)
    )
    started = time.perf_counter()
    for offset, (message, at) in enumerate(encoded):
        event = decode(message.value, message.headers, EmbeddingEvent)
        monitor.add(Embedded(event, at, 0, offset))
    return len(encoded) / (time.perf_counter() - started)


def on_broker(encoded: list[tuple[Encoded, float]], home: Path) -> float:
    """Events a second consumed by the drift process on CPU 0, from a full topic."""
    os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)) or {0})
    broker = LocalBroker(home / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout_s=180)
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.")
        create_topics(kafka, partitions=6)
        producer = Producer(kafka.client_config())
        topic = TopicNames(kafka.topic_prefix)(Topic.EMBEDDINGS)
        for message, at in encoded:
            producer.produce(
                topic,
                key=message.key,
                value=message.value,
                headers=message.headers,
                timestamp=int(at * 1000),
            )
            producer.poll(0)
        assert producer.flush(60) == 0, "every message delivered"
        drift = StageProcess(
            "drift",
            {
                "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "DEEPTRUST_DRIFT_REFERENCE_DIR": str(home / "references"),
                "DEEPTRUST_RUNNER_MAX_BATCH": "500",
            },
            free_port(),
            home / "drift.log",
            cpus=frozenset({0}),
        )
        drift.start()
        try:
            drift.wait_ready(120)
            first = consumed(drift, 1)
            started = time.perf_counter()
            consumed(drift, len(encoded))
            return (len(encoded) - first) / (time.perf_counter() - started)
        finally:
            drift.terminate()
    finally:
        broker.stop()


def consumed(drift: StageProcess, count: int) -> int:
    """Wait until the drift process consumed ``count`` messages; return how many it has."""
    while (done := int(drift.metric("deeptrust_consumed_total"))) < count:
        if drift.returncode is not None:
            raise RuntimeError(drift.log_tail())
        time.sleep(0.1)  # each scrape costs the measured process a little: not too often
    return done


def main() -> None:
    """Measure both rates side by side and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=48_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--encoding", choices=get_args(Encoding), default="float32")
    args = parser.parse_args()
    encoded = messages(args.events, args.distinct, args.encoding)
    with tempfile.TemporaryDirectory() as temporary:
        home = Path(temporary)
        # The machine is shared: measure "alone" before and after the broker run and keep
        # the best of each, so a burst of someone else's load does not decide the ratio.
        before = alone(encoded, home / "alone-before")
        rate_broker = on_broker(encoded, home)
        rate_alone = max(before, alone(encoded, home / "alone-after"))
    rows = [
        ("decode + monitor, in process", rate_alone),
        ("`deeptrust stage run drift` on the broker", rate_broker),
    ]
    lines = [
        "# Drift processor throughput on one core",
        "",
        f"`.venv/bin/python bench/drift_throughput.py --events {args.events} "
        f"--encoding {args.encoding}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores of {cpu_model()}), "
        f"{datetime.now(UTC):%Y-%m-%d}. {args.events} MobileNetV2 embeddings (1280-d, "
        f"{ENCODINGS[args.encoding]}, {len(encoded[0][0].value):,} bytes each), "
        "default drift settings (KL, windows of 500, reference of 1000), "
        "the measured process pinned to CPU 0 (the broker and this script on the other); "
        "the broker run is timed from the drift process's first consumed batch, and the "
        "in-process rate is the better of a run before and one after it.",
        "",
        "| path | embeddings/s | multiple of the 300/s Flickr rate |",
        "|---|---:|---:|",
        *(f"| {name} | {rate:,.0f} | {rate / TARGET:.1f} |" for name, rate in rows),
        "",
        f"Efficiency (broker / alone): {rate_broker / rate_alone:.2f}",
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
