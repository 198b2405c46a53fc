"""Torture run: uploads through detect → caption → tag, stages killed, the broker restarted.

Run: ``.venv/bin/python bench/torture.py [--uploads 10000 --kills 20 --broker-restarts 3]``;
writes ``bench/results/torture.md``. On a broker of its own, the harness starts detect,
caption and tag (the default offline models), uploads ``--uploads`` photos at ``--rate`` a
second, and meanwhile SIGKILLs a random stage ``--kills`` times (restarting it at once, as a
supervisor would) and stops the broker ``--broker-restarts`` times for ``--outage`` seconds.
When the uploads are in and the stages idle, it reads ``enriched.v1`` and ``dlq.v1``
committed and counts by image id: lost (no enriched event and no dead letter), duplicated
(more than one enriched event) and dead-lettered. Every count but the last must be 0.
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image
from publish import publish

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import DeadLetterEvent, EnrichedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.producer import UploadProducer, paced
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames, create_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "torture.md"
STAGES = ("detect", "caption", "tag")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="uploads a second")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-restarts", type=int, default=3)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the broker is down")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="torture-") as scratch:
        result = torture(Path(scratch), args)
    lines = [
        "# Torture run: kills and broker restarts mid-stream",
        "",
        f"`.venv/bin/python bench/torture.py --uploads {args.uploads} --rate {args.rate:g} "
        f"--kills {args.kills} --broker-restarts {args.broker_restarts} --outage "
        f"{args.outage:g}` on {platform.node()} ({platform.machine()}), "
        f"{datetime.now(UTC):%Y-%m-%d}. Stages: {', '.join(STAGES)} (default offline models), "
        "3 partitions, one broker.",
        "",
        "| uploads | SIGKILLs | broker restarts | enriched | lost | duplicated | "
        "dead-lettered | wall time (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| {uploads} | {kills} | {restarts} | {enriched} | {lost} | {duplicated} | "
        "{dead} | {wall:.0f} |".format(**result),
    ]
    publish(RESULTS, lines)
    if result["lost"] or result["duplicated"]:
        raise SystemExit("events were lost or duplicated")


def torture(scratch: Path, args: argparse.Namespace) -> dict[str, float]:
    broker = LocalBroker(scratch / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout_s=180)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="torture.")
    create_topics(kafka, partitions=3)
    store = LocalObjectStore.at(scratch / "objects")
    env = {
        "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
        "DEEPTRUST_RUNNER_KAFKA_TIMEOUT_S": "10",
        # One replica per stage, restarted under its id as a StatefulSet pod is: the restart
        # fences what the killed process left open instead of waiting out its timeout.
        "DEEPTRUST_RUNNER_INSTANCE_ID": "0",
    }
    stages = {
        name: StageProcess(name, env, free_port(), scratch / "logs" / f"{name}.log")
        for name in STAGES
    }
    started = time.monotonic()
    try:
        for stage in stages.values():
            stage.start()
        for stage in stages.values():
            stage.wait_ready(180)
        uploaded = _upload_with_faults(kafka, store, broker, stages, args)
        enriched, dead = _drain(kafka, uploaded)
    finally:
        for stage in stages.values():
            stage.terminate()
        broker.stop()
    counts = Counter(enriched)
    return {
        "uploads": len(uploaded),
        "kills": args.kills,
        "restarts": args.broker_restarts,
        "enriched": len(counts),
        "lost": len(uploaded - set(counts) - dead),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "dead": len(dead),
        "wall": time.monotonic() - started,
    }


def _upload_with_faults(
    kafka: KafkaSettings,
    store: LocalObjectStore,
    broker: LocalBroker,
    stages: dict[str, StageProcess],
    args: argparse.Namespace,
) -> set[str]:
    """Upload everything at the rate while a second thread kills stages and the broker."""
    photos = _photos()
    done = threading.Event()
    duration = args.uploads / args.rate
    faults = threading.Thread(
        target=_inflict, args=(broker, stages, args, duration, done), daemon=True
    )
    faults.start()
    producer = UploadProducer(kafka, store, source="torture")
    ids = set()
    for index in paced(range(args.uploads), args.rate):
        event = producer.upload(photos[index % len(photos)], f"{index}.jpg", f"img-{index}")
        ids.add(event.image_id)
    producer.flush(timeout_s=600)
    done.set()
    faults.join()
    return ids


def _photos(size: int = 96) -> list[bytes]:
    """The sample photographs, downscaled so thousands go through quickly."""
    photos = []
    for path in sorted((ROOT / "samples" / "images").iterdir()):
        image = Image.open(path).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos


def _inflict(
    broker: LocalBroker,
    stages: dict[str, StageProcess],
    args: argparse.Namespace,
    duration: float,
    done: threading.Event,
) -> None:
    """Spread the kills and the broker outages over the upload's duration, in random order."""
    faults = ["kill"] * args.kills + ["broker"] * args.broker_restarts
    random.shuffle(faults)
    gap = duration / (len(faults) + 1)
    for fault in faults:
        if done.wait(gap * random.uniform(0.5, 1.5)):
            break
        if fault == "kill":
            stage = stages[random.choice(STAGES)]
            stage.kill()
            print(f"killed {stage.name}", flush=True)
            stage.start()
        else:
            broker.stop()
            print("broker down", flush=True)
            done.wait(args.outage)
            broker.start(timeout_s=180)
            print("broker up", flush=True)


def _drain(kafka: KafkaSettings, uploaded: set[str]) -> tuple[list[str], set[str]]:
    """Wait until every upload is enriched or dead-lettered (or 10 minutes of no progress)."""
    topics = TopicNames(kafka.topic_prefix)
    last_progress, seen = time.monotonic(), -1
    while True:
        enriched = [
            r.event.image_id for r in read_to_end(kafka, topics(Topic.ENRICHED), EnrichedEvent, 120)
        ]
        dead = {
            r.event.original_key or ""
            for r in read_to_end(kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, 120)
        }
        accounted = len(uploaded & (set(enriched) | dead))
        if accounted == len(uploaded):
            return enriched, dead
        if accounted != seen:
            seen, last_progress = accounted, time.monotonic()
            print(f"{accounted}/{len(uploaded)} accounted for", flush=True)
        elif time.monotonic() - last_progress > 600:
            return enriched, dead
        time.sleep(5)


if __name__ == "__main__":
    main()
