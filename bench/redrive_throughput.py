"""Dead letters a second ``deeptrust dlq`` lists and redrives, on a local broker.

Run: ``.venv/bin/python bench/redrive_throughput.py [--letters 20000]``. The broker first
holds ``--letters`` dead letters of detect (real upload events, as the stage writes them,
over 6 partitions). Timed, in this process, with the functions the commands call: reading
and selecting them all (``list``), a dry run (reads the redrive marks too), the redrive
(``--letters`` / 500 transactions of messages and marks; the transaction coordinator is
warmed first, as a cluster in service has it), and a second redrive that finds every
letter marked. The result is checked, not assumed: the uploads topic then holds each
letter's message once, with its original event id, and the marks topic one record each.
Written to ``bench/results/redrive_throughput.md``.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Producer
from publish import publish

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.schemas.events import DeadLetterEvent, DeadLetterRedrive, UploadEvent
from deeptrust.streams.codec import encode, headers_dict
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import REASON_HEADER, STAGE_HEADER
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.redrive import REDRIVE_HEADER, LetterFilter, Verdict, select
from deeptrust.streams.redrive_kafka import RedriveSettings, read_letters, redrive, redrive_producer
from deeptrust.streams.topics import Topic, TopicNames, create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "redrive_throughput.md"
PARTITIONS = 6
T = TypeVar("T")


def fill(kafka: KafkaSettings, count: int) -> set[str]:
    """Write ``count`` dead letters of detect; return their original event ids."""
    names = TopicNames(kafka.topic_prefix)
    producer = Producer(kafka.client_config())
    event_ids = set()
    for index in range(count):
        upload = UploadEvent(
            event_id=str(uuid.uuid4()),
            image_id=f"img-{index}",
            uri=f"file:///objects/images/{index}.jpg",
            content_type="image/jpeg",
            size_bytes=1000,
            sha256="0" * 64,
            uploaded_at=datetime.now(UTC),
        )
        original = encode(upload, upload.image_id)
        letter = DeadLetterEvent(
            stage="detect",
            reason="missing_object",
            detail=f"no object at {upload.uri}",
            source_topic=names(Topic.UPLOADS),
            source_partition=index % PARTITIONS,
            source_offset=index // PARTITIONS,
            original_key=upload.image_id,
            original_value_b64=base64.b64encode(original.value).decode(),
            original_headers=headers_dict(original.headers),
            failed_at=datetime.now(UTC),
        )
        encoded = encode(letter, upload.image_id)
        extra = [(REASON_HEADER, b"missing_object"), (STAGE_HEADER, b"detect")]
        producer.produce(
            names(Topic.DEAD_LETTERS),
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers + extra,
        )
        producer.poll(0)
        event_ids.add(upload.event_id)
    assert producer.flush(60) == 0, "every dead letter delivered"
    return event_ids


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def measure(count: int, home: Path) -> list[tuple[str, float]]:
    """Seconds per step, after checking what each step did."""
    broker = LocalBroker(home / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout_s=180)
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.")
        create_topics(kafka, partitions=PARTITIONS)
        names = TopicNames(kafka.topic_prefix)
        event_ids = fill(kafka, count)
        settings = RedriveSettings()
        # A cluster in service has its transaction coordinator loaded; a fresh broker has not.
        redrive_producer(kafka, settings)
        wanted = LetterFilter(stages=frozenset({"detect"}))
        letters, listed = timed(lambda: select(read_letters(kafka, wanted, 120), wanted))
        assert len(letters) == count
        dry, dried = timed(lambda: redrive(kafka, letters, settings, dry_run=True))
        assert [d.verdict for d in dry] == [Verdict.REDRIVE] * count
        done, redriven = timed(lambda: redrive(kafka, letters, settings))
        assert [d.verdict for d in done] == [Verdict.REDRIVE] * count
        again, skipped = timed(lambda: redrive(kafka, letters, settings))
        assert [d.verdict for d in again] == [Verdict.ALREADY_REDRIVEN] * count
        back = read_to_end(kafka, names(Topic.UPLOADS), UploadEvent, 120)
        assert sorted(u.event.event_id for u in back) == sorted(event_ids), "each once"
        assert {u.headers[REDRIVE_HEADER] for u in back} == {letter.id for letter in letters}
        marks = read_to_end(kafka, names(Topic.REDRIVEN), DeadLetterRedrive, 120)
        assert len(marks) == count
        return [
            ("read and select (`list`)", listed),
            ("dry run (reads the marks)", dried),
            ("redrive", redriven),
            ("second redrive (all skipped)", skipped),
        ]
    finally:
        broker.stop()


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--letters", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        steps = measure(args.letters, Path(home))
    load = os.getloadavg()[0]
    lines = [
        "# Dead-letter redrive throughput",
        "",
        f"`.venv/bin/python bench/redrive_throughput.py --letters {args.letters}` on "
        f"{platform.node()} ({os.cpu_count()} cores, load average {load:.1f} at the end), "
        f"{datetime.now(UTC):%Y-%m-%d}. {args.letters} detect dead letters over "
        f"{PARTITIONS} partitions of a local broker; each step in this process, checked "
        "(every letter back once with its event id, one mark each, the second redrive "
        "skipping all).",
        "",
        "| step | seconds | letters/s |",
        "|---|---:|---:|",
        *(f"| {name} | {seconds:.2f} | {args.letters / seconds:,.0f} |" for name, seconds in steps),
        "",
    ]
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
